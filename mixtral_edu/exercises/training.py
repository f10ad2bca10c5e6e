"""Exercises of notebook 09 (training the tiny model): the learning-rate schedule, and the
Mixtral paper's "do consecutive tokens keep their expert?" statistic.

    check_lr_schedule(lr_schedule)   lr_schedule(step, recipe) -> learning rate at that step
    check_repeat_rates(repeat_rates) repeat_rates(chosen (T, K)) -> (same_top1, shared_any)

(The shifted cross-entropy and the load-balancing loss are exercises of notebook 03.)
"""
from __future__ import annotations

import math
from typing import Callable, List, Tuple

import torch

from . import ExerciseResult, call_learner
from ..tiny.train import Recipe, lr_at


# -- the learning-rate schedule -----------------------------------------------------

def _schedule_cases() -> List[Tuple[str, int, Recipe]]:
    shipped = Recipe()
    short = Recipe(steps=50, warmup=10, lr=1e-2, min_lr=1e-3)
    cases = [(f"shipped recipe, step {s}", s, shipped)
             for s in (0, 1, shipped.warmup - 1, shipped.warmup, shipped.warmup + 1, shipped.steps // 2,
                       shipped.steps - 1)]
    cases += [(f"steps=50, warmup=10, lr=1e-2, min_lr=1e-3, step {s}", s, short) for s in (0, 9, 10, 30, 49)]
    return cases


def _schedule_mistakes(step: int, r: Recipe) -> List[Tuple[str, float]]:
    progress = (step - r.warmup) / max(1, r.steps - r.warmup)
    cosine = lambda lo, p: lo + 0.5 * (r.lr - lo) * (1 + math.cos(math.pi * p))  # noqa: E731
    out = []
    if step < r.warmup:
        out += [("warm-up starts at lr / warmup at step 0, not at 0 (a zero step would waste a batch): "
                 "use (step + 1) / warmup.", r.lr * step / r.warmup),
                ("the first `warmup` steps ramp linearly from lr / warmup up to lr; your rate has no warm-up.",
                 cosine(r.min_lr, step / max(1, r.steps)))]
    else:
        out += [("the cosine ends at min_lr, not at 0: min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * progress)).",
                 cosine(0.0, progress)),
                ("measure the cosine's progress from the end of warm-up: (step - warmup) / (steps - warmup).",
                 cosine(r.min_lr, step / max(1, r.steps))),
                ("after warm-up the rate follows a cosine, not a straight line.",
                 r.lr - (r.lr - r.min_lr) * progress),
                ("a constant rate after warm-up is not this recipe: it decays along a cosine to min_lr.", r.lr)]
    return out


def check_lr_schedule(lr_schedule: Callable) -> ExerciseResult:
    """lr_schedule(step, recipe) -> float: linear warm-up, then cosine decay to recipe.min_lr (as train.lr_at)."""
    cases = _schedule_cases()
    for label, step, r in cases:
        got, err = call_learner(lr_schedule, (step, r), "lr_schedule", label)
        if err is not None:
            return err
        want = lr_at(step, r)
        try:
            got = float(got)
        except Exception:
            return ExerciseResult(False, f"case {label}: return a number, got {got!r}.")
        if math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-12):
            continue
        for fix, wrong in _schedule_mistakes(step, r):
            if math.isclose(got, wrong, rel_tol=1e-9, abs_tol=1e-12):
                return ExerciseResult(False, f"case {label}: {got:.6g}, expected {want:.6g}.\nHint: {fix}")
        return ExerciseResult(False, f"case {label}: {got:.6g}, expected {want:.6g}.\nHint: before `warmup`: "
                                     "lr * (step + 1) / warmup; after: min_lr + 0.5 * (lr - min_lr) * "
                                     "(1 + cos(pi * (step - warmup) / (steps - warmup))).")
    return ExerciseResult(True, f"lr_schedule agrees with mixtral_edu.tiny.train.lr_at on all {len(cases)} cases.")


# -- consecutive tokens and their experts ---------------------------------------------

