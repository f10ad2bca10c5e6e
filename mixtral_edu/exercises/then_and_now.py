"""Exercises of chapter 11 (then and now): three of transformers 5.23's new rules, written by hand.

    11.1  fuse_experts(w1, w3, w2) -> (gate_up_proj (E, 2I, C), down_proj (E, C, I))
    11.2  sliding_visible(q_len, past_len, sliding_window) -> (T, S) bool, W keys per query
    11.3  sliding_layer_update(cached_k, cached_v, new_k, new_v, sliding_window)
              -> (keep_k, keep_v, attend_k, attend_v), as DynamicSlidingWindowLayer.update

Each check runs the learner's function on several cases against a reference (the first two
are mixtral_edu's own functions; the third is checked against 5.23's DynamicSlidingWindowLayer
in tests/then_and_now) and returns PASS or NOT YET with a hint that names the mistake, never
the expected values. A check never raises.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, List, Tuple

import torch

from . import ExerciseResult, call_learner, checker, fail
from ..i18n import N_, _
from ..modeling.checkpoint import per_expert_to_fused
from ..modeling.masks import causal_visibility

# -- messages (one place; N_ marks them for the catalog, _() translates them when shown) -------------
PASS_FUSE = N_("fuse_experts builds 5.23's gate_up_proj and down_proj on all {n} cases (float32 and bfloat16).")
PASS_VISIBLE = N_("sliding_visible keeps W keys per query, as 5.23 does, on all {n} cases.")
PASS_UPDATE = N_("sliding_layer_update matches DynamicSlidingWindowLayer.update on all {n} update sequences.")
HAS_SHAPE = N_("{name} has shape {got}, expected {want}.")
STOPPED = N_("not yet: the check stopped on {kind}: {error}")
NOT_PAIR = N_("return a pair (gate_up_proj, down_proj) of tensors.")
NOT_FOUR = N_("return four tensors (keep_k, keep_v, attend_k, attend_v).")
NOT_TENSOR = N_("return a torch tensor.")
NON_FINITE = N_("your result holds NaN or inf where the answer has none.")
HINT_GENERIC_FUSE = N_("per expert, gate_up_proj stacks w1's rows then w3's rows; down_proj is w2 as it is. "
                       "Check which axis is the expert axis.")
HINT_UP_FIRST = N_("the first I rows of each expert are the gate, the ones that go through silu (w1); yours hold w3. "
                   "5.23 splits the product with .chunk(2, dim=-1): gate first, then up.")
HINT_INTERLEAVED = N_("your rows alternate gate, up, gate, up. Mixtral's layout is concatenated: all I gate rows of "
                      "an expert, then all I up rows.")
HINT_EXPERT_AXIS = N_("you concatenated along the expert axis: that gives 2E experts. The gate and up halves go "
                      "along the rows of each expert.")
HINT_DOWN_T = N_("down_proj maps I back to C, like w2 (C, I): keep w2's orientation for every expert.")
HINT_DTYPE = N_("keep the weights' dtype: fusing moves numbers, it does not convert them.")
HINT_GENERIC_VISIBLE = N_("query i sits at absolute position P + i; it may see key j when j is not in its future and "
                          "lies less than W positions back.")
HINT_W_PLUS_ONE = N_("each query sees one key too many: that is 4.41.2's rule (W + 1 keys). 5.23 keeps W.")
HINT_W_MINUS_ONE = N_("each query sees one key too few: W keys per query, counting the query's own position.")
HINT_FUTURE = N_("some queries see keys in their future: the causal rule comes first.")
HINT_NO_PAST = N_("the queries come after P cached tokens: query i is at absolute position P + i, and there are "
                  "S = P + T keys.")
HINT_BOOL = N_("return a bool tensor (True = visible).")
HINT_GENERIC_UPDATE = N_("this step attends to the cached keys followed by the new ones (sequence axis -2); the layer "
                         "then keeps only what the next query can still see.")
HINT_KEEP_W = N_("you keep W keys. The next query brings its own key, so it needs only the last W - 1 old ones: "
                 "5.23 stores W - 1.")
HINT_KEEP_ALL = N_("you keep every key: a sliding-window layer stops growing once it holds W - 1 keys.")
HINT_ATTEND_TRUNCATED = N_("this step's queries must see all keys their window reaches, including the ones about to be "
                           "dropped: return the full concatenation to attend over, and keep the cut-down copy.")
HINT_OLDEST = N_("you kept the oldest keys; the window keeps the most recent ones.")
HINT_KV_MIXED = N_("keys and values must be cut the same way, each from its own tensor.")


def _has_new_nonfinite(got: torch.Tensor, want: torch.Tensor) -> bool:
    return bool((~torch.isfinite(got.float()) & torch.isfinite(want.float())).any())


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a.float(), b.float()))


# -- 11.1 fuse_experts ------------------------------------------------------------------------------

def reference_fuse_experts(w1, w3, w2) -> Tuple[torch.Tensor, torch.Tensor]:
    """mixtral_edu's conversion (per_expert_to_fused) on a one-layer state dict."""
    layer = "model.layers.0.block_sparse_moe.experts"
    state = {}
    for e, (a, b, c) in enumerate(zip(w1, w3, w2)):
        state.update({f"{layer}.{e}.w1.weight": a, f"{layer}.{e}.w3.weight": b, f"{layer}.{e}.w2.weight": c})
    fused = per_expert_to_fused(state)
    return fused["model.layers.0.mlp.experts.gate_up_proj"], fused["model.layers.0.mlp.experts.down_proj"]


