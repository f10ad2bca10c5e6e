"""Exercises of notebook 06 (attention): shapes of a decode step, rotary, masked attention, a window cache.

    06.1 check_decode_step_shapes(fn)       fn() -> {tensor name: predicted shape} for Mixtral 8x7B
    06.2 check_rotary(fn)                   fn(x (T, D), positions (T,) long, base) -> x rotated, (T, D)
    06.3 check_attention(fn)                fn(q (B, H, T, D), k, v (B, H, S, D), mask (B, 1, T, S) or None)
                                              -> (B, H, T, D)
    06.4 check_attend_with_window_cache(fn) fn(cache, q (B, H, T, D), k, v (B, Hkv, T, D), window)
                                              -> (output (B, H, T, D), new cache keeping at most W keys)

The references are the package's own attention, rotary tables and generation (equal to
transformers 4.41.2's, tests prove it). Hints name the mistake, never the values or the code.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import (ExerciseResult, NotYet, call, checker, expect_same, filled_predictions, name_the_mistake,
               run_cases, same, watching)
from ..i18n import N_, _
from ..modeling.rotary import MixtralRotaryEmbedding, apply_rotary_pos_emb

# The user-facing sentences of this module, in one place (issue 19 wraps them for translation).
MSG = {
    "shapes_passed": N_("all {n} shapes are right."),
    "shapes_blank_hint": N_("replace every ... by a tuple of whole numbers, e.g. (1, 2, 3)."),
    "shapes_odd": N_("{name}: a shape is a tuple of whole numbers, got {kind}."),
    "shapes_odd_hint": N_("write each shape as a tuple of ints, one per axis."),
    "shapes_wrong": N_("{n} of the {total} shapes are off; the first is {name}."),
    "shapes_rank": N_("{name} has the wrong number of axes: compare with the legend's letters for it."),
    "shapes_cache_heads": N_("the cache keeps only the Hkv key/value heads: repeat_kv runs after the cache update, "
                           "so the copies are never stored."),
    "shapes_repeated_heads": N_("after repeat_kv every query head has its own copy of keys: H heads."),
    "shapes_q_heads": N_("every query head has its own query: H heads, not Hkv."),
    "shapes_keys_axis": N_("keys count every token so far: the P cached ones and the T new ones, S = P + T "
                         "(the cache is updated before the scores)."),
    "shapes_new_axis": N_("a decode step feeds one new token per row: T = 1."),
    "shapes_scores_order": N_("scores are (B, H, T, S): rows are queries, columns keys."),
    "shapes_mask_heads": N_("the mask has a head axis of size 1: one mask broadcast over every head."),
    "shapes_z": N_("before o_proj the heads sit side by side again: (B, T, H * D), the hidden size for Mixtral."),
    "shapes_batch": N_("every tensor keeps the batch axis first: B rows."),
    "shapes_head_dim": N_("the head dim D = C / H: the last axis of q, k and v."),
    "shapes_default": N_("go axis by axis with the legend (B, H, Hkv, T, P, S = P + T, D)."),

    "rot_what": N_("rotary embedding"),
    "rot_shape": N_("return x's shape (T, D): a rotation changes directions, not sizes."),
    "rot_dtype": N_("keep x's float dtype: positions are integers, but the rotated vectors are not "
                  "(cos and sin of the angles are floats)."),
    "rot_length": N_("a rotation keeps every vector's length: use the cos and the sin of the same angle on each pair."),
    "rot_zero": N_("position 0 is angle 0: those rows must come back unchanged."),
    "rot_interleaved": N_("transformers pairs dim i with dim i + D/2 (the rotate_half layout: two halves), not "
                        "neighbours (2i, 2i + 1)."),
    "rot_backwards": N_("the rotation goes the other way: rotate_half puts the NEGATED second half first, and its "
                      "result is multiplied by the sin."),
    "rot_freq": N_("the frequency of pair i is base ** (-2i / D), not base ** (-i / D)."),
    "rot_base": N_("use the base argument: Mixtral's rope_theta is 1e6, not 10000."),
    "rot_index": N_("rotate row t to positions[t], not to its row number t."),
    "rot_default": N_("angle[t, i] = positions[t] * base ** (-2i / D) for the D/2 pairs (i, i + D/2); the same cos "
                    "and sin serve both halves."),

    "attn_what": N_("attention"),
    "attn_shape": N_("the output is (B, H, T, D): weights (B, H, T, S) times v (B, H, S, D)."),
    "attn_nan": N_("a query whose every key is hidden (a pad query) gets NaN when hidden scores are -inf: exp(-inf) "
                 "sums to 0 and 0/0 is NaN. Add the mask as it is (0 or finfo.min) instead."),
    "attn_no_scale": N_("divide the scores by sqrt(D) before the softmax (D = head dim)."),
    "attn_by_d": N_("divide by sqrt(D), not by D."),
    "attn_mask_ignored": N_("add the mask to the scores before the softmax."),
    "attn_softmax_queries": N_("softmax over the KEYS (the last dim, S): each query's weights sum to 1."),
    "attn_mask_multiplied": N_("the mask is ADDITIVE: 0 for visible keys and a huge negative number for hidden ones, so "
                             "add it to the scores; exp of it is then 0."),
    "attn_mask_after": N_("add the mask BEFORE the softmax: after it, the hidden keys already took their share."),
    "attn_scale_after": N_("divide the scores by sqrt(D) before the softmax, not the weights after it."),
    "attn_dtype": N_("return q's dtype: do the softmax in float32, then cast the weights back."),
    "attn_softmax_bf16": N_("case {label}: the numbers agree, but your softmax ran in {dtype}."),
    "attn_softmax_bf16_hint": N_("run the softmax in float32, as the exercise (and MixtralAttention) asks, then cast the "
                               "weights back to q's dtype. PyTorch's CPU kernel happens to round to the same numbers "
                               "here, so the check looks at the dtype your softmax computed in."),
    "attn_default": N_("softmax over the keys of (q k^T / sqrt(D) + mask), then times v."),

    "win_what": N_("the attention output"),
    "win_passed": N_("all {n} call sequences agree with the full cache, and the cache never kept more than W keys."),
    "win_type": N_("return a pair (output, new cache), got a {kind}."),
    "win_type_hint": N_("return the attention output (B, H, T, D) and the cache to pass to the next call, "
                      "a (keys, values) pair of (B, Hkv, S_kept, D) tensors."),
    "win_cache_type": N_("the new cache must be a (keys, values) pair of 4-D tensors (B, Hkv, S_kept, D)."),
    "win_cache_type_hint": N_("return the kept keys and values as a tuple of two tensors; the next call gets it back."),
    "win_grows": N_("case {label}: the cache kept {n} keys, but W = {w}"),
    "win_grows_hint": N_("the cache grows past W: after attending, keep only the last W keys and values, the ones a "
                       "later query can still see."),
    "win_too_few": N_("the next query sees itself and the W keys before it (4.41.2's window keeps W + 1 visible): "
                    "keep the last W keys after each call, not fewer."),
    "win_too_many": N_("one key too many is visible: the query sees itself and W keys before it. Keep W after a "
                     "call (or mask the extra one)."),
    "win_evict_first": N_("attend first, evict after: the new queries must see the W kept keys AND their own new "
                        "ones; cut the cache back to W only once the output is computed."),
    "win_no_mask": N_("a call with several new tokens (a prefill or a chunk) needs a mask: each query sees no later "
                    "token, and nothing more than W tokens back."),
    "win_no_window": N_("the window also applies inside a prefill or chunk: a query there sees at most the W keys "
                      "before it, even when older ones are still in hand."),
    "win_heads": N_("repeat the Hkv key/value heads to H (each kv head serves H / Hkv query heads) before the scores."),
    # found by reading off which keys a wrong query really attended to (positions count from the first token)
    "win_future": N_("the query at position {p} gave weight to keys that come after it: in a call of several tokens, "
                   "what keeps a query from reading the tokens after it?"),
    "win_one_short": N_("the query at position {p} saw {n} keys, one too few: 4.41.2's window shows a query itself and "
                      "the W keys before it, W + 1 in all. Which limit in your code is off by one?"),
    "win_lost": N_("the query at position {p} saw only {n} keys: keys it should still see were gone when it attended. "
                 "Where does your function cut the keys back to W: before the scores, or after?"),
    "win_too_far": N_("the query at position {p} saw {n} keys, more than the W + 1 the window allows: how far back does "
                    "your mask let a query look?"),
    "win_step": N_("{label}, call {i} (T={t})"),
    "win_default": N_("compare call by call with a cache that keeps every key and applies the window by the mask "
                    "(positions relative to the first kept key shift every query and key alike)."),
}


# -- 06.1 predict: every shape of one decode step --------------------------------------------------------

SHAPE_CASE = dict(B=2, P=9, T=1, C=4096, H=32, Hkv=8, D=128)   # Mixtral 8x7B, a decode step
SHAPE_NAMES = ("q", "k_cached", "k_repeated", "scores", "mask", "z")


def decode_step_shapes() -> dict:
    """The shapes, from the legend (tests check them on a meta-device run of the package's attention)."""
    c = SHAPE_CASE
    s = c["P"] + c["T"]
    return {"q": (c["B"], c["H"], c["T"], c["D"]), "k_cached": (c["B"], c["Hkv"], s, c["D"]),
            "k_repeated": (c["B"], c["H"], s, c["D"]), "scores": (c["B"], c["H"], c["T"], s),
            "mask": (c["B"], 1, c["T"], s), "z": (c["B"], c["T"], c["H"] * c["D"])}


def _shape_hint(name: str, got: tuple, want: tuple) -> str:
    c = SHAPE_CASE
    if name == "z":
        return MSG["shapes_z"]
    if len(got) != len(want):
        return _(MSG["shapes_rank"]).format(name=name)
    if got[0] != want[0]:
        return MSG["shapes_batch"]
    if name == "scores" and got == (want[0], want[1], want[3], want[2]):
        return MSG["shapes_scores_order"]
    if got[1] != want[1]:
        return {"k_cached": MSG["shapes_cache_heads"], "k_repeated": MSG["shapes_repeated_heads"],
                "mask": MSG["shapes_mask_heads"]}.get(name, MSG["shapes_q_heads"])
    if name in ("k_cached", "k_repeated") and got[2] != want[2]:
        return MSG["shapes_keys_axis"]
    if name in ("q", "scores", "mask") and got[2] != want[2]:
        return MSG["shapes_new_axis"]
    if name in ("scores", "mask") and got[3] != want[3]:
        return MSG["shapes_keys_axis"]
    if got[-1] != want[-1] and name in ("q", "k_cached", "k_repeated") and got[-1] != c["D"]:
        return MSG["shapes_head_dim"]
    return MSG["shapes_default"]


def _as_shape(value):
    if isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) and not isinstance(v, bool)
                                                            for v in value):
        return tuple(value)
    return None


