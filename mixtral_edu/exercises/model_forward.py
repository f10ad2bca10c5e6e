"""Exercises of notebook 04 (`MixtralModel.forward`): the SDPA mask, the 4D mask, the output tuple.

    04.1 check_sdpa_predictions(fn)   fn() -> {case name: True if the SDPA builder makes a mask, False if None}
    04.2 check_build_4d_mask(fn)      fn(attention_mask (B, S), q_len, past_len, sliding_window, dtype)
                                        -> (B, 1, T, S) additive mask
    04.3 check_named_outputs(fn)      fn(outputs, use_cache, output_hidden_states, output_attentions,
                                         output_router_logits) -> {name: entry or None}

The references are the package's mask builders (`modeling.masks`, equal to transformers 4.41.2's,
tests/exercises prove it) and `MixtralModel.forward`'s own output tuple. Hints name the mistake.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from . import (ExerciseResult, NotYet, call, checker, difference, expect_same, filled_predictions,
               name_the_mistake, run_cases)
from ..i18n import N_, _
from ..modeling.masks import prepare_4d_causal_attention_mask, prepare_4d_causal_attention_mask_for_sdpa

# The user-facing sentences of this module, in one place: N_ marks them for the catalog, _() translates them
# where they are shown (ExerciseResult translates a message or hint given as one of these).
MSG = {
    "sdpa_passed": N_("all {n} predictions are right."),
    "sdpa_blank_hint": N_("replace every ... by True (the builder returns a mask) or False (it returns None)."),
    "sdpa_bool": N_("each prediction is True or False, got a {kind} for one case."),
    "sdpa_bool_hint": N_("True means 'a (B, 1, T, S) mask is built', False means 'the builder returns None'."),
    "sdpa_wrong": N_("{n} of the {total} predictions are off."),
    "sdpa_all_true": N_("you predicted a mask everywhere: for a plain prefill or a single new token with no padding, "
                        "SDPA's own is_causal flag (or no mask at all) gives the same answer, so no mask is built."),
    "sdpa_all_false": N_("you predicted None everywhere: the builder can skip the mask only when is_causal alone is "
                         "right; padding, for one, can only be expressed by a mask."),
    "sdpa_padding": N_("a pad anywhere in the 2D mask is hidden from every query, and is_causal cannot express "
                       "that: with padding a mask is always built."),
    "sdpa_chunk": N_("with a cache and more than one new token (T > 1, S > T), the query rows are not a square "
                     "triangle: is_causal would align it wrongly, so a mask is built."),
    "sdpa_window_nothing": N_("a window that hides nothing is not enough: 4.41.2 skips the mask only when the key "
                              "length S is below the window W. Read the condition in _ignore_causal_mask_sdpa."),
    "sdpa_window_hides": N_("a window that hides keys can only be expressed by a mask."),
    "sdpa_skip": N_("one of your True answers is a case the builder skips: no padding, a window that is either "
                    "absent or longer than S, and either T = S (plain prefill) or T = 1."),

    "mask_what": N_("4D mask"),
    "mask_head": N_("add the head axis of size 1: the mask is (B, 1, T, S)."),
    "mask_shape": N_("the mask is (B, 1, T, S): T = q_len queries, S = past_len + q_len keys."),
    "mask_dtype": N_("build the mask in the dtype asked for: it is added to scores of that dtype."),
    "mask_nan": N_("0 * -inf is NaN: multiplying a 0/1 mask by float('-inf') puts NaN in every visible cell. "
                   "Use masked_fill (or torch.where) with torch.finfo(dtype).min for the hidden cells."),
    "mask_inf": N_("use torch.finfo(dtype).min for hidden cells, not -inf: a pad query with every key hidden "
                   "would get a softmax of NaN."),
    "mask_flipped": N_("0 marks a visible key and finfo(dtype).min a hidden one, not the other way round."),
    "mask_positive": N_("an additive mask holds only 0 (visible) and finfo(dtype).min (hidden): no positive values."),
    "mask_min": N_("hidden cells must hold exactly torch.finfo(dtype).min, in the dtype asked for."),
    "mask_past": N_("query t sits at absolute position past_len + t: it may see keys 0 .. past_len + t, including "
                    "all the cached ones. Shift the causal triangle by the past length."),
    "mask_window_w": N_("transformers 4.41.2 keeps W + 1 keys visible (the query itself plus the W before it): hide "
                        "key j only when j < i - W. (Keeping W keys is transformers 5.x's rule.)"),
    "mask_window_w2": N_("too many keys: the window keeps the query and the W keys before it, no more."),
    "mask_no_window": N_("with a sliding window W, the query at absolute position i also hides keys j < i - W."),
    "mask_pad_rows": N_("padding hides KEYS: column j is hidden in every row when attention_mask[b, j] == 0; "
                        "broadcast the 2D mask over the query axis, not over the keys."),
    "mask_no_pad": N_("hide the pad tokens too: every key j with attention_mask[b, j] == 0."),
    "mask_no_causal": N_("hide the future: the query at absolute position i must not see keys j > i."),
    "mask_default": N_("compare cell by cell with the three rules: hidden if j > i (future), j < i - W (window) or "
                       "attention_mask[b, j] == 0 (padding), with i = past_len + t."),

    "out_passed": N_("named_outputs names every entry right in all {n} flag settings."),
    "out_type": N_("return a dict {{name: entry or None}}, got a {kind}."),
    "out_keys": N_("use exactly the five names last_hidden_state, past_key_values, hidden_states, attentions, "
                   "router_logits."),
    "out_stub": N_("the fixed positions only hold when every flag is on: the tuple keeps only the entries that "
                   "are not None, so an entry that is off shifts everything after it one place to the left."),
    "out_none": N_("an entry whose flag is off is not in the tuple: name it None."),
    "out_shifted": N_("walk the five names in order and take the next tuple entry only for the names whose flag is "
                      "on; an entry that is off takes no place."),
    "out_order": N_("the order is last_hidden_state, past_key_values, hidden_states, attentions, router_logits: "
                    "hidden states come before attentions."),
    "out_cache_flag": N_("the cache is in the tuple exactly when use_cache is on."),
    "out_default": N_("check each name against the five-entry order and the flags of this case."),
}


# -- 04.1 predict: does the SDPA builder make a mask? ------------------------------------------------

def sdpa_cases() -> dict:
    """{case name: (2D mask or None, T, P, W)}: the cases of exercise 04.1 and of the notebook's table."""
    ones = lambda s: torch.ones(1, s, dtype=torch.long)  # noqa: E731
    padded = lambda s: torch.tensor([[0, 0] + [1] * (s - 2)])  # noqa: E731
    return {
        "prefill T=S=6, no padding": (ones(6), 6, 0, None),
        "prefill T=S=6, left padding": (padded(6), 6, 0, None),
        "decode T=1 after P=6, no padding": (ones(7), 1, 6, None),
        "decode T=1 after P=6, left padding": (padded(7), 1, 6, None),
        "chunk T=3 after P=4, no padding": (ones(7), 3, 4, None),
        "prefill T=S=6, no 2D mask at all": (None, 6, 0, None),
        "prefill T=S=6, window W=8": (ones(6), 6, 0, 8),
        "prefill T=S=6, window W=6 (hides nothing)": (ones(6), 6, 0, 6),
        "prefill T=S=6, window W=5 (hides nothing)": (ones(6), 6, 0, 5),
        "prefill T=S=6, window W=3": (ones(6), 6, 0, 3),
    }