def _fuse_cases() -> List[Tuple[str, list, list, list]]:
    g = torch.Generator().manual_seed(11)
    cases = []
    for label, e, i, c, dtype in (("E=4, I=3, C=5", 4, 3, 5, torch.float32), ("E=1, I=2, C=3", 1, 2, 3, torch.float32),
                                  (N_("E=3, I=4, C=4 (square experts)"), 3, 4, 4, torch.float32),
                                  ("E=2, I=3, C=6, bfloat16", 2, 3, 6, torch.bfloat16)):
        w1 = [torch.randn(i, c, generator=g).to(dtype) for _ in range(e)]
        w3 = [torch.randn(i, c, generator=g).to(dtype) for _ in range(e)]
        w2 = [torch.randn(c, i, generator=g).to(dtype) for _ in range(e)]
        cases.append((label, w1, w3, w2))
    return cases


def _fuse_hint(gate_up, down, w1, w3, w2) -> str:
    e, i = len(w1), w1[0].shape[0]
    if gate_up.shape == (e, 2 * i, w1[0].shape[1]):
        if _same(gate_up, torch.cat([torch.stack(w3), torch.stack(w1)], dim=1)):
            return HINT_UP_FIRST
        interleaved = torch.stack([torch.stack([w1[x], w3[x]], dim=1).reshape(2 * i, -1) for x in range(e)])
        if _same(gate_up, interleaved):
            return HINT_INTERLEAVED
    if gate_up.shape[0] == 2 * e and gate_up.shape[0] != e:
        return HINT_EXPERT_AXIS
    if down.dim() == 3 and down.shape[0] == e and _same(down, torch.stack([t.T for t in w2])):
        return HINT_DOWN_T
    return HINT_GENERIC_FUSE


@checker
def check_fuse_experts(fuse_experts: Callable) -> ExerciseResult:
    """fuse_experts(w1, w3, w2): lists of E tensors (I, C), (I, C), (C, I) -> (gate_up_proj, down_proj)."""
    try:
        cases = _fuse_cases()
        for label, w1, w3, w2 in cases:
            got, err = call_learner(fuse_experts, ([t.clone() for t in w1], [t.clone() for t in w3],
                                                   [t.clone() for t in w2]), "fuse_experts", label)
            if err is not None:
                return err
            if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(isinstance(t, torch.Tensor) for t in got):
                return fail(label, NOT_PAIR, HINT_GENERIC_FUSE)
            want = reference_fuse_experts(w1, w3, w2)
            for name, g_, w_ in (("gate_up_proj", got[0], want[0]), ("down_proj", got[1], want[1])):
                if g_.shape == w_.shape and _has_new_nonfinite(g_, w_):
                    return fail(label, name + ": " + _(NON_FINITE), HINT_GENERIC_FUSE)
                if g_.shape != w_.shape:
                    return fail(label, _(HAS_SHAPE).format(name=name, got=tuple(g_.shape), want=tuple(w_.shape)),
                                _fuse_hint(got[0], got[1], w1, w3, w2))
                if not _same(g_, w_):
                    return fail(label, _("{name} does not match 5.23's layout.").format(name=name),
                                _fuse_hint(got[0], got[1], w1, w3, w2))
                if g_.dtype != w_.dtype:
                    return fail(label, _("{name}: dtype {got}, expected {want}.").format(name=name, got=g_.dtype,
                                                                                         want=w_.dtype),
                                HINT_DTYPE)
        return ExerciseResult(True, _(PASS_FUSE).format(n=len(cases)))
    except Exception as exc:  # a checker never raises: whatever the answer did, report it
        return ExerciseResult(False, _(STOPPED).format(kind=type(exc).__name__, error=exc))