@checker
def check_decode_step_shapes(fn: Callable) -> ExerciseResult:
    """fn() -> {name: shape}. Says how many are off and names the idea behind the first, never the shape."""
    got = filled_predictions(fn, SHAPE_NAMES, MSG["shapes_blank_hint"])
    for name in SHAPE_NAMES:
        if _as_shape(got[name]) is None:
            raise NotYet(_(MSG["shapes_odd"]).format(name=name, kind=type(got[name]).__name__), MSG["shapes_odd_hint"])
    want = decode_step_shapes()
    wrong = [n for n in SHAPE_NAMES if _as_shape(got[n]) != want[n]]
    if not wrong:
        return ExerciseResult(True, _(MSG["shapes_passed"]).format(n=len(SHAPE_NAMES)))
    first = wrong[0]
    raise NotYet(_(MSG["shapes_wrong"]).format(n=len(wrong), total=len(SHAPE_NAMES), name=first),
                 _shape_hint(first, _as_shape(got[first]), want[first]))


# -- 06.2 implement: rotary embedding of one sequence of vectors ---------------------------------------------

def rotate(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """x (T, D) rotated to `positions` (T,), through the package's rotary tables and apply_rotary_pos_emb."""
    d = x.shape[-1]
    rope = MixtralRotaryEmbedding(d, base=base)
    cos, sin = rope(x, seq_len=int(positions.max()) + 1)                       # (S, D) tables
    out, rotated_k = apply_rotary_pos_emb(x[None, None], x[None, None], cos, sin, positions[None])   # (1, 1, T, D)
    return out[0, 0]


def rot_cases():
    g = torch.Generator().manual_seed(17)
    return [(N_("D=4, positions 0..3"), (torch.randn(4, 4, generator=g), torch.arange(4)), {}),
            (N_("D=8, positions 5, 0, 17"), (torch.randn(3, 8, generator=g), torch.tensor([5, 0, 17])), {}),
            (N_("D=16, base 1e6 (Mixtral's rope_theta)"), (torch.randn(2, 16, generator=g), torch.tensor([3, 40])),
             {"base": 1e6})]


def _halves(x, ang, sign=1.0):
    a, b = x[:, : x.shape[-1] // 2], x[:, x.shape[-1] // 2:]
    return torch.cat((a * ang.cos() - sign * b * ang.sin(), b * ang.cos() + sign * a * ang.sin()), dim=-1)


def _angles(positions, d, base, step=2):
    inv = 1.0 / (base ** (torch.arange(0, d, step)[: d // 2].float() / d))   # (D/2,)
    return positions.float()[:, None] * inv[None]                           # (T, D/2)


def _diagnose_rot(got, want, x, positions, base=10000.0):
    if got.shape != x.shape:
        return MSG["rot_shape"]
    if not got.is_floating_point():
        return MSG["rot_dtype"]
    d = x.shape[-1]
    ang = _angles(positions, d, base)
    x1, x2 = x[:, 0::2], x[:, 1::2]
    inter = torch.stack((x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()), dim=-1).reshape(x.shape)
    found = name_the_mistake(got, [
        (MSG["rot_interleaved"], inter),
        (MSG["rot_backwards"], lambda: _halves(x, ang, sign=-1.0)),
        (MSG["rot_freq"], lambda: _halves(x, _angles(positions, d, base, step=1))),
        (MSG["rot_base"], lambda: _halves(x, _angles(positions, d, 10000.0))),
        (MSG["rot_index"], lambda: _halves(x, _angles(torch.arange(len(positions)), d, base))),
    ], atol=1e-5)
    if found:
        return found
    if not torch.allclose(got.float().norm(dim=-1), x.norm(dim=-1), atol=1e-4):
        return MSG["rot_length"]
    if positions.eq(0).any() and not torch.allclose(got[positions == 0].float(), x[positions == 0], atol=1e-5):
        return MSG["rot_zero"]
    return MSG["rot_default"]


@checker
def check_rotary(fn: Callable) -> ExerciseResult:
    """fn(x (T, D), positions (T,), base=10000.0) -> x rotated, as apply_rotary_pos_emb rotates q and k."""
    return run_cases(fn, rotate, rot_cases(), _diagnose_rot, MSG["rot_what"], atol=1e-5)


# -- 06.3 implement: scaled dot-product attention with an additive mask -----------------------------------------

def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The eager path of MixtralAttention, from q, k, v (k, v already repeated to H heads)."""
    scores = torch.matmul(q, k.transpose(2, 3)) / math.sqrt(q.shape[-1])        # (B, H, T, S)
    if mask is not None:
        scores = scores + mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    return torch.matmul(weights, v)                                            # (B, H, T, D)


def _additive(b, t, s, past=0, pad=None, dtype=torch.float32):
    q = torch.arange(t)[:, None] + past
    k = torch.arange(s)[None, :]
    visible = (k <= q)[None, None].expand(b, 1, t, s).clone()
    if pad is not None:
        visible &= (pad == 1)[:, None, None, :]
    # in the model's dtype, as the model builds it: 0 where visible, that dtype's most negative number elsewhere
    return torch.zeros(b, 1, t, s, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)   # (B, 1, T, S)


BF16_CASE = N_("bfloat16 (a bf16 model): causal + left padding, B=2, T=S=5")


def attn_cases():
    g = torch.Generator().manual_seed(19)
    r = lambda *shape: torch.randn(*shape, generator=g) * 1.5  # noqa: E731
    pad = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    return [(N_("no mask, B=1, H=2, T=S=3, D=4"), (r(1, 2, 3, 4), r(1, 2, 3, 4), r(1, 2, 3, 4), None), {}),
            (N_("causal mask, B=1, H=2, T=S=4, D=8"), (r(1, 2, 4, 8), r(1, 2, 4, 8), r(1, 2, 4, 8), _additive(1, 4, 4)), {}),
            (N_("decode: T=1 query, S=5 keys, left padding"), (r(2, 2, 1, 4), r(2, 2, 5, 4), r(2, 2, 5, 4),
                                                           _additive(2, 1, 5, past=4, pad=pad)), {}),
            (N_("causal + left padding, B=2, T=S=5 (pad queries see nothing)"),
             (r(2, 2, 5, 4), r(2, 2, 5, 4), r(2, 2, 5, 4), _additive(2, 5, 5, pad=pad)), {}),
            (BF16_CASE, (r(2, 2, 5, 8).bfloat16(), r(2, 2, 5, 8).bfloat16(), r(2, 2, 5, 8).bfloat16(),
                         _additive(2, 5, 5, pad=pad, dtype=torch.bfloat16)), {})]


def _attn_atol(label, args, kwargs) -> float:
    """float32: rounding only; bfloat16 keeps about 3 digits, and a sum in another order rounds differently."""
    return 1e-5 if args[0].dtype == torch.float32 else 3e-2


def _diagnose_attn(got, want, q, k, v, mask=None):
    if got.shape != want.shape:
        return MSG["attn_shape"]
    if got.dtype != want.dtype:
        return MSG["attn_dtype"]
    d = q.shape[-1]
    raw = torch.matmul(q, k.transpose(2, 3))
    m = 0 if mask is None else mask
    mistakes = [
        (MSG["attn_no_scale"], lambda: (raw + m).softmax(-1) @ v),
        (MSG["attn_by_d"], lambda: (raw / d + m).softmax(-1) @ v),
        (MSG["attn_mask_ignored"], lambda: (raw / math.sqrt(d)).softmax(-1) @ v),
        (MSG["attn_softmax_queries"], lambda: (raw / math.sqrt(d) + m).softmax(-2) @ v),
        (MSG["attn_scale_after"], lambda: ((raw + m).softmax(-1) / math.sqrt(d)) @ v),
    ]
    if mask is not None:
        mistakes += [
            (MSG["attn_mask_multiplied"], lambda: ((raw / math.sqrt(d)) * (mask == 0)).softmax(-1) @ v),
            (MSG["attn_mask_after"], lambda: ((raw / math.sqrt(d)).softmax(-1) + mask) @ v),
        ]
    found = name_the_mistake(got, mistakes, atol=1e-4 if q.dtype == torch.float32 else 3e-2)
    if found:
        return found
    return MSG["attn_nan"] if torch.isnan(got.float()).any() else MSG["attn_default"]


def _softmax_dtype(c) -> torch.dtype:
    """The dtype a watched softmax call computed in: its dtype argument, else its input's."""
    dtype = c.kwargs.get("dtype")
    position = 3 if c.func is F.softmax else 2          # F.softmax(input, dim, _stacklevel, dtype)
    if dtype is None and len(c.args) > position:
        dtype = c.args[position]
    return dtype or c.args[0].dtype


@checker
def check_attention(fn: Callable) -> ExerciseResult:
    """fn(q, k, v, mask or None) -> softmax(q k^T / sqrt(D) + mask) v, (B, H, T, D), the softmax in float32."""
    result = run_cases(fn, reference_attention, attn_cases(), _diagnose_attn, MSG["attn_what"], atol=_attn_atol)
    if not result:
        return result
    label, args, kwargs = next(c for c in attn_cases() if c[0] == BF16_CASE)
    with watching("softmax") as calls:                   # the numbers cannot tell a bf16 softmax apart (see hint)
        call(fn, *args, label=label)
    low = [d for d in map(_softmax_dtype, calls) if d in (torch.bfloat16, torch.float16)]
    if low:
        raise NotYet(_(MSG["attn_softmax_bf16"]).format(label=_(label), dtype=str(low[0]).replace("torch.", "")),
                     MSG["attn_softmax_bf16_hint"])
    return result


# -- 06.4 implement a variant: a cache that evicts what the window hides -----------------------------------------

def _window_mask(t: int, past: int, window: int) -> torch.Tensor:
    """(1, 1, T, P + T) additive: causal and inside the window (W + 1 keys), positions relative to the first key."""
    from ..modeling.masks import causal_visibility
    visible = causal_visibility(t, past, window)                                  # (T, S) bool
    return torch.zeros(visible.shape).masked_fill(~visible, torch.finfo(torch.float32).min)[None, None]


def full_cache_attention(q, keys, values, past: int, window: int) -> torch.Tensor:
    """The reference: every key so far kept (a DynamicCache); the window applied by the mask, as the model does."""
    from ..modeling.attention import repeat_kv
    g = q.shape[1] // keys.shape[1]
    return reference_attention(q, repeat_kv(keys, g), repeat_kv(values, g), _window_mask(q.shape[2], past, window))


WINDOW_CASES = [  # (label, B, H, Hkv, D, W, tokens per call: a prefill, then decode steps and chunks)
    (N_("W=3: a prefill of 6, two decode steps, a chunk of 3, a decode step"), 1, 4, 2, 8, 3, [6, 1, 1, 3, 1]),
    (N_("W=2, B=2: a prefill of 2 (shorter than the window), four decode steps"), 2, 4, 1, 4, 2, [2, 1, 1, 1, 1]),
    (N_("W=4: a prefill of 3, a chunk of 4, three decode steps"), 1, 2, 2, 4, 4, [3, 4, 1, 1, 1]),
]


def _window_calls(b, h, hkv, d, counts, seed):
    """Per call: q (B, H, T, D), k and v (B, Hkv, T, D): what the model would hand attention, already rotated."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g) * 1.5  # noqa: E731
    return [(r(b, h, t, d), r(b, hkv, t, d), r(b, hkv, t, d)) for t in counts]


def _run_window(calls, w, keep, evict_first=False, mask_chunks=True, mask_window=True):
    """Outputs of a window cache built the usual wrong ways (keep: keys kept after a call)."""
    from ..modeling.attention import repeat_kv
    kept, outs = None, []
    for q, k, v in calls:
        ks = k if kept is None else torch.cat([kept[0], k], dim=-2)
        vs = v if kept is None else torch.cat([kept[1], v], dim=-2)
        if evict_first:
            ks, vs = ks[:, :, -keep:], vs[:, :, -keep:]
        t, s = q.shape[2], ks.shape[2]
        mask = _window_mask(t, s - t, w if mask_window else None) if mask_chunks and t > 1 else None
        g = q.shape[1] // ks.shape[1]
        outs.append(reference_attention(q, repeat_kv(ks, g), repeat_kv(vs, g), mask))
        kept = (ks[:, :, -keep:], vs[:, :, -keep:])
    return outs


def _window_mistakes(calls, w, index):
    def at(**kw):
        return lambda: _run_window(calls, w, **kw)[index]
    return [
        (MSG["win_too_few"], at(keep=w - 1)),
        (MSG["win_too_many"], at(keep=w + 1)),
        (MSG["win_evict_first"], at(keep=w, evict_first=True)),
        (MSG["win_no_mask"], at(keep=w, mask_chunks=False)),
        (MSG["win_no_window"], at(keep=w, mask_window=False)),
    ]


def _seen_keys(got_t, q_t, keys, values, atol):
    """(a, b): the keys a..b (positions from the first token) that one query really attended to, read off its
    output got_t (B, H, D) by trying every range, or None when no range gives that output."""
    from ..modeling.attention import repeat_kv
    g = q_t.shape[1] // keys.shape[1]
    k, v = repeat_kv(keys, g), repeat_kv(values, g)                   # (B, H, S, D)
    for a in range(k.shape[2]):
        for b in range(a, k.shape[2]):
            if same(got_t, reference_attention(q_t, k[:, :, a:b + 1], v[:, :, a:b + 1])[:, :, 0], atol=atol):
                return a, b
    return None


def _window_diagnosis(got, want, q, keys, values, past, window, kept_before) -> Optional[str]:
    """Name the mistake from the first wrong query: which keys did it see, against the W + 1 it should see?"""
    wrong = [t for t in range(q.shape[2]) if not same(got[:, :, t], want[:, :, t], atol=1e-5)]
    if not wrong:
        return None
    t = wrong[0]
    p = past + t                                                      # the query's position from the first token
    seen = _seen_keys(got[:, :, t], q[:, :, t:t + 1], keys, values, atol=1e-4)
    if seen is None:
        return None
    a, b = seen
    n, first = b - a + 1, max(0, p - window)                          # it should see keys first..p
    if b > p:
        return _(MSG["win_future"]).format(p=p)
    if a < first:                                                     # older keys than the window allows
        return MSG["win_no_window"] if a >= past else _(MSG["win_too_far"]).format(p=p, n=n)
    if a == first + 1 and b == p:                                     # one key short: the oldest one it may see
        if first >= past:                                             # a key of this very call: the mask
            return _(MSG["win_one_short"]).format(p=p, n=n)
        if kept_before < window:                                      # a cached key: kept too few last time
            return MSG["win_too_few"]
    if a > first or b < p:                                            # keys it should see were gone
        return _(MSG["win_lost"]).format(p=p, n=n)
    return None


def _kept_length(cache) -> int:
    if not (isinstance(cache, (tuple, list)) and len(cache) == 2
            and all(isinstance(x, torch.Tensor) and x.dim() == 4 for x in cache)):
        raise NotYet(MSG["win_cache_type"], MSG["win_cache_type_hint"])
    return max(cache[0].shape[-2], cache[1].shape[-2])


@checker
def check_attend_with_window_cache(fn: Callable) -> ExerciseResult:
    """fn(cache, q, k, v, window) -> (output (B, H, T, D), new cache) over a sequence of calls."""
    for seed, (label, b, h, hkv, d, w, counts) in enumerate(WINDOW_CASES):
        calls = _window_calls(b, h, hkv, d, counts, seed)
        cache, past, all_k, all_v, kept_before = None, 0, [], [], 0
        for i, (q, k, v) in enumerate(calls):
            all_k.append(k)
            all_v.append(v)
            want = full_cache_attention(q, torch.cat(all_k, -2), torch.cat(all_v, -2), past, w)
            step = _(MSG["win_step"]).format(label=_(label), i=i + 1, t=q.shape[2])
            try:
                result = call(fn, cache, q.clone(), k.clone(), v.clone(), w, label=step)
            except NotYet as stop:
                if h != hkv and "size" in stop.problem:   # a shape clash between H query heads and Hkv kv heads
                    raise NotYet(stop.problem, MSG["win_heads"]) from None
                raise
            if not (isinstance(result, (tuple, list)) and len(result) == 2):
                raise NotYet(_(MSG["win_type"]).format(kind=type(result).__name__), MSG["win_type_hint"])
            got, cache = result
            if not isinstance(got, torch.Tensor):
                raise NotYet(_(MSG["win_type"]).format(kind=type(got).__name__), MSG["win_type_hint"])
            keys, values = torch.cat(all_k, -2), torch.cat(all_v, -2)
            # which keys the first wrong query really saw names most mistakes; whole wrong variants the rest
            expect_same(got, want, step, lambda: (
                _window_diagnosis(got, want, q, keys, values, past, w, kept_before)
                or name_the_mistake(got, _window_mistakes(calls, w, i), atol=1e-5, default=MSG["win_default"])),
                atol=1e-5, what=MSG["win_what"])
            held = kept_before = _kept_length(cache)
            if held > w:
                raise NotYet(_(MSG["win_grows"]).format(label=step, n=held, w=w), MSG["win_grows_hint"])
            past += q.shape[2]
    return ExerciseResult(True, _(MSG["win_passed"]).format(n=len(WINDOW_CASES)))


EXERCISES = {
    "06.1": ("decode_step_shapes", check_decode_step_shapes),
    "06.2": ("rotate", check_rotary),
    "06.3": ("attention", check_attention),
    "06.4": ("attend_with_window_cache", check_attend_with_window_cache),
}
