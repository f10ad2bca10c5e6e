"""Checks for notebook 04 (`MixtralModel.forward`): the 4D attention mask and the default position ids.

    check_build_4d_mask(fn)         fn(attention_mask (B, S), q_len, past_len, sliding_window, dtype)
                                      -> (B, 1, T, S) additive mask
    check_default_position_ids(fn)  fn(past_length, seq_length) -> (1, T) long

Each check compares the learner's function with the package's on several cases
and, when they differ, names the likely mistake.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from . import ExerciseResult, run_cases
from ..modeling.masks import prepare_4d_causal_attention_mask


# -- 1. the 4D additive mask ---------------------------------------------------------------------

def build_4d_mask(attention_mask: torch.Tensor, q_len: int, past_len: int = 0,
                  sliding_window: Optional[int] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The package's eager mask, `masks.prepare_4d_causal_attention_mask`, for a given 2D mask."""
    batch = attention_mask.shape[0]
    dummy = torch.empty(batch, q_len, 1, dtype=dtype)  # only its dtype and device are read
    return prepare_4d_causal_attention_mask(attention_mask, (batch, q_len), dummy, past_len,
                                            sliding_window=sliding_window)


def _mask_cases():
    ones = lambda b, s: torch.ones(b, s, dtype=torch.long)  # noqa: E731
    left = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    return [
        ("no padding, T=S=5", (ones(1, 5), 5), {}),
        ("left padding, B=2, T=S=6", (left, 6), {}),
        ("decode: P=5 cached, T=1 new, left padding", (left, 1, 5), {}),
        ("chunk: P=3 cached, T=3 new", (left, 3, 3), {}),
        ("sliding window W=2, T=S=6", (ones(1, 6), 6, 0, 2), {}),
        ("sliding window W=3 with P=4, T=3, padding", (torch.tensor([[0, 1, 1, 1, 1, 1, 1]]), 3, 4, 3), {}),
        ("bfloat16 mask", (left, 6), {"dtype": torch.bfloat16}),
    ]


def _diagnose_mask(got, want, attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32) -> str:
    if not isinstance(got, torch.Tensor):
        return "return a tensor of shape (B, 1, T, S)."
    b, s = attention_mask.shape
    if got.shape != want.shape:
        if got.dim() == 3:
            return f"add the head axis of size 1: (B, 1, T, S) = {tuple(want.shape)} (e.g. mask[:, None])."
        return f"the mask is (B, 1, T, S) with T = q_len = {q_len} queries and S = P + T = {s} keys."
    if got.dtype != want.dtype:
        return f"build the mask in the model's dtype ({dtype}): it is added to scores of that dtype."
    if torch.isinf(got.float()).any():
        return ("use torch.finfo(dtype).min for hidden cells, not -inf: a row with every key hidden "
                "(a pad query) would give a softmax of NaN with -inf.")
    hidden_got, hidden_want = got != 0, want != 0
    if torch.equal(hidden_got, ~hidden_want):
        return "0 marks a visible key and finfo(dtype).min a hidden one, not the other way round."
    if got.float().max() > 0:
        return "an additive mask holds 0 (visible) and finfo(dtype).min (hidden): no positive values."
    if torch.equal(hidden_got, hidden_want):
        return f"hidden cells must hold exactly torch.finfo({dtype}).min = {torch.finfo(dtype).min:.4g}."
    visible_got = ~hidden_got
    for name, variant in _mask_variants(attention_mask, q_len, past_len, sliding_window).items():
        if torch.equal(visible_got, variant):
            return _MASK_HINTS[name]
    return "combine: hidden if j > i (future), or j < i - W (window), or attention_mask[b, j] == 0 (padding)."


