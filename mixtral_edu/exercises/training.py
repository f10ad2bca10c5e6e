"""Exercises of notebook 09 (training the tiny model).

    09.1 predict             lr_schedule(step, recipe) -> learning rate at that step
    09.2 implement a variant route_top1(router_logits (N, E)) -> (weights (N, 1), experts (N, 1)), Switch style
    09.3 implement a variant per_layer_balancing_loss(gate_logits, num_experts, top_k) -> float
    09.4 experiment          repeat_rates(chosen (T, K)) -> (same_top1, shared_any)

(The shifted cross-entropy and the load-balancing loss itself are exercises of notebook 03.)
"""
from __future__ import annotations

import math
from typing import Callable, List, Tuple

import torch
import torch.nn.functional as F

from . import CASE, ExerciseResult, NotYet, call, checker, difference, expect_same, name_the_mistake
from ._across_cases import answers, most_consistent
from ..i18n import N_, _
from ..modeling.moe import load_balancing_loss_func
from ..tiny.evaluate import repeat_rates as _repeat_rates
from ..tiny.train import Recipe, lr_at

# -- what the checks say (one place; N_ marks them for the catalog, _() translates them when shown) -----

SCHEDULE_HINTS = {
    "zero_start": N_("warm-up starts at lr / warmup at step 0, not at 0 (a zero step would waste a batch): "
                     "step 0 is the first of the warmup steps."),
    "no_warmup": N_("the first `warmup` steps ramp linearly up to lr; your rate has no warm-up."),
    "cosine_to_zero": N_("the cosine ends at min_lr, not at 0."),
    "progress": N_("measure the cosine's progress from the end of warm-up, over the steps - warmup steps that "
                   "remain, not from step 0."),
    "linear": N_("after warm-up the rate follows a cosine (half a period), not a straight line."),
    "constant": N_("a constant rate after warm-up is not this recipe: it decays along a cosine to min_lr."),
    "number": N_("return the learning rate as a number (a float)."),
    "values": N_("check both phases on this step: a linear ramp that reaches lr at step warmup - 1, then half a "
                 "cosine from lr down to min_lr at the last step."),
}
REPEAT_HINTS = {
    "pairs": N_("there are T - 1 neighbouring pairs, not T: divide by the number of pairs."),
    "slotwise": N_("comparing slot by slot misses an expert that was second for one token and first for the next: "
                   "compare every expert of one token with every expert of the other."),
    "one_way": N_("the second number asks whether the two tokens' K experts overlap at all; you checked only "
                  "whether the next token's best expert is among the previous token's K."),
    "top1_twice": N_("the second number is about the whole top-K sets, not only the first choices."),
    "counts": N_("return shares (between 0 and 1) of the T - 1 pairs, not counts."),
    "pair": N_("return two numbers: (same_top1, shared_any)."),
    "values": N_("pair token t with token t + 1; same_top1 compares the first choices; shared_any asks whether "
                 "the two rows share any expert."),
}
TOP1_HINTS = {
    "renormalised": N_("every weight you return is 1: renormalising a single kept probability divides it by "
                       "itself. That is what Mixtral's code does with top_k = 1, and it leaves the router without "
                       "a gradient from the language-model loss. Keep the probability itself."),
    "logit": N_("those are logits: the weight is the router's softmax probability of the chosen expert."),
    "dim0": N_("your softmax ran over the tokens (dim 0); it must run over the experts (the last dim)."),
    "bf16_softmax": N_("with bfloat16 logits your function picks other experts than a float32 softmax would, "
                       "where experts are nearly tied: run the softmax in float32."),
    "sigmoid": N_("a sigmoid scores each expert on its own; the router's probabilities are a softmax over experts."),
    "shape": N_("keep the K = 1 dimension: weights and experts are both (N, 1), as torch.topk returns them."),
    "cast": N_("cast the weights back to the logits' dtype before they scale the expert's output."),
    "index_dtype": N_("keep the indices as torch.topk returns them (torch.long)."),
    "no_grad": N_("no gradient reaches the router logits through your weights: compute them from the logits with "
                  "differentiable operations (no .detach(), no torch.no_grad(), no new tensor from .item())."),
    "pair": N_("return a pair (weights, experts)."),
    "values": N_("the weight of a token is the softmax probability (over the experts, in float32) of its best expert."),
}
BALANCE_HINTS = {
    "pooled": N_("you pooled all layers before counting, as load_balancing_loss_func does: that is the loss that "
                 "cannot see complementary layers. Compute the loss of each layer on its own, then average."),
    "summed": N_("you added the layers' losses: average them, so that perfectly even routing still scores K."),
    "max": N_("you took the worst layer: average the layers' losses."),
    "slot_share": N_("you counted f as a share of all N*K routing slots (summing to 1). load_balancing_loss_func "
                     "counts, per top-k slot, the share of tokens whose choice in that slot is the expert, and sums "
                     "over the slots: perfectly even routing must score K, not 1."),
    "top1_only": N_("count all K choices of each token in f, not only the first."),
    "p_from_logits": N_("P is the mean router *probability* (softmax over the experts), not the mean logit."),
    "p_dim0": N_("the softmax runs over the experts (last dim), not over the tokens."),
    "number": N_("return one number (a float, or a tensor with one element)."),
    "values": N_("for each layer: P = mean softmax probability per expert, f = per slot the share of tokens that "
                 "chose each expert; the layer's loss is E * sum(f * P); then the mean over layers."),
}


