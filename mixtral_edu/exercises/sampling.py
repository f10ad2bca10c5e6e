"""Exercises of notebook 08 (lm_head, logits and sampling).

    08.1 find the bug        apply_temperature(scores (B, V), temperature) -> (B, V) new scores
    08.2 implement a variant top_p_filter(scores (B, V), top_p) -> (B, V), tokens outside the nucleus at -inf
    08.3 find the bug        sample_next_token(scores (B, V), temperature, top_k) -> (B,) token ids

The references are the warpers of `mixtral_edu.modeling.generation` (the suite proves them equal
to transformers 4.41.2's) and, for 08.3, the draw `generate` makes: softmax of the warped scores,
one `torch.multinomial` from torch's global generator, which the check seeds itself.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F

from . import CASE, ExerciseResult, NotYet, call, checker, difference, expect_same, name_the_mistake, same
from ..i18n import N_, _
from ..modeling.generation import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

# -- what the checks say (one place; N_ marks them for the catalog, _() translates them when shown) -----

TEMPERATURE_HINTS = {
    "in_place": N_("the values you return are right, but your function also changed the scores it was given. "
                   "In transformers' generate the tensor a warper receives can be the very tensor it keeps as the "
                   "raw logits (output_logits=True). Which operation writes into its input?"),
    "multiply": N_("you multiplied by the temperature. Divide, so that a temperature below 1 makes the gaps "
                   "between scores larger (a sharper distribution)."),
    "probabilities": N_("you returned probabilities (rows sum to 1). A warper returns scores (logits); the softmax "
                        "comes later, once, after all warpers."),
    "softmax_first": N_("divide the raw scores, not a softmax (or log-softmax) of them."),
    "shift": N_("subtracting the same number from every score of a row changes nothing after the softmax: "
                "temperature divides."),
    "revived": N_("tokens an earlier filter removed (-inf) must stay -inf: leave them as they are."),
    "dtype": N_("scores / temperature keeps the scores' dtype: no cast is needed (and none to a whole-number type)."),
    "values": N_("compare your result with scores / temperature on this case."),
}
TOP_P_HINTS = {
    "too_few": N_("you dropped the token whose probability makes the total reach top_p (when the best token alone "
                  "exceeds top_p, nothing would be left). Keep it: the nucleus is the smallest set of best tokens "
                  "whose probabilities add up to at least top_p."),
    "sorted": N_("you returned the scores sorted. Put the decision back in vocabulary order, so token i keeps its "
                 "place (the sampler draws an index into the vocabulary)."),
    "logits_cumsum": N_("the running total must add up probabilities (softmax of the scores), not raw logits."),
    "inverted": N_("you kept the unlikely tail and dropped the nucleus: the best tokens must survive."),
    "not_inf": N_("the right tokens were dropped, but set them to -inf, so that softmax gives them probability 0."),
    "nothing_dropped": N_("nothing was dropped: tokens outside the nucleus must become -inf."),
    "changed_kept": N_("the right tokens survive, but their scores changed: leave kept scores as they were."),
    "one_too_many": N_("you kept one token too many: stop at the first token whose running total reaches top_p "
                       "(that token included)."),
    "kept": N_("the set of kept tokens differs in some rows: sort the probabilities, accumulate them best first, "
               "and keep tokens until the total reaches top_p (that token included)."),
    "dtype": N_("masking scores keeps their dtype: no cast is needed."),
}
SAMPLE_HINTS = {
    "stub_symptom": N_("two symptoms: with top_k = k, each row's draws can only ever be one of k - 1 tokens, and "
                       "changing the temperature does not change your draws at all. Find where each setting acts."),
    "strict_symptom": N_("with top_k = k, each row's draws can only ever be one of k - 1 tokens: count how many "
                         "tokens survive your top-k filter."),
    "temperature_symptom": N_("changing the temperature does not change your draws at all: where does it act?"),
    "multiply": N_("a temperature below 1 must sharpen the distribution: divide the scores by it."),
    "greedy": N_("you always take the most likely token (greedy). Sampling draws one token at random from the "
                 "softmax of the warped scores."),
    "no_top_k": N_("tokens outside the top k were drawn: set every score below the k-th best to -inf first."),
    "top_k_after_softmax": N_("the filter and the temperature act on scores (logits); the softmax comes once, "
                              "after them, right before the draw."),
    "shape": N_("return one id per row, shape (B,): take the drawn column out (squeeze the last dimension only)."),
    "dtype": N_("return the token ids as torch.multinomial gives them (torch.long)."),
    "rng": N_("your draws differ from generate's for the same seed: draw once per row with torch.multinomial "
              "from torch's global generator, after the softmax of the warped scores."),
}
PASSED = N_("{name} agrees with {ref} on all {n} cases.")
PASSED_UNCHANGED = N_("{name} agrees with {ref} on all {n} cases. The scores passed in stay as they were.")


def _scores(seed: int, rows: int = 2, vocab: int = 12, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, vocab, generator=g) * scale


# -- 08.1 temperature: find the bug ---------------------------------------------------------------------

def reference_temperature(scores: torch.Tensor, temperature: float) -> torch.Tensor:
    return TemperatureLogitsWarper(temperature)(None, scores)


def _temperature_cases():
    with_filtered = _scores(2)
    with_filtered[0, :4] = -float("inf")          # tokens an earlier filter removed stay removed
    return [(N_("temperature 0.5 (sharper)"), _scores(1), 0.5),
            (N_("temperature 2.0 (flatter)"), _scores(1), 2.0),
            (N_("temperature 1.0 (no change)"), _scores(3), 1.0),
            (N_("temperature 0.7 with some scores already -inf"), with_filtered, 0.7)]


def _temperature_mistakes(scores, t):
    return [
        (TEMPERATURE_HINTS["multiply"], lambda: scores * t),
        (TEMPERATURE_HINTS["probabilities"], lambda: F.softmax(scores / t, -1)),
        (TEMPERATURE_HINTS["probabilities"], lambda: F.softmax(scores, -1)),
        (TEMPERATURE_HINTS["softmax_first"], lambda: F.softmax(scores, -1) / t),
        (TEMPERATURE_HINTS["softmax_first"], lambda: F.log_softmax(scores, -1) / t),
        (TEMPERATURE_HINTS["shift"], lambda: scores - torch.log(torch.tensor(t))),
        (TEMPERATURE_HINTS["revived"], lambda: torch.nan_to_num(scores / t, neginf=0.0)),
    ]


@checker
def check_temperature(apply_temperature: Callable) -> ExerciseResult:
    """apply_temperature(scores (B, V), temperature) -> (B, V) scores, a new tensor; the input left alone."""
    cases = _temperature_cases()
    for label, scores, t in cases:
        given, kept = scores.clone(), scores.clone()
        got = call(apply_temperature, given, t, name="apply_temperature", label=label)
        want = reference_temperature(scores, t)
        problem = difference(got, want, atol=1e-5, what=N_("the result"))
        if problem is not None and problem.kind == "dtype":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), TEMPERATURE_HINTS["dtype"])
        expect_same(got, want, label, lambda: name_the_mistake(got, _temperature_mistakes(scores, t)) or
                    TEMPERATURE_HINTS["values"], atol=1e-5)
        if not same(given, kept, atol=0.0) and t != 1.0:
            raise NotYet(_("case {label}: the scores passed in were changed.").format(label=_(label)),
                         TEMPERATURE_HINTS["in_place"])
    return ExerciseResult(True, _(PASSED_UNCHANGED).format(name="apply_temperature", ref="TemperatureLogitsWarper",
                                                           n=len(cases)))


# -- 08.2 top-p: implement a variant ---------------------------------------------------------------------

def reference_top_p(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    return TopPLogitsWarper(top_p)(None, scores)


def _top_p_cases():
    peaked = _scores(6, rows=2, vocab=12, scale=1.0)
    peaked[0, 5] = 8.0                            # row 0: one token holds almost all the mass
    return [(N_("top_p 0.9, two rows"), _scores(4), 0.9),
            (N_("top_p 0.5, vocabulary of 20"), _scores(5, rows=3, vocab=20), 0.5),
            (N_("top_p 0.3, one token above top_p by itself in row 0"), peaked, 0.3),
            (N_("top_p 0.05 (keeps only the best token)"), _scores(7), 0.05),
            (N_("top_p 0.8, 6 rows of 30 tokens"), _scores(8, rows=6, vocab=30, scale=1.5), 0.8)]


def _drop_in_vocab_order(scores, drop_sorted, idx):
    return scores.masked_fill(drop_sorted.scatter(1, idx, drop_sorted), -float("inf"))


def _top_p_mistakes(scores: torch.Tensor, top_p: float):
    desc, idx = torch.sort(scores, descending=True)
    cum = desc.softmax(-1).cumsum(-1)
    before = cum - desc.softmax(-1)
    logits_cum = desc.cumsum(-1)
    drop_logits = torch.zeros_like(cum, dtype=torch.bool)
    drop_logits[:, 1:] = logits_cum[:, :-1] >= top_p
    one_more = torch.zeros_like(cum, dtype=torch.bool)
    one_more[:, 2:] = before[:, 1:-1] >= top_p        # keeps the token after the one that reaches top_p
    return [
        (TOP_P_HINTS["too_few"], lambda: _drop_in_vocab_order(scores, cum > top_p, idx)),
        (TOP_P_HINTS["too_few"], lambda: _drop_in_vocab_order(scores, cum >= top_p, idx)),
        (TOP_P_HINTS["sorted"], lambda: reference_top_p(desc, top_p)),
        (TOP_P_HINTS["logits_cumsum"], lambda: _drop_in_vocab_order(scores, drop_logits, idx)),
        (TOP_P_HINTS["inverted"], lambda: scores.masked_fill(torch.isfinite(reference_top_p(scores, top_p)),
                                                             -float("inf"))),
        (TOP_P_HINTS["one_too_many"], lambda: _drop_in_vocab_order(scores, one_more, idx)),
    ]


def _top_p_hint(got, scores, top_p, want) -> str:
    known = name_the_mistake(got, _top_p_mistakes(scores, top_p), atol=1e-6)
    if known:
        return known
    dropped = ~torch.isfinite(want)
    if bool(torch.isfinite(got).all()) and bool(dropped.any()):
        kept_as_they_were = same(got[~dropped], scores[~dropped], atol=1e-6)
        if kept_as_they_were and not same(got[dropped], scores[dropped], atol=1e-6):
            return TOP_P_HINTS["not_inf"]
        return TOP_P_HINTS["nothing_dropped"]
    if torch.equal(torch.isfinite(got), ~dropped):
        return TOP_P_HINTS["changed_kept"]
    return TOP_P_HINTS["kept"]


@checker
def check_top_p(top_p_filter: Callable) -> ExerciseResult:
    """top_p_filter(scores (B, V), top_p) -> (B, V): tokens outside the nucleus set to -inf, the rest unchanged."""
    cases = _top_p_cases()
    for label, scores, p in cases:
        got = call(top_p_filter, scores.clone(), p, name="top_p_filter", label=label)
        want = reference_top_p(scores, p)
        problem = difference(got, want, atol=1e-6, what=N_("the result"))
        if problem is not None and problem.kind == "dtype":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), TOP_P_HINTS["dtype"])
        expect_same(got, want, label, lambda: _top_p_hint(got, scores, p, want), atol=1e-6)
    return ExerciseResult(True, _(PASSED).format(name="top_p_filter", ref="TopPLogitsWarper", n=len(cases)))


# -- 08.3 one sampling step: find the bug ---------------------------------------------------------------

def reference_sample(scores: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """generate's step with do_sample=True: temperature, then top-k, softmax, one multinomial draw per row."""
    for warper in (TemperatureLogitsWarper(temperature), TopKLogitsWarper(top_k)):
        scores = warper(None, scores)
    probs = F.softmax(scores, dim=-1)                                    # (B, V)
    return torch.multinomial(probs, num_samples=1).squeeze(1)            # (B,)