_MASK_HINTS = {
    "triangle ignores the past": (
        "query i sits at absolute position P + i: it may see keys 0 .. P + i, including all P cached ones. "
        "Shift the causal triangle by the past length."),
    "window keeps W keys": (
        "transformers 4.41.2 keeps W + 1 keys visible (the query itself plus W before it): hide key j only "
        "when j < i - W. (Keeping W keys is transformers 5.x's rule.)"),
    "no window": "with a sliding window W, query i (absolute) also hides keys j < i - W.",
    "padding on queries": (
        "padding hides KEYS: column j is hidden in every row when attention_mask[b, j] == 0 "
        "(broadcast the 2D mask as attention_mask[:, None, None, :]), not rows."),
    "no padding": "hide the pad tokens too: every key j with attention_mask[b, j] == 0.",
    "no causal": "hide the future: query i must not see keys j > i (absolute positions).",
}


def _mask_variants(attention_mask, q_len, past_len, sliding_window) -> dict:
    """(B, 1, T, S) bool 'visible' tensors for the usual mistakes."""
    b, s = attention_mask.shape
    q = torch.arange(q_len)[:, None] + past_len      # absolute query positions
    k = torch.arange(s)[None, :]
    keys_real = (attention_mask == 1)[:, None, None, :]
    queries_real = (attention_mask[:, -q_len:] == 1)[:, None, :, None]

    def full(causal, window, pad):
        v = causal.clone()
        if window is not None:
            v = v & window
        return v[None, None] & pad

    causal = k <= q
    win = None if sliding_window is None else k >= q - sliding_window
    out = {
        "triangle ignores the past": full(k <= q - past_len, None if win is None else k >= q - past_len - sliding_window,
                                          keys_real),
        "no padding": full(causal, win, torch.ones_like(keys_real)),
        "padding on queries": full(causal, win, queries_real.expand(b, 1, q_len, s)),
        "no causal": full(torch.ones_like(causal), win, keys_real),
    }
    if sliding_window is not None:
        out["window keeps W keys"] = full(causal, k > q - sliding_window, keys_real)
        out["no window"] = full(causal, None, keys_real)
    return {n: v.expand(b, 1, q_len, s) for n, v in out.items()}


def check_build_4d_mask(fn: Callable) -> ExerciseResult:
    """fn(attention_mask (B, S), q_len, past_len=0, sliding_window=None, dtype=float32) -> (B, 1, T, S)."""
    return run_cases(fn, build_4d_mask, _mask_cases(), _diagnose_mask, "4D mask", atol=0.0)  # masks are exact


# -- 2. default position ids ----------------------------------------------------------------------

def default_position_ids(past_length: int, seq_length: int) -> torch.Tensor:
    """What MixtralModel.forward builds when position_ids is None: arange(P, P + T) as (1, T).

    (The model does it inline; the tests check this equals the position ids a real call used.)
    """
    return torch.arange(past_length, past_length + seq_length, dtype=torch.long).unsqueeze(0)


def _pos_cases():
    return [("prefill P=0, T=7", (0, 7), {}), ("decode P=7, T=1", (7, 1), {}),
            ("chunk P=4, T=3", (4, 3), {}), ("P=0, T=1", (0, 1), {})]


def _diagnose_pos(got, want, past_length, seq_length) -> str:
    if not isinstance(got, torch.Tensor):
        return "return a tensor (torch.arange)."
    if got.dim() == 1:
        return "the shape is (1, T): one row, shared by every sequence in the batch (unsqueeze(0))."
    if got.shape != want.shape:
        return f"the shape is (1, T) = {tuple(want.shape)}."
    if got.is_floating_point():
        return "position ids index the rotary tables: use dtype=torch.long."
    if past_length and torch.equal(got, want - past_length):
        return "the new tokens come after the P cached ones: start at past_length, not 0."
    return "arange(past_length, past_length + seq_length), shape (1, T)."


def check_default_position_ids(fn: Callable) -> ExerciseResult:
    """fn(past_length, seq_length) -> (1, T) long tensor."""
    return run_cases(fn, default_position_ids, _pos_cases(), _diagnose_pos, "default position_ids", atol=0.0)
