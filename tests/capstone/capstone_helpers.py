"""What the capstone tests share: the reference pieces, random configurations, runs against transformers."""
from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Callable, Dict

import torch

from mixtral_edu.build import PIECES

ROOT = Path(__file__).resolve().parents[2]
SOLUTIONS = ROOT / "notebooks" / "solutions" / "12_build_it_yourself.py"


def solutions():
    spec = importlib.util.spec_from_file_location("capstone_solutions", SOLUTIONS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_pieces() -> Dict[str, Callable]:
    """Every piece, from the reference solutions."""
    module = solutions()
    return {name: getattr(module, name) for name in PIECES}


def random_config(seed: int, **fixed) -> dict:
    """Sizes drawn from a seeded generator; every draw keeps G = H / Hkv an integer > 1 or = 1 and D even."""
    rng = random.Random(seed)
    kv = rng.choice([1, 2, 3])
    heads = kv * rng.choice([1, 2, 3])
    head_dim = rng.choice([4, 8, 12])
    experts = rng.choice([3, 4, 6, 8])
    config = dict(hidden_size=heads * head_dim, intermediate_size=rng.choice([16, 40, 64]),
                  num_hidden_layers=rng.choice([1, 2, 3]), num_attention_heads=heads, num_key_value_heads=kv,
                  num_local_experts=experts, num_experts_per_tok=rng.randint(1, min(3, experts - 1)),
                  sliding_window=rng.choice([None, 4, 6]), rms_norm_eps=rng.choice([1e-5, 1e-6]),
                  rope_theta=rng.choice([1e4, 1e6]), attn_implementation=rng.choice(["eager", "sdpa"]))
    config.update(fixed)
    return config


def generate_both(ours, theirs, ids, mask, max_new_tokens: int = 8):
    with torch.no_grad():
        a = ours.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens)
        b = theirs.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False)
    return a, b
