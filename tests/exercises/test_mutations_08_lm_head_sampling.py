"""Plausible wrong answers to notebook 08's exercises: each gets NOT YET with a hint naming the mistake."""
import math

import torch
import torch.nn.functional as F

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import sampling as ex


# -- 08.1 temperature ------------------------------------------------------------------------------------

def temperature_stub(scores, temperature):                 # the notebook's broken function, untouched
    scores /= temperature
    return scores


def div_in_place(scores, temperature):
    return scores.div_(temperature)


TEMPERATURE = [
    Mutant("08.1", "in place with /= (the stub)", temperature_stub, ["changed the scores"]),
    Mutant("08.1", "in place with div_", div_in_place, ["changed the scores"]),
    Mutant("08.1", "multiplied", lambda s, t: s * t, ["multiplied"]),
    Mutant("08.1", "probabilities", lambda s, t: F.softmax(s / t, -1), ["probabilities"]),
    Mutant("08.1", "softmax, then divided", lambda s, t: F.softmax(s, -1) / t, ["raw scores"]),
    Mutant("08.1", "a shift by log t", lambda s, t: s - math.log(t), ["subtracting"]),
    Mutant("08.1", "removed tokens revived", lambda s, t: torch.nan_to_num(s / t, neginf=0.0), ["-inf"]),
    Mutant("08.1", "a long tensor", lambda s, t: (s / t).long(), ["dtype"]),
    Mutant("08.1", "NaN", lambda s, t: s / t * float("nan"), ["NaN"]),
]


# -- 08.2 top-p --------------------------------------------------------------------------------------------

def _top_p(scores, top_p, rule="before", sorted_out=False, fill=-float("inf"), over=None):
    probs, order = torch.sort(scores.softmax(-1), descending=True)
    cum = probs.cumsum(-1) if over is None else over(scores, order).cumsum(-1)
    if rule == "before":
        drop = (cum - probs) >= top_p
        drop[:, 0] = False
    elif rule == "crossing":
        drop = cum > top_p
    else:   # one extra token
        drop = torch.zeros_like(cum, dtype=torch.bool)
        drop[:, 2:] = (cum - probs)[:, 1:-1] >= top_p
    if sorted_out:
        return torch.sort(scores, descending=True).values.masked_fill(drop, fill)
    return scores.masked_fill(drop.scatter(1, order, drop), fill)


def on_logits(scores, top_p):
    desc, order = torch.sort(scores, descending=True)
    drop = torch.zeros_like(desc, dtype=torch.bool)
    drop[:, 1:] = desc.cumsum(-1)[:, :-1] >= top_p
    return scores.masked_fill(drop.scatter(1, order, drop), -float("inf"))


def inverted(scores, top_p):
    kept = torch.isfinite(_top_p(scores, top_p))
    return scores.masked_fill(kept, -float("inf"))


def renormalised(scores, top_p):
    out = _top_p(scores, top_p)
    return torch.log_softmax(out, -1)


TOP_P = [
    Mutant("08.2", "drops the token that crosses top_p", lambda s, p: _top_p(s, p, rule="crossing"),
           ["reach top_p", "keep it"]),
    Mutant("08.2", "left in sorted order", lambda s, p: _top_p(s, p, sorted_out=True), ["sorted"]),
    Mutant("08.2", "running total of logits", on_logits, ["probabilities"]),
    Mutant("08.2", "keeps the tail", inverted, ["tail"]),
    Mutant("08.2", "dropped tokens set to -1e9", lambda s, p: _top_p(s, p, fill=-1e9), ["-inf"]),
    Mutant("08.2", "nothing dropped", lambda s, p: s.clone(), ["nothing was dropped"]),
    Mutant("08.2", "kept scores renormalised", renormalised, ["changed"]),
    Mutant("08.2", "one token too many", lambda s, p: _top_p(s, p, rule="extra"), ["one token too many"]),
    Mutant("08.2", "float64", lambda s, p: _top_p(s, p).double(), ["dtype"]),
    Mutant("08.2", "NaN", lambda s, p: _top_p(s, p) * float("nan"), ["NaN"]),
]


# -- 08.3 one sampling step ----------------------------------------------------------------------------------

def sample_stub(scores, temperature, top_k):                # the notebook's broken function, untouched
    kth_best = torch.topk(scores, top_k, dim=-1).values[:, -1:]
    scores = scores.masked_fill(scores <= kth_best, float("-inf"))
    probs = F.softmax(scores, dim=-1) / temperature
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def _sample(scores, t, k, strict=False, t_where="scores", top_k=True, draw="multinomial", squeeze=True):
    if t_where == "scores":
        scores = scores / t
    elif t_where == "multiply":
        scores = scores * t
    if top_k:
        kth = torch.topk(scores, k, dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores <= kth if strict else scores < kth, float("-inf"))
    probs = F.softmax(scores, dim=-1)
    if t_where == "probs":
        probs = probs / t
    if draw == "argmax":
        return probs.argmax(-1)
    if draw == "own generator":
        return torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(0)).squeeze(1)
    out = torch.multinomial(probs, 1)
    return out.squeeze(1) if squeeze else out


SAMPLE = [
    Mutant("08.3", "both bugs (the stub)", sample_stub, ["k - 1", "temperature"]),
    Mutant("08.3", "keeps k - 1 tokens", lambda s, t, k: _sample(s, t, k, strict=True), ["k - 1"]),
    Mutant("08.3", "temperature after the softmax", lambda s, t, k: _sample(s, t, k, t_where="probs"),
           ["temperature", "does not change"]),
    Mutant("08.3", "multiplied by the temperature", lambda s, t, k: _sample(s, t, k, t_where="multiply"),
           ["divide"]),
    Mutant("08.3", "greedy", lambda s, t, k: _sample(s, t, k, draw="argmax"), ["greedy"]),
    Mutant("08.3", "no top-k", lambda s, t, k: _sample(s, t, k, top_k=False), ["top k"]),
    Mutant("08.3", "its own generator", lambda s, t, k: _sample(s, t, k, draw="own generator"), ["global generator"]),
    Mutant("08.3", "(B, 1) ids", lambda s, t, k: _sample(s, t, k, squeeze=False), ["(B,)"]),
    Mutant("08.3", "int32 ids", lambda s, t, k: _sample(s, t, k).int(), ["torch.long"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, TEMPERATURE + TOP_P + SAMPLE)