def sdpa_builds_mask(mask2d: Optional[torch.Tensor], t: int, p: int, w: Optional[int]) -> bool:
    """True when the package's SDPA builder returns a mask for this case (it equals transformers')."""
    embeds = torch.empty(1, t, 1)   # only its dtype, device and T are read
    return prepare_4d_causal_attention_mask_for_sdpa(mask2d, (1, t), embeds, p, sliding_window=w) is not None


def _sdpa_hint(name: str, mask2d, t: int, p: int, w) -> str:
    s = p + t
    if mask2d is not None and not bool((mask2d == 1).all()):
        return MSG["sdpa_padding"]
    if w is not None and s > w + 1:
        return MSG["sdpa_window_hides"]
    if w is not None and s >= w:
        return MSG["sdpa_window_nothing"]
    if t > 1 and s != t:
        return MSG["sdpa_chunk"]
    return MSG["sdpa_skip"]


@checker
def check_sdpa_predictions(fn: Callable) -> ExerciseResult:
    """fn() -> {case: bool}. Says how many are off, and the idea behind the first wrong one."""
    cases = sdpa_cases()
    got = filled_predictions(fn, list(cases), MSG["sdpa_blank_hint"])
    odd = [v for v in got.values() if not isinstance(v, bool)]
    if odd:
        raise NotYet(_(MSG["sdpa_bool"]).format(kind=type(odd[0]).__name__), MSG["sdpa_bool_hint"])
    want = {name: sdpa_builds_mask(*case) for name, case in cases.items()}
    wrong = [name for name in cases if got[name] != want[name]]
    if not wrong:
        return ExerciseResult(True, _(MSG["sdpa_passed"]).format(n=len(cases)))
    problem = _(MSG["sdpa_wrong"]).format(n=len(wrong), total=len(cases))
    if all(got.values()):
        raise NotYet(problem, MSG["sdpa_all_true"])
    if not any(got.values()):
        raise NotYet(problem, MSG["sdpa_all_false"])
    raise NotYet(problem, _sdpa_hint(wrong[0], *cases[wrong[0]]))