def _sample_cases() -> List[Tuple[str, torch.Tensor, float, int, int]]:
    return [(N_("200 rows, temperature 0.5, top_k 4"), _scores(11, rows=200, vocab=12, scale=1.0), 0.5, 4, 101),
            (N_("200 rows, temperature 2.0, top_k 12 (= V: nothing cut)"), _scores(12, rows=200, vocab=12), 2.0, 12,
             102),
            (N_("200 rows, temperature 1.0, top_k 3"), _scores(13, rows=200, vocab=12, scale=1.0), 1.0, 3, 103),
            (N_("1 row, temperature 0.7, top_k 5"), _scores(14, rows=1, vocab=12), 0.7, 5, 104)]


def _warped_draw(scores, *, t_scores=None, t_probs=1.0, k=None, strict=False, greedy=False):
    """One draw computed with a known change; the caller has seeded the generator."""
    s = scores / t_scores if t_scores is not None else scores
    if k is not None:
        kth = torch.topk(s, k, dim=-1).values[:, -1:]
        s = s.masked_fill(s <= kth if strict else s < kth, -float("inf"))
    probs = F.softmax(s, dim=-1) / t_probs
    if greedy:
        return probs.argmax(-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def _seeded(seed: int, fn: Callable) -> Callable:
    def run():
        torch.manual_seed(seed)
        return fn()
    return run


def _sample_mistakes(scores, t, k, seed):
    return [(hint, _seeded(seed, fn)) for hint, fn in [
        (SAMPLE_HINTS["stub_symptom"], lambda: _warped_draw(scores, t_probs=t, k=k, strict=True)),
        (SAMPLE_HINTS["strict_symptom"], lambda: _warped_draw(scores, t_scores=t, k=k, strict=True)),
        (SAMPLE_HINTS["temperature_symptom"], lambda: _warped_draw(scores, t_probs=t, k=k)),
        (SAMPLE_HINTS["multiply"], lambda: _warped_draw(scores, t_scores=1 / t, k=k)),
        (SAMPLE_HINTS["greedy"], lambda: _warped_draw(scores, k=k, greedy=True)),
        (SAMPLE_HINTS["no_top_k"], lambda: _warped_draw(scores, t_scores=t)),
    ]]


@checker
def check_sample_next_token(sample_next_token: Callable) -> ExerciseResult:
    """sample_next_token(scores (B, V), temperature, top_k) -> (B,) ids, drawn as generate draws them."""
    cases = _sample_cases()
    for label, scores, t, k, seed in cases:
        torch.manual_seed(seed)
        got = call(sample_next_token, scores.clone(), t, k, name="sample_next_token", label=label)
        torch.manual_seed(seed)
        want = reference_sample(scores, t, k)
        problem = difference(got, want, what=N_("the token ids"))
        if problem is not None and problem.kind == "shape":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), SAMPLE_HINTS["shape"])
        if problem is not None and problem.kind == "dtype":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), SAMPLE_HINTS["dtype"])
        expect_same(got, want, label, lambda: name_the_mistake(got, _sample_mistakes(scores, t, k, seed)) or
                    SAMPLE_HINTS["rng"], what=N_("the token ids"))
    return ExerciseResult(True, _(PASSED).format(name="sample_next_token", ref=_("generate's draw (same seed)"),
                                              n=len(cases)))


EXERCISES = {
    "08.1": ("apply_temperature", check_temperature),
    "08.2": ("top_p_filter", check_top_p),
    "08.3": ("sample_next_token", check_sample_next_token),
}