# -- 09.1 the learning-rate schedule -----------------------------------------------------------------

def _schedule_cases() -> List[Tuple[str, int, Recipe]]:
    shipped = Recipe()
    short = Recipe(steps=50, warmup=10, lr=1e-2, min_lr=1e-3)
    cases = [(_("shipped recipe, step {s}").format(s=s), s, shipped)
             for s in (0, 1, shipped.warmup - 1, shipped.warmup, shipped.warmup + 1, shipped.steps // 2,
                       shipped.steps - 1)]
    cases += [(_("steps=50, warmup=10, lr=1e-2, min_lr=1e-3, step {s}").format(s=s), s, short)
              for s in (0, 9, 10, 30, 49)]
    return cases


def _schedule_mistakes(step: int, r: Recipe):
    progress = (step - r.warmup) / max(1, r.steps - r.warmup)
    cosine = lambda lo, p: lo + 0.5 * (r.lr - lo) * (1 + math.cos(math.pi * p))  # noqa: E731
    if step < r.warmup:
        return [(SCHEDULE_HINTS["zero_start"], r.lr * step / r.warmup),
                (SCHEDULE_HINTS["no_warmup"], cosine(r.min_lr, step / max(1, r.steps))),
                (SCHEDULE_HINTS["no_warmup"], r.lr)]
    return [(SCHEDULE_HINTS["cosine_to_zero"], cosine(0.0, progress)),
            (SCHEDULE_HINTS["progress"], cosine(r.min_lr, step / max(1, r.steps))),
            (SCHEDULE_HINTS["linear"], r.lr - (r.lr - r.min_lr) * progress),
            (SCHEDULE_HINTS["constant"], r.lr)]


@checker
def check_lr_schedule(lr_schedule: Callable) -> ExerciseResult:
    """lr_schedule(step, recipe) -> float: linear warm-up, then cosine decay to recipe.min_lr (as train.lr_at)."""
    cases = _schedule_cases()
    for label, step, r in cases:
        got = call(lr_schedule, step, r, name="lr_schedule", label=label)
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = float(got)
        if isinstance(got, int) and not isinstance(got, bool):
            got = float(got)
        want = lr_at(step, r)
        problem = difference(got, want, atol=1e-12, rtol=1e-9, what=N_("the learning rate"))
        if problem is not None and problem.kind == "type":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), SCHEDULE_HINTS["number"])
        expect_same(got, want, label, lambda: name_the_mistake(got, _schedule_mistakes(step, r), atol=1e-12) or
                    SCHEDULE_HINTS["values"], atol=1e-12, rtol=1e-9, what=N_("the learning rate"))
    return ExerciseResult(True, _("lr_schedule agrees with mixtral_edu.tiny.train.lr_at on all {n} cases.").format(
        n=len(cases)))


