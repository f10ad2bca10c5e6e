"""The tiny Mixtral trained by this project and shipped inside the package.

`load_tiny()` returns (model, tokenizer) from `mixtral_edu/tiny/model/`, a plain
Hugging Face model directory: transformers' AutoModelForCausalLM and
AutoTokenizer load the same files.
"""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch

TINY_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model")


def load_tiny(attn_implementation: Optional[str] = None, torch_dtype: Optional[torch.dtype] = None) -> Tuple:
    """(MixtralForCausalLM in eval mode, PreTrainedTokenizerFast with left padding)."""
    from ..modeling.causal_lm import MixtralForCausalLM
    from .tokenizer import load_tokenizer
    if not os.path.isfile(os.path.join(TINY_DIR, "config.json")):
        raise FileNotFoundError(
            f"The tiny model is missing from {TINY_DIR}. Reinstall the package, or retrain it with "
            "`python -m mixtral_edu.tiny.train --out mixtral_edu/tiny/model`.")
    overrides = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    model = MixtralForCausalLM.from_pretrained(TINY_DIR, torch_dtype=torch_dtype, **overrides)
    return model, load_tokenizer(TINY_DIR)
