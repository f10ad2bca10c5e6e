"""Checks for notebook 06 (attention): repeat_kv, rotary embeddings, masked scaled dot-product attention.

    check_repeat_kv(fn)   fn(x (B, Hkv, S, D), n_rep) -> (B, Hkv * n_rep, S, D)
    check_rotary(fn)      fn(x (T, D), positions (T,) long, base) -> x rotated, (T, D)
    check_attention(fn)   fn(q (B, H, T, D), k (B, H, S, D), v (B, H, S, D), mask (B, 1, T, S) or None)
                            -> (B, H, T, D)

Each check compares the learner's function with the package's on several cases
and, when they differ, names the likely mistake.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import ExerciseResult, close, run_cases
from ..modeling.attention import repeat_kv as _repeat_kv
from ..modeling.rotary import MixtralRotaryEmbedding, apply_rotary_pos_emb


# -- 1. repeat_kv ---------------------------------------------------------------------------------------

def _kv_cases():
    g = torch.Generator().manual_seed(13)
    return [("B=1, Hkv=2, S=3, D=4, n_rep=2", (torch.randn(1, 2, 3, 4, generator=g), 2), {}),
            ("B=2, Hkv=2, S=5, D=4, n_rep=4 (Mixtral 8x7B's G)", (torch.randn(2, 2, 5, 4, generator=g), 4), {}),
            ("B=1, Hkv=3, S=2, D=2, n_rep=1 (plain multi-head)", (torch.randn(1, 3, 2, 2, generator=g), 1), {}),
            ("B=1, Hkv=1, S=4, D=3, n_rep=3 (multi-query)", (torch.randn(1, 1, 4, 3, generator=g), 3), {})]


def _diagnose_kv(got, want, x, n_rep) -> str:
    if not isinstance(got, torch.Tensor):
        return "return a tensor (B, Hkv * n_rep, S, D)."
    b, hkv, s, d = x.shape
    if got.shape != want.shape:
        return f"the output is (B, Hkv * n_rep, S, D) = {tuple(want.shape)}: copies go on the head axis (dim 1)."
    if torch.equal(got, x.repeat(1, n_rep, 1, 1)):
        return ("the copies of one kv head must sit next to each other: query head h reads kv head h // G, so "
                "the order is [kv0, kv0, ..., kv1, kv1, ...], not [kv0, kv1, kv0, kv1, ...] (that is .repeat).")
    return "x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D) (or repeat_interleave on dim 1)."


def check_repeat_kv(fn: Callable) -> ExerciseResult:
    """fn(x (B, Hkv, S, D), n_rep) -> (B, Hkv * n_rep, S, D), query head h reading kv head h // n_rep."""
    return run_cases(fn, _repeat_kv, _kv_cases(), _diagnose_kv, "repeat_kv", atol=0.0)


# -- 2. rotary embedding of one sequence of vectors ------------------------------------------------------

def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x (T, D) rotated to `positions` (T,), through the package's rotary tables and apply_rotary_pos_emb."""
    d = x.shape[-1]
    rope = MixtralRotaryEmbedding(d, base=base)
    cos, sin = rope(x, seq_len=int(positions.max()) + 1)
    pos = positions[None]                                     # (1, T)
    out, _ = apply_rotary_pos_emb(x[None, None], x[None, None], cos, sin, pos)
    return out[0, 0]


def _rot_cases():
    g = torch.Generator().manual_seed(17)
    return [("D=4, positions 0..3", (torch.randn(4, 4, generator=g), torch.arange(4)), {}),
            ("D=8, positions 5, 0, 17", (torch.randn(3, 8, generator=g), torch.tensor([5, 0, 17])), {}),
            ("D=16, base 1e6 (Mixtral's rope_theta)", (torch.randn(2, 16, generator=g), torch.tensor([3, 40])),
             {"base": 1e6})]


def _diagnose_rot(got, want, x, positions, base=10000.0) -> str:
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return "return x's shape (T, D): a rotation changes directions, not sizes."
    d = x.shape[-1]
    if not close(got.norm(dim=-1), x.norm(dim=-1), 1e-4):
        return "a rotation keeps every vector's length: use cos and sin of the same angle on each pair."
    if positions.eq(0).any() and not close(got[positions == 0], x[positions == 0]):
        return "position 0 is angle 0: those rows must come back unchanged."
    half = d // 2
    inv = 1.0 / (base ** (torch.arange(0, d, 2).float() / d))
    ang = positions.float()[:, None] * inv[None]                     # (T, D/2)
    # interleaved pairs (2i, 2i + 1): GPT-J / Meta's original layout
    x1, x2 = x[:, 0::2], x[:, 1::2]
    inter = torch.stack((x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()), dim=-1).reshape(x.shape)
    if close(got, inter):
        return ("transformers pairs dim i with dim i + D/2 (the 'rotate_half' layout: two halves), not "
                "neighbours (2i, 2i + 1).")
    a, b = x[:, :half], x[:, half:]
    backwards = torch.cat((a * ang.cos() + b * ang.sin(), b * ang.cos() - a * ang.sin()), dim=-1)
    if close(got, backwards):
        return "the rotation goes the other way: rotate_half(x) = cat(-x2, x1), so out = x * cos + rotate_half(x) * sin."
    inv_wrong = 1.0 / (base ** (torch.arange(0, half).float() / d))
    ang2 = positions.float()[:, None] * inv_wrong[None]
    wrong_freq = torch.cat((a * ang2.cos() - b * ang2.sin(), b * ang2.cos() + a * ang2.sin()), dim=-1)
    if close(got, wrong_freq):
        return "the frequency of pair i is base ** (-2i / D) (arange(0, D, 2) / D), not base ** (-i / D)."
    return ("angle[t, i] = positions[t] * base ** (-2i / D) for i < D/2; cos and sin repeated for both halves "
            "(cat(freqs, freqs)); out = x * cos + rotate_half(x) * sin.")