# -- 09.4 consecutive tokens and their experts ----------------------------------------------------------

def reference_repeat_rates(chosen: torch.Tensor) -> Tuple[float, float]:
    """(same_top1, shared_any) of T consecutive tokens' experts: mixtral_edu.tiny.evaluate.repeat_rates."""
    return _repeat_rates(chosen)


def _repeat_cases() -> List[Tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(9)

    def random_topk(t: int, e: int, k: int) -> torch.Tensor:
        return torch.stack([torch.randperm(e, generator=g)[:k] for _ in range(t)])
    crossed = torch.tensor([[0, 1], [1, 2], [3, 1], [3, 4], [5, 6], [6, 5]])  # shared experts in swapped slots
    return [(N_("T=12 tokens, E=8, K=2"), random_topk(12, 8, 2)),
            (N_("T=6, experts shared across slots (slot 0 of one = slot 1 of the next)"), crossed),
            ("T=9, E=4, K=2", random_topk(9, 4, 2)),
            ("T=7, E=8, K=1", random_topk(7, 8, 1))]


def _repeat_mistakes(chosen: torch.Tensor):
    a, b = chosen[:-1], chosen[1:]
    t = chosen.shape[0]
    top1, anyk = reference_repeat_rates(chosen)
    return [
        (REPEAT_HINTS["pairs"], (top1 * (t - 1) / t, anyk * (t - 1) / t)),
        (REPEAT_HINTS["slotwise"], (top1, (a == b).any(-1).float().mean().item())),
        (REPEAT_HINTS["one_way"], (top1, (b[:, :1] == a).any(-1).float().mean().item())),
        (REPEAT_HINTS["top1_twice"], (top1, top1)),
        (REPEAT_HINTS["counts"], (top1 * (t - 1), anyk * (t - 1))),
    ]


def _numbers(got) -> Tuple[float, ...]:
    return tuple(float(x) for x in got)


@checker
def check_repeat_rates(repeat_rates: Callable) -> ExerciseResult:
    """repeat_rates(chosen (T, K)) -> (same_top1, shared_any), both shares of the T - 1 neighbouring pairs."""
    cases = _repeat_cases()
    results = answers(repeat_rates, [(label, (chosen.clone(),)) for label, chosen in cases], "repeat_rates")

    def as_numbers(got):
        try:
            return _numbers(got)
        except Exception:
            return None
    for (label, chosen), (_label, got, stop) in zip(cases, results):
        if stop is not None:
            raise stop
        numbers = as_numbers(got)
        if numbers is None:
            raise NotYet(_("case {label}: the result is a {kind}.").format(label=_(label), kind=type(got).__name__),
                         REPEAT_HINTS["pair"])
        hint = lambda: most_consistent([(as_numbers(g), _repeat_mistakes(c)) for (_, c), (_, g, _) in  # noqa: E731
                                        zip(cases, results)]) or REPEAT_HINTS["values"]
        expect_same(numbers, reference_repeat_rates(chosen), label, hint, atol=1e-6, what="(same_top1, shared_any)")
    return ExerciseResult(True, _("repeat_rates agrees on all {n} cases.").format(n=len(cases)))


def chance_shared_any(num_experts: int, top_k: int) -> float:
    """Chance that two independent, uniformly random K-subsets of E experts overlap: 1 - C(E-K, K) / C(E, K)."""
    return 1 - math.comb(num_experts - top_k, top_k) / math.comb(num_experts, top_k)


# -- 09.2 top-1 routing, Switch style ----------------------------------------------------------------

def reference_route_top1(router_logits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The Switch Transformer's router: the best expert, weighted by its probability (not renormalised)."""
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float)                 # (N, E)
    weights, experts = torch.topk(probs, 1, dim=-1)                            # (N, 1) each
    return weights.to(router_logits.dtype), experts


def _top1_cases() -> List[Tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(21)
    return [(N_("N=6 tokens, E=8 experts, float32"), torch.randn(6, 8, generator=g) * 2),
            ("N=5, E=4, float32", torch.randn(5, 4, generator=g)),
            (N_("N=16, E=8, bfloat16 logits of a fresh router (experts nearly tied)"),
             (torch.randn(16, 8, generator=g) * 0.05).bfloat16())]


def _top1_mistakes(logits: torch.Tensor):
    def top1(probs, cast=True):
        w, e = torch.topk(probs, 1, dim=-1)
        return (w.to(logits.dtype) if cast else w), e
    return [
        (TOP1_HINTS["renormalised"], lambda: (torch.ones(logits.shape[0], 1, dtype=logits.dtype),
                                              torch.topk(logits.float(), 1, dim=-1).indices)),
        (TOP1_HINTS["logit"], lambda: top1(logits.float())),
        (TOP1_HINTS["dim0"], lambda: top1(F.softmax(logits.float(), dim=0))),
        (TOP1_HINTS["bf16_softmax"], lambda: top1(F.softmax(logits, dim=-1))),
        (TOP1_HINTS["sigmoid"], lambda: top1(torch.sigmoid(logits.float()))),
    ]


def _gradient_reaches(route_top1: Callable, logits: torch.Tensor, label: str) -> bool:
    x = logits.detach().clone().requires_grad_(True)
    got = call(route_top1, x, name="route_top1", label=label)
    w = got[0]
    if not isinstance(w, torch.Tensor) or not w.requires_grad:
        return False
    (w.float() * torch.linspace(1, 2, w.numel()).view(w.shape)).sum().backward()
    return x.grad is not None and bool((x.grad.abs() > 0).any())


@checker
def check_route_top1(route_top1: Callable) -> ExerciseResult:
    """route_top1(router_logits (N, E)) -> (weights (N, 1) in the logits' dtype, experts (N, 1)): the Switch router."""
    cases = _top1_cases()
    for label, logits in cases:
        got = call(route_top1, logits.clone(), name="route_top1", label=label)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise NotYet(_("case {label}: the result is a {kind}.").format(label=_(label), kind=type(got).__name__),
                         TOP1_HINTS["pair"])
        want = reference_route_top1(logits)
        atol = 1e-6 if logits.dtype == torch.float32 else 2 ** -8
        hint = lambda: name_the_mistake(got, _top1_mistakes(logits), atol=atol) or TOP1_HINTS["values"]  # noqa: E731
        for item, ref, what in ((got[1], want[1], N_("experts")), (got[0], want[0], N_("weights"))):
            problem = difference(item, ref, atol=atol, what=what)
            if problem is None:
                continue
            if problem.kind == "shape":
                raise NotYet(_(CASE).format(label=_(label), problem=problem), TOP1_HINTS["shape"])
            if problem.kind == "dtype":
                raise NotYet(_(CASE).format(label=_(label), problem=problem),
                             TOP1_HINTS["cast" if what == "weights" else "index_dtype"])
            expect_same(item, ref, label, hint, atol=atol, what=what)
        if logits.dtype == torch.float32 and not _gradient_reaches(route_top1, logits, label):
            raise NotYet(_("case {label}: the values are right, but the router logits get no gradient.").format(
                label=_(label)),
                         TOP1_HINTS["no_grad"])
    return ExerciseResult(True, _("route_top1 agrees with the Switch router on all {n} cases, and the router logits "
                                  "get a gradient through the weights.").format(n=len(cases)))


# -- 09.3 a balancing loss per layer ---------------------------------------------------------------------

def reference_per_layer_balancing_loss(gate_logits, num_experts: int, top_k: int) -> float:
    """The mean over layers of load_balancing_loss_func applied to each layer alone."""
    return float(torch.stack([load_balancing_loss_func((g,), num_experts, top_k) for g in gate_logits]).mean())


def _confident(pairs, n_experts: int = 8, n_tokens: int = 64) -> torch.Tensor:
    """Router logits (N, E) that pick the given expert pairs in turn, with near-certain probabilities."""
    logits = torch.full((n_tokens, n_experts), -20.0)
    for t in range(n_tokens):
        logits[t, list(pairs[t % len(pairs)])] = 0.0
    return logits


def _balance_cases():
    g = torch.Generator().manual_seed(5)
    return [(N_("two layers using complementary halves of the experts (E=8, K=2)"),
             (_confident([(0, 1), (2, 3)]), _confident([(4, 5), (6, 7)])), 8, 2),
            (N_("three layers of random logits (N=20, E=8, K=2)"),
             tuple(torch.randn(20, 8, generator=g) * 2 for _ in range(3)), 8, 2),
            (N_("one layer (N=12, E=4, K=1)"), (torch.randn(12, 4, generator=g) * 3,), 4, 1),
            (N_("two layers, one of them sending every token to experts 0 and 1 (E=6, K=2)"),
             (torch.randn(16, 6, generator=g), _confident([(0, 1)], n_experts=6, n_tokens=16)), 6, 2)]


def _layer_loss(logits, e, k, *, slot_share=False, top1=False, p_from_logits=False, p_dim=-1):
    probs = F.softmax(logits, dim=p_dim)
    chosen = torch.topk(F.softmax(logits, dim=-1), 1 if top1 else k, dim=-1).indices
    f = F.one_hot(chosen, e).float().mean(0)                                    # (K, E) per-slot shares
    if slot_share:
        f = f / f.shape[0]
    p = logits.mean(0) if p_from_logits else probs.mean(0)
    return float((f * p[None]).sum() * e)


def _balance_mistakes(gate_logits, e, k):
    mean = lambda **kw: sum(_layer_loss(g, e, k, **kw) for g in gate_logits) / len(gate_logits)  # noqa: E731
    per_layer = lambda: [float(load_balancing_loss_func((g,), e, k)) for g in gate_logits]  # noqa: E731
    return [
        (BALANCE_HINTS["pooled"], lambda: float(load_balancing_loss_func(tuple(gate_logits), e, k))),
        (BALANCE_HINTS["summed"], lambda: sum(per_layer())),
        (BALANCE_HINTS["max"], lambda: max(per_layer())),
        (BALANCE_HINTS["slot_share"], lambda: mean(slot_share=True)),
        (BALANCE_HINTS["top1_only"], lambda: mean(top1=True)),
        (BALANCE_HINTS["p_from_logits"], lambda: mean(p_from_logits=True)),
        (BALANCE_HINTS["p_dim0"], lambda: mean(p_dim=0)),
    ]


@checker
def check_per_layer_balancing_loss(per_layer_balancing_loss: Callable) -> ExerciseResult:
    """per_layer_balancing_loss(gate_logits (L tensors (N, E)), num_experts, top_k) -> the mean of per-layer losses."""
    cases = _balance_cases()
    results = answers(per_layer_balancing_loss,
                      [(label, (tuple(g.clone() for g in gate_logits), e, k)) for label, gate_logits, e, k in cases],
                      "per_layer_balancing_loss")

    def as_number(got):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            return float(got.detach().reshape(()))
        return got
    for (label, gate_logits, e, k), (_label, got, stop) in zip(cases, results):
        if stop is not None:
            raise stop
        got = as_number(got)
        want = reference_per_layer_balancing_loss(gate_logits, e, k)
        problem = difference(got, want, atol=1e-5, rtol=1e-5, what=N_("the loss"))
        if problem is not None and problem.kind == "type":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), BALANCE_HINTS["number"])
        hint = lambda: most_consistent([(as_number(g), _balance_mistakes(c[1], c[2], c[3])) for c, (_, g, _) in  # noqa: E731
                                        zip(cases, results)], atol=1e-4) or BALANCE_HINTS["values"]
        expect_same(got, want, label, hint, atol=1e-5, rtol=1e-5, what=N_("the loss"))
    return ExerciseResult(True, _("per_layer_balancing_loss agrees on all {n} cases, including two complementary "
                                  "layers that the pooled loss scores as perfectly even.").format(n=len(cases)))


EXERCISES = {
    "09.1": ("lr_schedule", check_lr_schedule),
    "09.2": ("route_top1", check_route_top1),
    "09.3": ("per_layer_balancing_loss", check_per_layer_balancing_loss),
    "09.4": ("repeat_rates", check_repeat_rates),
}