# -- 11.2 sliding_visible ---------------------------------------------------------------------------

def reference_sliding_visible(q_len: int, past_len: int, sliding_window: int) -> torch.Tensor:
    """5.23's rule: key j is visible to query P + i when j <= P + i and j > P + i - W (W keys)."""
    return causal_visibility(q_len, past_len, sliding_window - 1)  # 4.41.2's window W - 1 keeps W keys


_VISIBLE_CASES = (("T=8, P=0, W=3", 8, 0, 3), (N_("T=1, P=10, W=4 (a decode step)"), 1, 10, 4),
                  ("T=5, P=7, W=2", 5, 7, 2), (N_("T=6, P=0, W=10 (the window never binds)"), 6, 0, 10),
                  ("T=3, P=2, W=3", 3, 2, 3))


def _visible_hint(got: torch.Tensor, q_len: int, past_len: int, w: int) -> str:
    if got.shape != (q_len, past_len + q_len):
        return HINT_NO_PAST
    if _same(got.bool(), causal_visibility(q_len, past_len, w)):
        return HINT_W_PLUS_ONE
    if w >= 2 and _same(got.bool(), causal_visibility(q_len, past_len, w - 2)):
        return HINT_W_MINUS_ONE
    if bool((got.bool() & ~causal_visibility(q_len, past_len, None)).any()):
        return HINT_FUTURE
    if past_len and _same(got.bool(), torch.cat([torch.zeros(q_len, past_len, dtype=torch.bool),
                                                 causal_visibility(q_len, 0, w - 1)], dim=1)):
        return HINT_NO_PAST
    return HINT_GENERIC_VISIBLE


@checker
def check_sliding_visible(sliding_visible: Callable) -> ExerciseResult:
    """sliding_visible(q_len, past_len, sliding_window) -> (T, S) bool with 5.23's W keys per query."""
    try:
        for label, t, p, w in _VISIBLE_CASES:
            got, err = call_learner(sliding_visible, (t, p, w), "sliding_visible", label)
            if err is not None:
                return err
            if not isinstance(got, torch.Tensor):
                return fail(label, NOT_TENSOR, HINT_GENERIC_VISIBLE)
            want = reference_sliding_visible(t, p, w)
            if got.shape != want.shape:
                return fail(label, _("shape {got}, expected (T, S) = {want}.").format(got=tuple(got.shape),
                                                                                     want=tuple(want.shape)),
                            _visible_hint(got, t, p, w))
            if got.is_floating_point() and _has_new_nonfinite(got, want):
                return fail(label, NON_FINITE, HINT_BOOL)
            if not _same(got.bool(), want):
                wrong = int((got.bool() != want).sum())
                return fail(label, _("{wrong} of {total} cells are wrong.").format(wrong=wrong, total=want.numel()),
                            _visible_hint(got, t, p, w))
            if got.dtype != torch.bool:
                return fail(label, _("dtype {got}, expected torch.bool.").format(got=got.dtype), HINT_BOOL)
        return ExerciseResult(True, _(PASS_VISIBLE).format(n=len(_VISIBLE_CASES)))
    except Exception as exc:  # a checker never raises
        return ExerciseResult(False, _(STOPPED).format(kind=type(exc).__name__, error=exc))


# -- 11.3 sliding_layer_update ----------------------------------------------------------------------

