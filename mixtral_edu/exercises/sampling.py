"""Exercises of notebook 08 (lm_head, logits and sampling): temperature, and the top-p filter.

    check_temperature(apply_temperature)  apply_temperature(scores (B, V), temperature) -> (B, V)
    check_top_p(top_p_filter)             top_p_filter(scores (B, V), top_p) -> (B, V), dropped tokens at -inf

Both compare the learner's function with the warpers of `mixtral_edu.modeling.generation`
(which the test suite proves equal to transformers 4.41.2's) on several cases, and
name the mistake when the answer matches one we know.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch

from . import ExerciseResult, call_learner, dtype_failure
from ..modeling.generation import TemperatureLogitsWarper, TopPLogitsWarper


def _same(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> bool:
    """Equal shapes, the same -inf cells, finite cells within atol."""
    if a.shape != b.shape:
        return False
    ia, ib = torch.isneginf(a), torch.isneginf(b)
    if not torch.equal(ia, ib):
        return False
    return bool(((a[~ia].float() - b[~ib].float()).abs() <= atol).all())


def _scores(seed: int, rows: int = 2, vocab: int = 12, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale


# -- temperature --------------------------------------------------------------------

def reference_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    return TemperatureLogitsWarper(temperature)(None, scores)


def check_temperature(apply_temperature: Callable) -> ExerciseResult:
    """apply_temperature(scores (B, V), temperature) -> (B, V) scores, not probabilities."""
    with_filtered = _scores(2)
    with_filtered[0, :4] = -float("inf")          # tokens an earlier filter removed stay removed
    cases = [("temperature 0.5 (sharper)", _scores(1), 0.5),
             ("temperature 2.0 (flatter)", _scores(1), 2.0),
             ("temperature 1.0 (no change)", _scores(3), 1.0),
             ("temperature 0.7 with some scores already -inf", with_filtered, 0.7)]
    for label, scores, t in cases:
        got, err = call_learner(apply_temperature, (scores.clone(), t), "apply_temperature", label)
        if err is not None:
            return err
        want = reference_temperature(scores, t)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return ExerciseResult(False, f"case {label}: return a tensor of the scores' shape {tuple(want.shape)}.")
        if _same(got, want, 1e-5):
            failure = dtype_failure(label, got, want,  # _same compares in float32
                                    "scores / temperature keeps the scores' dtype: no cast is needed.")
            if failure is None:
                continue
            return failure
        if _same(got, scores * t, 1e-5):
            return ExerciseResult(False, f"case {label}: you multiplied by the temperature. Divide: "
                                         "scores / temperature, so that a temperature below 1 makes the "
                                         "gaps between scores larger (a sharper distribution).")
        finite = torch.isfinite(got)
        if finite.any() and torch.allclose(torch.where(finite, got, torch.zeros_like(got)).sum(-1),
                                           torch.ones(got.shape[0]), atol=1e-4):
            return ExerciseResult(False, f"case {label}: you returned probabilities (rows sum to 1). A warper "
                                         "returns scores (logits); the softmax comes later, once, after all warpers.")
        if _same(got, torch.softmax(scores, -1) / t, 1e-5) or _same(got, torch.log_softmax(scores, -1) / t, 1e-5):
            return ExerciseResult(False, f"case {label}: divide the raw scores, not a softmax of them.")
        return ExerciseResult(False, f"case {label}: values differ from scores / temperature by up to "
                                     f"{(got - want)[torch.isfinite(want)].abs().max().item():.3g}.")
    return ExerciseResult(True, f"apply_temperature agrees with TemperatureLogitsWarper on all {len(cases)} cases.")


# -- top-p ------------------------------------------------------------------------------

def reference_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    return TopPLogitsWarper(top_p)(None, scores)


def _top_p_mistakes(scores: torch.Tensor, top_p: float) -> List[Tuple[str, torch.Tensor]]:
    """Answers that typical mistakes produce, with the fix for each."""
    inf = -float("inf")
    desc, idx = torch.sort(scores, descending=True)
    cum = desc.softmax(-1).cumsum(-1)
    # keep while the cumulative mass (best first) stays below top_p, forgetting the token that crosses it
    drop_strict = cum > top_p
    too_few = scores.masked_fill(drop_strict.scatter(1, idx, drop_strict), inf)
    # the kept set computed right, but left in sorted order
    want_sorted = reference_top_p(desc, top_p)
    # summing raw logits instead of probabilities
    cum_logits = desc.cumsum(-1)
    drop_logits = torch.zeros_like(drop_strict)
    drop_logits[:, 1:] = cum_logits[:, :-1] >= top_p
    on_logits = scores.masked_fill(drop_logits.scatter(1, idx, drop_logits), inf)
    # the complement: the tail kept, the nucleus dropped
    kept = torch.isfinite(reference_top_p(scores, top_p))
    inverted = scores.masked_fill(kept, inf)
    return [
        ("you dropped the token whose probability makes the total cross top_p (when the best token alone "
         "exceeds top_p, nothing is left). Keep it: the nucleus is the smallest set of best tokens whose "
         "probabilities add up to at least top_p.", too_few),
        ("you returned the scores sorted. Scatter the decision back so token i keeps its place in the "
         "vocabulary (the sampler draws an index into the vocabulary).", want_sorted),
        ("the cumulative sum must run over probabilities (softmax of the scores), not over raw logits.", on_logits),
        ("you kept the unlikely tail and dropped the nucleus: the best tokens must survive.", inverted),
    ]


def check_top_p(top_p_filter: Callable) -> ExerciseResult:
    """top_p_filter(scores (B, V), top_p) -> (B, V): tokens outside the nucleus set to -inf, the rest unchanged."""
    peaked = _scores(6, rows=2, vocab=12, scale=1.0)
    peaked[0, 5] = 8.0                            # row 0: one token holds almost all the mass
    cases = [("top_p 0.9, two rows", _scores(4), 0.9),
             ("top_p 0.5, vocabulary of 20", _scores(5, rows=3, vocab=20), 0.5),
             ("top_p 0.3, one token above top_p by itself in row 0", peaked, 0.3),
             ("top_p 0.05 (keeps only the best token)", _scores(7), 0.05)]
    for label, scores, p in cases:
        got, err = call_learner(top_p_filter, (scores.clone(), p), "top_p_filter", label)
        if err is not None:
            return err
        want = reference_top_p(scores, p)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            return ExerciseResult(False, f"case {label}: return a tensor of the scores' shape {tuple(want.shape)}.")
        if _same(got, want):
            failure = dtype_failure(label, got, want,  # _same compares in float32
                                    "masked_fill on the scores keeps their dtype: no cast is needed.")
            if failure is None:
                continue
            return failure
        if torch.isfinite(got).all() and not torch.isfinite(want).all():
            if torch.equal(got == 0, ~torch.isfinite(want)) or torch.equal(got == -1e9, ~torch.isfinite(want)):
                return ExerciseResult(False, f"case {label}: the right tokens were dropped, but set them to "
                                             "-inf (filter_value), so that softmax gives them probability 0.")
            return ExerciseResult(False, f"case {label}: nothing was dropped. Tokens outside the nucleus must "
                                         "become -inf.")
        for fix, wrong in _top_p_mistakes(scores, p):
            if _same(got, wrong):
                return ExerciseResult(False, f"case {label}: {fix}")
        kept_got, kept_want = torch.isfinite(got), torch.isfinite(want)
        if torch.equal(kept_got, kept_want):
            return ExerciseResult(False, f"case {label}: the right tokens survive, but their scores changed: "
                                         "leave kept scores as they were (no renormalising here).")
        return ExerciseResult(False, f"case {label}: kept tokens per row {kept_got.sum(-1).tolist()}, expected "
                                     f"{kept_want.sum(-1).tolist()}. Hint: sort the probabilities, accumulate, and "
                                     "keep the best tokens until their total reaches top_p (that token included).")
    return ExerciseResult(True, f"top_p_filter agrees with TopPLogitsWarper on all {len(cases)} cases.")
