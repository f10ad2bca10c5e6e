"""Exercises of notebook 07 (the sparse MoE block): the router's choice, and dispatch with index_add_.

    check_route(route)        route(router_logits (N, E), top_k) -> (weights (N, K), experts (N, K))
    check_dispatch(dispatch)  dispatch(x (N, C), weights (N, K), experts (N, K), expert_modules) -> (N, C)

Both compare the learner's function with `mixtral_edu.modeling.moe.MixtralSparseMoeBlock` on
several cases. When the answer matches a mistake we know, the message names it.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F

from . import ExerciseResult, call_learner, dtype_failure
from ..modeling.config import MixtralConfig
from ..modeling.moe import MixtralSparseMoeBlock


def _close(a: torch.Tensor, b: torch.Tensor, atol: float) -> bool:
    return a.shape == b.shape and bool(((a.float() - b.float()).abs() <= atol).all())


# -- routing --------------------------------------------------------------------------

def reference_route(router_logits: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The package's answer: what MixtralSparseMoeBlock.forward passes its hook_topk_weights and
    hook_topk_indices, with its gate replaced by the identity so that the given logits are the scores."""
    n_experts = router_logits.shape[-1]
    block = _block(0, n_experts, top_k, hidden_size=n_experts).to(router_logits.dtype)
    block.gate = torch.nn.Identity()
    _, weights, experts = _run_block(block, router_logits)
    return weights, experts