# -- 04.2 implement: the 4D additive mask ----------------------------------------------------------------

def build_4d_mask(attention_mask: torch.Tensor, q_len: int, past_len: int = 0,
                  sliding_window: Optional[int] = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The package's eager mask, `masks.prepare_4d_causal_attention_mask`, for a given 2D mask."""
    batch = attention_mask.shape[0]
    dummy = torch.empty(batch, q_len, 1, dtype=dtype)  # only its dtype and device are read
    return prepare_4d_causal_attention_mask(attention_mask, (batch, q_len), dummy, past_len,
                                            sliding_window=sliding_window)


def mask_cases():
    ones = lambda b, s: torch.ones(b, s, dtype=torch.long)  # noqa: E731
    left = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]])
    return [
        (N_("no padding, T=S=5"), (ones(1, 5), 5), {}),
        (N_("left padding, B=2, T=S=6"), (left, 6), {}),
        (N_("decode: P=5 cached, T=1 new, left padding"), (left, 1, 5), {}),
        (N_("chunk: P=3 cached, T=3 new"), (left, 3, 3), {}),
        (N_("sliding window W=2, T=S=6"), (ones(1, 6), 6, 0, 2), {}),
        (N_("sliding window W=3 with P=4, T=3, padding"), (torch.tensor([[0, 1, 1, 1, 1, 1, 1]]), 3, 4, 3), {}),
        (N_("bfloat16 mask"), (left, 6), {"dtype": torch.bfloat16}),
    ]


def _visible_variants(attention_mask, q_len, past_len, sliding_window) -> dict:
    """(B, 1, T, S) bool 'visible' tensors of the usual mistakes, keyed by their hint."""
    b, s = attention_mask.shape
    q = torch.arange(q_len)[:, None] + past_len      # (T, 1) absolute query positions
    k = torch.arange(s)[None, :]                     # (1, S) key positions
    keys_real = (attention_mask == 1)[:, None, None, :]                 # (B, 1, 1, S)
    queries_real = (attention_mask[:, -q_len:] == 1)[:, None, :, None]  # (B, 1, T, 1)

    def full(causal, window, pad):
        v = causal if window is None else causal & window
        return (v[None, None] & pad).expand(b, 1, q_len, s)

    w = sliding_window
    win = None if w is None else k >= q - w
    out = {
        MSG["mask_past"]: full(k <= q - past_len, None if w is None else k >= q - past_len - w, keys_real),
        MSG["mask_no_pad"]: full(k <= q, win, torch.ones_like(keys_real)),
        MSG["mask_pad_rows"]: full(k <= q, win, queries_real),
        MSG["mask_no_causal"]: full(torch.ones_like(k <= q), win, keys_real),
    }
    if w is not None:
        out[MSG["mask_window_w"]] = full(k <= q, k > q - w, keys_real)
        out[MSG["mask_window_w2"]] = full(k <= q, k >= q - w - 1, keys_real)
        out[MSG["mask_no_window"]] = full(k <= q, None, keys_real)
    return out