def reference_sliding_layer_update(cached_k, cached_v, new_k, new_v, sliding_window: int):
    """DynamicSlidingWindowLayer.update (without past recording), for W >= 2.

    Attend over cached + new (B, Hkv, P + T, D); keep only the last W - 1 positions, which
    is all the next query needs besides its own key.
    """
    attend_k = torch.cat([cached_k, new_k], dim=-2)                    # (B, Hkv, P + T, D)
    attend_v = torch.cat([cached_v, new_v], dim=-2)
    keep = sliding_window - 1
    return attend_k[:, :, -keep:, :], attend_v[:, :, -keep:, :], attend_k, attend_v


def _update_cases() -> List[Tuple[str, int, List[int]]]:
    """(label, W, the T of each update in turn)."""
    return [(N_("W=3, a prefill longer than the window (T = 6), then 1, 1"), 3, [6, 1, 1]),
            (N_("W=4, updates of T = 3, 1, 1, 1 (passes the window)"), 4, [3, 1, 1, 1]),
            (N_("W=5, two chunks of 4"), 5, [4, 4]),
            (N_("W=2, five single tokens"), 2, [1, 1, 1, 1, 1])]


def _update_hint(got, want, w) -> str:
    keep_k, keep_v, attend_k, attend_v = got
    full_k = want[2]
    if _same(attend_k, want[0]) and not _same(want[0], want[2]):
        return HINT_ATTEND_TRUNCATED
    if keep_k.shape[-2] == min(w, full_k.shape[-2]) and _same(keep_k, full_k[:, :, -w:]):
        return HINT_KEEP_W
    if _same(keep_k, full_k) and full_k.shape[-2] > w - 1:
        return HINT_KEEP_ALL
    if keep_k.shape == want[0].shape and _same(keep_k, full_k[:, :, :w - 1]):
        return HINT_OLDEST
    if _same(keep_k, want[1]) or _same(attend_k, want[3]):
        return HINT_KV_MIXED
    return HINT_GENERIC_UPDATE


@checker
def check_sliding_layer_update(sliding_layer_update: Callable) -> ExerciseResult:
    """Feed each case's updates in turn (the learner's kept tensors become the next call's cache)."""
    try:
        g = torch.Generator().manual_seed(13)
        cases = _update_cases()
        for label, w, steps in cases:
            b, h, d = 2, 2, 3
            mine_k = mine_v = ref_k = ref_v = torch.zeros(b, h, 0, d)
            for n, t in enumerate(steps):
                new_k, new_v = torch.randn(b, h, t, d, generator=g), torch.randn(b, h, t, d, generator=g)
                step = _("{label}, update {n}").format(label=_(label), n=n + 1)
                got, err = call_learner(sliding_layer_update, (mine_k.clone(), mine_v.clone(), new_k.clone(),
                                                               new_v.clone(), w), "sliding_layer_update", step)
                if err is not None:
                    return err
                if (not isinstance(got, (tuple, list)) or len(got) != 4
                        or not all(isinstance(x, torch.Tensor) for x in got)):
                    return fail(step, NOT_FOUR, HINT_GENERIC_UPDATE)
                want = reference_sliding_layer_update(ref_k, ref_v, new_k, new_v, w)
                names = ("keep_k", "keep_v", "attend_k", "attend_v")
                for name, g_, w_ in zip(names, got, want):
                    if g_.shape == w_.shape and _has_new_nonfinite(g_, w_):
                        return fail(step, name + ": " + _(NON_FINITE), HINT_GENERIC_UPDATE)
                    if not _same(g_, w_):
                        problem = (_(HAS_SHAPE).format(name=name, got=tuple(g_.shape), want=tuple(w_.shape))
                                   if g_.shape != w_.shape else
                                   _("{name} holds the wrong keys or values.").format(name=name))
                        return fail(step, problem, _update_hint(got, want, w))
                mine_k, mine_v = got[0], got[1]
                ref_k, ref_v = want[0], want[1]
        return ExerciseResult(True, _(PASS_UPDATE).format(n=len(cases)))
    except Exception as exc:  # a checker never raises
        return ExerciseResult(False, _(STOPPED).format(kind=type(exc).__name__, error=exc))


EXERCISES = OrderedDict([
    ("11.1", ("fuse_experts", check_fuse_experts)),
    ("11.2", ("sliding_visible", check_sliding_visible)),
    ("11.3", ("sliding_layer_update", check_sliding_layer_update)),
])