def _route_cases() -> List[Tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(7)
    return [
        ("N=6 tokens, E=8 experts, top_k=2, float32", torch.randn(6, 8, generator=g) * 2, 2),
        ("N=5, E=4, top_k=1 (Switch-style routing)", torch.randn(5, 4, generator=g) * 2, 1),
        ("N=3, E=8, top_k=3", torch.randn(3, 8, generator=g) * 2, 3),
        ("N=4, E=8, top_k=2, bfloat16 logits (a bf16 model)", (torch.randn(4, 8, generator=g) * 2).bfloat16(), 2),
    ]


def _route_hint(logits: torch.Tensor, k: int, w: torch.Tensor, want_w: torch.Tensor) -> str:
    probs = F.softmax(logits.float(), dim=1)
    top = torch.topk(probs, k, dim=-1).values
    if _close(w, top, 1e-4):
        return ("your weights are the top-k probabilities as they come out of the softmax: they sum to "
                "less than 1. Divide them by their sum (over the K kept experts) so they sum to 1.")
    if _close(w, torch.topk(F.softmax(logits.float(), dim=0), k, dim=-1).values, 1e-4):
        return "the softmax ran over the tokens (dim 0); it must run over the experts (the last dim)."
    raw = torch.topk(logits.float(), k, dim=-1).values
    if _close(w, raw, 1e-4) or _close(w, raw / raw.sum(-1, keepdim=True), 1e-4):
        return "those are (scaled) logits: turn the logits into probabilities with a softmax first."
    if torch.allclose(w.float().sum(-1), torch.ones(w.shape[0]), atol=1e-2):
        return "your weights sum to 1 but are not the renormalised top-k probabilities: check which experts you kept."
    return "softmax over the experts (in float32), keep the top_k, divide them by their sum."


def check_route(route: Callable) -> ExerciseResult:
    """route(router_logits (N, E), top_k) -> (routing_weights (N, K) in the logits' dtype, selected_experts (N, K))."""
    for label, logits, k in _route_cases():
        got, err = call_learner(route, (logits.clone(), k), "route", label)
        if err is not None:
            return err
        want_w, want_e = reference_route(logits, k)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return ExerciseResult(False, f"case {label}: return a pair (routing_weights, selected_experts), "
                                         f"got {type(got).__name__}.")
        w, e = got
        if not isinstance(w, torch.Tensor) or not isinstance(e, torch.Tensor):
            return ExerciseResult(False, f"case {label}: both results must be tensors.")
        if w.dtype in (torch.int64, torch.int32) and e.is_floating_point():
            return ExerciseResult(False, f"case {label}: you returned (experts, weights); the order is "
                                         "(routing_weights, selected_experts), as torch.topk gives (values, indices).")
        if tuple(e.shape) != tuple(want_e.shape) or tuple(w.shape) != tuple(want_w.shape):
            return ExerciseResult(False, f"case {label}: shapes {tuple(w.shape)} and {tuple(e.shape)}, expected "
                                         f"(N, K) = {tuple(want_w.shape)} for both. Hint: torch.topk(probs, top_k, dim=-1).")
        if not torch.equal(e.long(), want_e):
            if torch.equal(torch.sort(e.long(), -1).values, torch.sort(want_e, -1).values):
                return ExerciseResult(False, f"case {label}: the right experts in the wrong order. Keep topk's "
                                             "order: best expert first (slot 0), then the second best.")
            return ExerciseResult(False, f"case {label}: selected experts\n got  {e.tolist()}\n want {want_e.tolist()}\n"
                                         "Hint: pick the top_k experts per token (per row), by probability.")
        failure = dtype_failure(label, e, want_e,  # the experts were compared as long
                                "keep the indices torch.topk returns (torch.long): they index the experts.",
                                name="selected experts")
        if failure is not None:
            return failure
        if w.dtype != want_w.dtype:
            return ExerciseResult(False, f"case {label}: weights are {w.dtype}, expected {want_w.dtype}. The softmax "
                                         "runs in float32, but the weights are cast back to the logits' dtype "
                                         "(`.to(router_logits.dtype)`) before they scale the experts' outputs.")
        atol = 1e-6 if logits.dtype == torch.float32 else 2 ** -7
        if not _close(w, want_w, atol):
            err_ = (w.float() - want_w.float()).abs().max().item()
            return ExerciseResult(False, f"case {label}: weights differ by up to {err_:.3g}.\n"
                                         f"Hint: {_route_hint(logits, k, w, want_w)}")
    return ExerciseResult(True, "route agrees with MixtralSparseMoeBlock's router on all 4 cases "
                                "(float32 and bfloat16, top_k 1 to 3).")


# -- dispatch -------------------------------------------------------------------------

def _block(seed: int, n_experts: int = 4, top_k: int = 2, hidden_size: int = 8) -> MixtralSparseMoeBlock:
    cfg = MixtralConfig(vocab_size=16, hidden_size=hidden_size, intermediate_size=12, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, num_local_experts=n_experts,
                        num_experts_per_tok=top_k, initializer_range=0.5)
    with torch.random.fork_rng(devices=[]):  # leave the learner's random stream alone
        torch.manual_seed(seed)
        block = MixtralSparseMoeBlock(cfg).eval()
        for p in block.parameters():
            torch.nn.init.normal_(p, std=0.5)
    return block


def _run_block(block: MixtralSparseMoeBlock, x: torch.Tensor, routing_weights=None, selected_experts=None):
    """block.forward on x (N, C): (output (N, C), routing weights (N, K), selected experts (N, K)).

    Routing given here replaces the router's own at the block's hook points.
    """
    seen = {}

    def at(key, given):
        def hook(t, point):
            seen[key] = t if given is None else given
            return given
        return hook

    block.hook_topk_weights.fns.append(at("weights", routing_weights))
    block.hook_topk_indices.fns.append(at("experts", selected_experts))
    try:
        with torch.no_grad():
            out, _ = block(x[None])                                   # (1, N, C)
    finally:
        block.hook_topk_weights.fns.clear()
        block.hook_topk_indices.fns.clear()
    return out[0], seen["weights"], seen["experts"]


def reference_dispatch(x, routing_weights, selected_experts, experts) -> torch.Tensor:
    """The package's answer: MixtralSparseMoeBlock.forward's expert loop on these experts and this routing."""
    n_experts, top_k = len(experts), selected_experts.shape[1]
    block = _block(0, n_experts, top_k, hidden_size=x.shape[-1])
    block.experts = experts
    return _run_block(block, x, routing_weights, selected_experts)[0]


def _dispatch_cases():
    cases = []
    g = torch.Generator().manual_seed(3)
    for label, seed, e, k, n, chosen in [
        ("N=6 tokens, E=4 experts, top_k=2", 1, 4, 2, 6, None),
        ("N=5, E=4, top_k=2, expert 3 chosen by nobody", 2, 4, 2, 5, [[0, 1], [1, 0], [2, 0], [0, 2], [1, 2]]),
        ("N=4, E=4, top_k=1", 3, 4, 1, 4, None),
    ]:
        block = _block(seed, e, k)
        x = torch.randn(n, 8, generator=g)
        if chosen is None:
            logits = torch.randn(n, e, generator=g) * 2
            probs = F.softmax(logits, dim=-1)
            w, sel = torch.topk(probs, k, dim=-1)
        else:
            sel = torch.tensor(chosen)
            w = torch.rand(n, k, generator=g) + 0.1
        w = w / w.sum(-1, keepdim=True)
        cases.append((label, x, w, sel, block.experts))
    return cases


def _dispatch_mistakes(x, w, sel, experts) -> List[Tuple[str, torch.Tensor]]:
    """Answers that typical mistakes produce, with the fix for each."""
    n, k = sel.shape
    outs = torch.stack([torch.stack([experts[int(sel[t, s])](x[t:t + 1])[0] for s in range(k)]) for t in range(n)])
    # outs: (N, K, C), expert output of each (token, slot) before weighting
    last = torch.zeros_like(x)
    for i in range(len(experts)):              # assignment instead of index_add_: the later expert wins
        for t in range(n):
            for s in range(k):
                if int(sel[t, s]) == i:
                    last[t] = outs[t, s] * w[t, s]
    return [
        ("you add the experts' outputs without their routing weights: multiply each expert's output "
         "by routing_weights[token, slot] before adding it.", outs.sum(1)),
        ("each token gets only one expert's contribution: a plain assignment (out[token] = ...) or "
         "index_copy_ overwrites the earlier expert. index_add_ adds, so a token's K contributions sum up.", last),
        ("every choice was weighted with slot 0's weight: use routing_weights[token, slot], the slot "
         "torch.where returned for that pair.", (outs * w[:, :1, None]).sum(1)),
        ("the weights were applied the wrong way round (slot k's output with slot 1-k's weight).",
         (outs * w.flip(-1)[:, :, None]).sum(1)),
        ("you averaged instead of using the routing weights.", outs.mean(1)),
    ]


def check_dispatch(dispatch: Callable) -> ExerciseResult:
    """dispatch(x (N, C), routing_weights (N, K), selected_experts (N, K), experts) -> (N, C)."""
    cases = _dispatch_cases()
    for label, x, w, sel, experts in cases:
        with torch.no_grad():
            got, err = call_learner(dispatch, (x.clone(), w.clone(), sel.clone(), experts), "dispatch", label)
            if err is not None:
                return err
            want = reference_dispatch(x, w, sel, experts)
            if not isinstance(got, torch.Tensor):
                return ExerciseResult(False, f"case {label}: return a tensor (N, C), got {type(got).__name__}.")
            if tuple(got.shape) != tuple(want.shape):
                return ExerciseResult(False, f"case {label}: shape {tuple(got.shape)}, expected (N, C) = "
                                             f"{tuple(want.shape)}: one output row per token.")
            if _close(got, want, 1e-5):
                failure = dtype_failure(label, got, want,  # _close compares in float32
                                        "the output has x's dtype: start from torch.zeros_like(x) and add the "
                                        "outputs .to(x.dtype).")
                if failure is None:
                    continue
                return failure
            for fix, wrong in _dispatch_mistakes(x, w, sel, experts):
                if _close(got, wrong, 1e-5):
                    return ExerciseResult(False, f"case {label}: {fix}")
            worst = int((got - want).abs().amax(-1).argmax())
            return ExerciseResult(False, f"case {label}: the output of token {worst} is wrong (max difference "
                                         f"{(got - want).abs().max().item():.3g}). Hint: for each expert e, "
                                         "`slot, token = torch.where(expert_mask[e])`, run experts[e](x[token]), "
                                         "scale by routing_weights[token, slot, None], index_add_ into the output.")
    return ExerciseResult(True, f"dispatch agrees with the readable per-expert loop on all {len(cases)} cases "
                                "(including an expert nobody chose, and top_k=1).")