def reference_repeat_rates(chosen: torch.Tensor) -> Tuple[float, float]:
    """chosen (T, K): the experts of T consecutive tokens at one layer, best first.

    same_top1: share of the T - 1 neighbouring pairs whose best expert is the same.
    shared_any: share of pairs whose K chosen experts have at least one expert in common.
    """
    a, b = chosen[:-1], chosen[1:]                                             # (T-1, K) each
    same_top1 = (a[:, 0] == b[:, 0]).float().mean().item()
    shared_any = (a[:, :, None] == b[:, None, :]).any(-1).any(-1).float().mean().item()
    return same_top1, shared_any


def _repeat_cases() -> List[Tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(9)

    def random_topk(t: int, e: int, k: int) -> torch.Tensor:
        return torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    crossed = torch.tensor([[0, 1], [1, 2], [3, 1], [3, 4], [5, 6], [6, 5]])  # shared experts in swapped slots
    return [("T=12 tokens, E=8, K=2", random_topk(12, 8, 2)),
            ("T=6, experts shared across slots (slot 0 of one = slot 1 of the next)", crossed),
            ("T=9, E=4, K=2", random_topk(9, 4, 2)),
            ("T=7, E=8, K=1", random_topk(7, 8, 1))]


def _repeat_mistakes(chosen: torch.Tensor) -> List[Tuple[str, Tuple[float, float]]]:
    a, b = chosen[:-1], chosen[1:]
    t = chosen.shape[0]
    top1, anyk = reference_repeat_rates(chosen)
    slotwise = (a == b).any(-1).float().mean().item()
    one_way = (b[:, :1] == a).any(-1).float().mean().item()
    return [
        (f"there are T - 1 = {t - 1} neighbouring pairs, not T = {t}: divide by the number of pairs.",
         (top1 * (t - 1) / t, anyk * (t - 1) / t)),
        ("comparing slot by slot misses an expert that was second for one token and first for the next: "
         "compare every expert of one token with every expert of the other.", (top1, slotwise)),
        ("the second number asks whether the two tokens' K experts overlap at all; you checked only whether "
         "the next token's best expert is among the previous token's K.", (top1, one_way)),
    ]


def check_repeat_rates(repeat_rates: Callable) -> ExerciseResult:
    """repeat_rates(chosen (T, K)) -> (same_top1, shared_any), both shares of the T - 1 neighbouring pairs."""
    cases = _repeat_cases()
    for label, chosen in cases:
        got, err = call_learner(repeat_rates, (chosen.clone(),), "repeat_rates", label)
        if err is not None:
            return err
        want = reference_repeat_rates(chosen)
        try:
            got = tuple(float(x) for x in got)
            assert len(got) == 2
        except Exception:
            return ExerciseResult(False, f"case {label}: return two numbers (same_top1, shared_any), got {got!r}.")
        if all(math.isclose(g, w, abs_tol=1e-6) for g, w in zip(got, want)):
            continue
        for fix, wrong in _repeat_mistakes(chosen):
            if all(math.isclose(g, w, abs_tol=1e-6) for g, w in zip(got, wrong)):
                return ExerciseResult(False, f"case {label}: got ({got[0]:.3f}, {got[1]:.3f}), expected "
                                             f"({want[0]:.3f}, {want[1]:.3f}).\nHint: {fix}")
        which = "same_top1" if not math.isclose(got[0], want[0], abs_tol=1e-6) else "shared_any"
        return ExerciseResult(False, f"case {label}: got ({got[0]:.3f}, {got[1]:.3f}), expected ({want[0]:.3f}, "
                                     f"{want[1]:.3f}): {which} differs.\nHint: pair token t with token t + 1; "
                                     "same_top1 compares column 0; shared_any asks whether the two rows share any "
                                     "expert.")
    return ExerciseResult(True, f"repeat_rates agrees on all {len(cases)} cases.")


def chance_shared_any(num_experts: int, top_k: int) -> float:
    """Chance that two independent, uniformly random K-subsets of E experts overlap: 1 - C(E-K, K) / C(E, K)."""
    return 1 - math.comb(num_experts - top_k, top_k) / math.comb(num_experts, top_k)
