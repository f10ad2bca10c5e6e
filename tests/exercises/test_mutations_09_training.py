"""Plausible wrong answers to notebook 09's exercises: each gets NOT YET with a hint naming the mistake."""
import math

import torch
import torch.nn.functional as F

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import training as ex
from mixtral_edu.modeling.moe import load_balancing_loss_func


# -- 09.1 the learning-rate schedule ---------------------------------------------------------------------

def _lr(step, r, start=1, lo=None, progress_from_zero=False, decay="cosine", warm=True):
    if warm and step < r.warmup:
        return r.lr * (step + start) / r.warmup
    lo = r.min_lr if lo is None else lo
    p = step / max(1, r.steps) if progress_from_zero else (step - r.warmup) / max(1, r.steps - r.warmup)
    if decay == "linear":
        return r.lr - (r.lr - lo) * p
    if decay == "constant":
        return r.lr
    return lo + 0.5 * (r.lr - lo) * (1 + math.cos(math.pi * p))


SCHEDULE = [
    Mutant("09.1", "warm-up from 0", lambda s, r: _lr(s, r, start=0), ["step 0"]),
    Mutant("09.1", "no warm-up", lambda s, r: _lr(s, r, warm=False, progress_from_zero=True), ["warm-up"]),
    Mutant("09.1", "cosine down to 0", lambda s, r: _lr(s, r, lo=0.0), ["min_lr"]),
    Mutant("09.1", "progress from step 0", lambda s, r: _lr(s, r, progress_from_zero=True), ["end of warm-up"]),
    Mutant("09.1", "linear decay", lambda s, r: _lr(s, r, decay="linear"), ["cosine"]),
    Mutant("09.1", "constant after warm-up", lambda s, r: _lr(s, r, decay="constant"), ["constant"]),
    Mutant("09.1", "a string", lambda s, r: str(_lr(s, r)), ["number"]),
    Mutant("09.1", "NaN", lambda s, r: float("nan"), ["NaN"]),
]


# -- 09.4 repetition rates -----------------------------------------------------------------------------------

def _rates(chosen, pairs_over="pairs", overlap="any", as_counts=False):
    a, b = chosen[:-1], chosen[1:]
    top1 = (a[:, 0] == b[:, 0]).float()
    if overlap == "any":
        shared = (a[:, :, None] == b[:, None, :]).any(-1).any(-1).float()
    elif overlap == "slotwise":
        shared = (a == b).any(-1).float()
    elif overlap == "one way":
        shared = (b[:, :1] == a).any(-1).float()
    else:
        shared = top1
    if as_counts:
        return top1.sum().item(), shared.sum().item()
    n = len(chosen) if pairs_over == "tokens" else len(chosen) - 1
    return top1.sum().item() / n, shared.sum().item() / n


REPEAT = [
    Mutant("09.4", "divided by T", lambda c: _rates(c, pairs_over="tokens"), ["T - 1"]),
    Mutant("09.4", "slot by slot", lambda c: _rates(c, overlap="slotwise"), ["slot by slot"]),
    Mutant("09.4", "one way", lambda c: _rates(c, overlap="one way"), ["overlap at all"]),
    Mutant("09.4", "top-1 twice", lambda c: _rates(c, overlap="top1"), ["top-K sets"]),
    Mutant("09.4", "counts", lambda c: _rates(c, as_counts=True), ["counts"]),
    Mutant("09.4", "one number", lambda c: _rates(c)[0], ["two numbers"]),
    Mutant("09.4", "NaN", lambda c: (float("nan"), float("nan")), ["NaN"]),
]


# -- 09.2 top-1 routing ------------------------------------------------------------------------------------------

def _top1(l, probs=None, renorm=False, cast=True, detach=False, keepdim=True, index_dtype=None):
    probs = F.softmax(l, dim=-1, dtype=torch.float) if probs is None else probs
    w, e = torch.topk(probs, 1, dim=-1)
    if renorm:
        w = w / w.sum(-1, keepdim=True)
    if detach:
        w = w.detach()
    w = w.to(l.dtype) if cast else w
    if not keepdim:
        w, e = w[:, 0], e[:, 0]
    return w, (e if index_dtype is None else e.to(index_dtype))


TOP1 = [
    Mutant("09.2", "renormalised (Mixtral's code with K = 1)", lambda l: _top1(l, renorm=True), ["itself", "gradient"]),
    Mutant("09.2", "the logit as weight", lambda l: _top1(l, probs=l.float()), ["logits"]),
    Mutant("09.2", "softmax over the tokens", lambda l: _top1(l, probs=F.softmax(l.float(), dim=0)), ["tokens"]),
    Mutant("09.2", "softmax in bfloat16", lambda l: _top1(l, probs=F.softmax(l, dim=-1)), ["float32"]),
    Mutant("09.2", "sigmoid", lambda l: _top1(l, probs=torch.sigmoid(l.float())), ["sigmoid"]),
    Mutant("09.2", "weights detached", lambda l: _top1(l, detach=True), ["no gradient"]),
    Mutant("09.2", "the K dimension dropped", lambda l: _top1(l, keepdim=False), ["(N, 1)"]),
    Mutant("09.2", "weights left in float32", lambda l: _top1(l, cast=False), ["cast"]),
    Mutant("09.2", "int32 experts", lambda l: _top1(l, index_dtype=torch.int32), ["torch.long"]),
]


# -- 09.3 balancing loss per layer ----------------------------------------------------------------------------------

def _per_layer(gate_logits, e, k, reduce="mean", slot_share=False, top1=False, p_from_logits=False, p_dim=-1):
    losses = []
    for logits in gate_logits:
        probs = F.softmax(logits, dim=p_dim)
        chosen = torch.topk(F.softmax(logits, dim=-1), 1 if top1 else k, dim=-1).indices
        f = F.one_hot(chosen, e).float().mean(0)
        if slot_share:
            f = f / f.shape[0]
        p = logits.mean(0) if p_from_logits else probs.mean(0)
        losses.append(float((f * p[None]).sum() * e))
    return {"mean": sum(losses) / len(losses), "sum": sum(losses), "max": max(losses)}[reduce]


BALANCE = [
    Mutant("09.3", "pooled over the layers", lambda g, e, k: load_balancing_loss_func(tuple(g), e, k), ["pooled"]),
    Mutant("09.3", "summed over the layers", lambda g, e, k: _per_layer(g, e, k, reduce="sum"), ["average"]),
    Mutant("09.3", "the worst layer", lambda g, e, k: _per_layer(g, e, k, reduce="max"), ["worst layer"]),
    Mutant("09.3", "f as a share of all slots", lambda g, e, k: _per_layer(g, e, k, slot_share=True), ["per top-k slot"]),
    Mutant("09.3", "f from the first choice only", lambda g, e, k: _per_layer(g, e, k, top1=True), ["all K choices"]),
    Mutant("09.3", "P from the logits", lambda g, e, k: _per_layer(g, e, k, p_from_logits=True), ["probability"]),
    Mutant("09.3", "softmax over the tokens", lambda g, e, k: _per_layer(g, e, k, p_dim=0), ["over the tokens"]),
    Mutant("09.3", "a list per layer", lambda g, e, k: [float(load_balancing_loss_func((x,), e, k)) for x in g],
           ["one number"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, SCHEDULE + REPEAT + TOP1 + BALANCE)