def check_rotary(fn: Callable) -> ExerciseResult:
    """fn(x (T, D), positions (T,), base=10000.0) -> x rotated, as apply_rotary_pos_emb rotates q and k."""
    return run_cases(fn, rotate, _rot_cases(), _diagnose_rot, "rotary embedding", atol=1e-5)


# -- 3. scaled dot-product attention with an additive mask ----------------------------------------------

def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The eager path of MixtralAttention, from q, k, v (k, v already repeated to H heads)."""
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])        # (B, H, T, S)
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, v)                                            # (B, H, T, D)


def _causal(b, t, s, past=0, pad=None):
    q = torch.arange(t)[:, None] + past
    k = torch.arange(s)[None, :]
    visible = (k <= q)[None, None].expand(b, 1, t, s).clone()
    if pad is not None:
        visible &= (pad == 1)[:, None, None, :]
    return torch.zeros(b, 1, t, s).masked_fill(~visible, torch.finfo(torch.float32).min)


def _attn_cases():
    g = torch.Generator().manual_seed(19)
    r = lambda *shape: torch.randn(*shape, generator=g) * 1.5  # noqa: E731
    pad = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    return [("no mask, B=1, H=2, T=S=3, D=4", (r(1, 2, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 4), None), {}),
            ("causal mask, B=1, H=2, T=S=4, D=8", (r(1, 2, 4, 8), r(1, 2, 4, 8), r(1, 2, 4, 8), _causal(1, 4, 4)), {}),
            ("decode: T=1 query, S=5 keys, left padding", (r(2, 2, 1, 4), r(2, 2, 5, 4), r(2, 2, 5, 4),
                                                           _causal(2, 1, 5, past=4, pad=pad)), {}),
            ("causal + padding, B=2, T=S=5", (r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 4), _causal(2, 5, 5, pad=pad)),
             {})]


def _diagnose_attn(got, want, q, k, v, mask=None) -> str:
    if not isinstance(got, torch.Tensor):
        return "return a tensor (B, H, T, D): the weighted sum of the values."
    if got.shape != want.shape:
        return f"the output is (B, H, T, D) = {tuple(want.shape)}: weights (B, H, T, S) @ v (B, H, S, D)."
    d = q.shape[-1]
    raw = torch.matmul(q, k.transpose(2, 3))
    m = 0 if mask is None else mask
    options = {
        "no scale": (raw + m).softmax(-1) @ v,
        "scale by D": (raw / d + m).softmax(-1) @ v,
        "mask ignored": (raw / math.sqrt(d)).softmax(-1) @ v,
        "softmax over queries": (raw / math.sqrt(d) + m).softmax(-2) @ v,
    }
    if mask is not None:
        options["mask multiplied"] = ((raw / math.sqrt(d)) * (mask == 0)).softmax(-1) @ v
    hints = {"no scale": "divide the scores by sqrt(D) before the softmax (D = head dim).",
             "scale by D": "divide by sqrt(D), not by D.",
             "mask ignored": "add the mask to the scores before the softmax.",
             "softmax over queries": "softmax over the KEYS (the last dim, S): each query's weights sum to 1.",
             "mask multiplied": ("the mask is ADDITIVE: 0 for visible keys and a huge negative number for hidden "
                                 "ones, so add it (scores + mask); exp of it is then 0.")}
    for name, value in options.items():
        if close(got, value, 1e-4):
            return hints[name]
    return "softmax(q @ k.transpose(-2, -1) / sqrt(D) + mask, dim=-1) @ v, with the softmax in float32."


def check_attention(fn: Callable) -> ExerciseResult:
    """fn(q, k, v, mask or None) -> softmax(q k^T / sqrt(D) + mask) v, (B, H, T, D)."""
    return run_cases(fn, reference_attention, _attn_cases(), _diagnose_attn, "attention", atol=1e-5)