def _diagnose_mask(got, want, attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    if got.dim() == 3:
        return MSG["mask_head"]
    if got.shape != want.shape:
        return MSG["mask_shape"]
    if got.dtype != want.dtype:
        return MSG["mask_dtype"]
    g = got.float()
    if torch.isnan(g).any():
        return MSG["mask_nan"]
    if torch.isinf(g).any():
        return MSG["mask_inf"]
    hidden_got, hidden_want = got != 0, want != 0
    if torch.equal(hidden_got, ~hidden_want):
        return MSG["mask_flipped"]
    if g.max() > 0:
        return MSG["mask_positive"]
    if torch.equal(hidden_got, hidden_want):
        return MSG["mask_min"]
    variants = _visible_variants(attention_mask, q_len, past_len, sliding_window)
    return name_the_mistake(~hidden_got, list(variants.items()), atol=0.0, default=MSG["mask_default"])


@checker
def check_build_4d_mask(fn: Callable) -> ExerciseResult:
    """fn(attention_mask (B, S), q_len, past_len=0, sliding_window=None, dtype=float32) -> (B, 1, T, S)."""
    return run_cases(fn, build_4d_mask, mask_cases(), _diagnose_mask, MSG["mask_what"], atol=0.0)  # masks are exact


# -- 04.3 find the bug: name the entries of the output tuple -------------------------------------------------

NAMES = ("last_hidden_state", "past_key_values", "hidden_states", "attentions", "router_logits")


def _entries(seed: int, b: int = 1, t: int = 3, c: int = 4, layers: int = 2, e: int = 3) -> dict:
    """Stand-ins for every entry MixtralModel.forward can return, each of its documented shape."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return {
        "last_hidden_state": r(b, t, c),                                              # (B, T, C)
        "past_key_values": tuple((r(b, 1, t, 2), r(b, 1, t, 2)) for _ in range(layers)),  # L x (B, Hkv, S, D)
        "hidden_states": tuple(r(b, t, c) for _ in range(layers + 1)),               # L + 1 x (B, T, C)
        "attentions": tuple(r(b, 2, t, t) for _ in range(layers)),                   # L x (B, H, T, S)
        "router_logits": tuple(r(b * t, e) for _ in range(layers)),                  # L x (N, E)
    }


FLAG_CASES = [  # (label, use_cache, output_hidden_states, output_attentions, output_router_logits)
    (N_("everything on"), True, True, True, True),
    (N_("the defaults: only the cache"), True, False, False, False),
    (N_("use_cache=False, hidden states and router logits"), False, True, False, True),
    (N_("use_cache=False, nothing else"), False, False, False, False),
    (N_("cache and attentions"), True, False, True, False),
    (N_("attentions and router logits, no cache"), False, False, True, True),
]


def _case(seed: int, flags) -> tuple:
    entries = _entries(seed)
    on = dict(zip(NAMES, (True,) + tuple(flags)))
    outputs = tuple(entries[n] for n in NAMES if on[n])
    want = {n: (entries[n] if on[n] else None) for n in NAMES}
    return outputs, want


def named_outputs(outputs: tuple, use_cache: bool, output_hidden_states: bool, output_attentions: bool,
                  output_router_logits: bool) -> dict:
    """The reference: MixtralModel.forward's tuple keeps the non-None entries of NAMES, in that order."""
    on = dict(zip(NAMES, (True, use_cache, output_hidden_states, output_attentions, output_router_logits)))
    entries = iter(outputs)
    return {n: (next(entries) if on[n] else None) for n in NAMES}


def _diagnose_outputs(got: dict, want: dict, outputs: tuple, flags) -> str:
    on = dict(zip(NAMES, (True,) + tuple(flags)))
    fixed = {n: (outputs[i] if i < len(outputs) else None) for i, n in enumerate(NAMES)}
    by_position = [n for n in NAMES if difference(got[n], want[n], atol=0.0) is not None
                   and fixed[n] is not None and difference(got[n], fixed[n], atol=0.0) is None]
    if by_position:   # a wrong entry is the one a fixed index would pick
        return MSG["out_stub"]
    if any(got[n] is not None and not on[n] for n in NAMES):
        if on["past_key_values"] != (got["past_key_values"] is not None):
            return MSG["out_cache_flag"]
        return MSG["out_none"]
    swapped = dict(want, hidden_states=want["attentions"], attentions=want["hidden_states"])
    if all(difference(got[n], swapped[n], atol=0.0) is None for n in NAMES):
        return MSG["out_order"]
    return MSG["out_shifted"]


@checker
def check_named_outputs(fn: Callable) -> ExerciseResult:
    """fn(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits) -> {name: entry}."""
    for seed, (label, *flags) in enumerate(FLAG_CASES):
        outputs, want = _case(seed, flags)
        got = call(fn, outputs, *flags, label=label)
        if not isinstance(got, dict):
            raise NotYet(_(MSG["out_type"]).format(kind=type(got).__name__), MSG["out_keys"])
        if set(got) != set(NAMES):
            raise NotYet(MSG["out_keys"], MSG["out_keys"])
        for n in NAMES:
            expect_same(got[n], want[n], label, lambda: _diagnose_outputs(got, want, outputs, flags),
                        atol=0.0, what=n)
    return ExerciseResult(True, _(MSG["out_passed"]).format(n=len(FLAG_CASES)))


EXERCISES = {
    "04.1": ("sdpa_predictions", check_sdpa_predictions),
    "04.2": ("build_4d_mask", check_build_4d_mask),
    "04.3": ("named_outputs", check_named_outputs),
}
