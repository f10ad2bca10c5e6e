"""Published Mixtral configurations, plus a tiny one that runs in seconds on a laptop.

Each preset is a function returning a *fresh* MixtralConfig, so a caller may
change fields without touching anybody else's copy.

    >>> from mixtral_edu.full_size.presets import get_preset
    >>> get_preset("mixtral-8x7b").num_local_experts
    8
"""
from __future__ import annotations

import os
from typing import Callable, Dict

from ..modeling.config import MixtralConfig

# Where the trained tiny model's config will live once it ships with the package.
TINY_CONFIG_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tiny", "model", "config.json")


def mixtral_8x7b() -> MixtralConfig:
    """Mixtral-8x7B-v0.1 (paper arXiv 2401.04088, Table 1): 46.70B total, 12.88B active parameters."""
    return MixtralConfig(
        vocab_size=32000,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,          # head_dim = 4096 / 32 = 128
        num_key_value_heads=8,           # GQA: 4 query heads share each kv head
        num_local_experts=8,
        num_experts_per_tok=2,
        # The paper trains and evaluates with a 32k-token context (its Table 1 says
        # "context_len 32768"); the hub config.json states the same limit here.
        max_position_embeddings=32768,
        rope_theta=1e6,
        # No sliding window: full attention over the 32k context, which is also
        # transformers 4.41's MixtralConfig default (sliding_window=None).
        sliding_window=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def mixtral_8x22b() -> MixtralConfig:
    """Mixtral-8x22B-v0.1: 140.6B total, 39.15B active parameters (with vocab 32000)."""
    return MixtralConfig(
        # 32000 is the vocabulary the published 141B / 39B figures correspond to:
        # it gives 140.62B total and 39.15B active. A 32768-token vocabulary (32000
        # + 768 extra control tokens, as in Mistral's later "v3" tokenizer) would
        # give 140.63B and 39.16B instead, i.e. not the 39.15B we reproduce here.
        vocab_size=32000,
        hidden_size=6144,
        intermediate_size=16384,
        num_hidden_layers=56,
        num_attention_heads=48,          # head_dim = 6144 / 48 = 128
        num_key_value_heads=8,           # GQA: 6 query heads share each kv head
        num_local_experts=8,
        num_experts_per_tok=2,
        max_position_embeddings=65536,   # 64k-token context
        rope_theta=1e6,
        sliding_window=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def tiny() -> MixtralConfig:
    """A small Mixtral for tests and notebooks (the default has 0.90M parameters).

    If the trained tiny model ships with the package (`mixtral_edu/tiny/model/config.json`),
    its config is returned, so that a model built from this preset can load those
    weights. Otherwise a small default with the same structure as the real thing:
    GQA, 8 experts, top-2 and a sliding window short enough to matter.
    """
    if os.path.isfile(TINY_CONFIG_PATH):
        return MixtralConfig.from_json_file(TINY_CONFIG_PATH)
    return MixtralConfig(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,           # head_dim 16
        num_key_value_heads=2,
        num_local_experts=8,
        num_experts_per_tok=2,
        sliding_window=32,
        max_position_embeddings=128,
        rope_theta=1e6,
        rms_norm_eps=1e-5,
    )


PRESETS: Dict[str, Callable[[], MixtralConfig]] = {
    "mixtral-8x7b": mixtral_8x7b,
    "mixtral-8x22b": mixtral_8x22b,
    "tiny": tiny,
}


def get_preset(name: str) -> MixtralConfig:
    """A fresh MixtralConfig for a preset name ("mixtral-8x7b", "mixtral-8x22b", "tiny").

    Case and "_" versus "-" do not matter: "Mixtral_8x7B" works too.
    """
    if not isinstance(name, str):
        raise TypeError(f"get_preset() takes a preset name (str), got {name!r}. "
                        f"Valid names: {', '.join(sorted(PRESETS))}.")
    key = name.strip().lower().replace("_", "-")
    if key not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}. Valid names: {', '.join(sorted(PRESETS))}.")
    return PRESETS[key]()
