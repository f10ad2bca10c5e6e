"""Exercises of notebook 07 (the sparse MoE block).

    07.1 find the bug        route(router_logits (N, E), top_k) -> (routing_weights (N, K), selected_experts (N, K))
    07.2 find the bug        dispatch(x (N, C), routing_weights (N, K), selected_experts (N, K), experts) -> (N, C)
    07.3 implement a variant dispatch_grouped(...same arguments...) -> (N, C), tokens sorted by expert once
    07.4 experiment          loss_change(model, tokenizer, layer, expert, domain) -> float

The references are the package's own MixtralSparseMoeBlock (its forward, read at its hook
points) and `mixtral_edu.tiny.evaluate.domain_loss`. For the two "find the bug" exercises the
hints describe what the given code does wrong (the symptom), not the fix.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import CASE, ExerciseResult, NotYet, call, checker, difference, expect_same, name_the_mistake, same, watching
from ..i18n import N_, _
from ..modeling.config import MixtralConfig
from ..modeling.moe import MixtralSparseMoeBlock

# -- what the checks say (one place; N_ marks them for the catalog, _() translates them when shown) ------------------------------------------------

PAIR = N_("case {label}: return a pair (routing_weights, selected_experts), got {got}.")
PAIR_HINT = N_("return the two tensors in that order, as torch.topk returns (values, indices).")
SWAPPED = N_("case {label}: the first item holds whole numbers and the second fractions.")
SWAPPED_HINT = N_("the order is (routing_weights, selected_experts), as torch.topk gives (values, indices).")
ROUTE_HINTS = {
    "bf16_symptom": N_("the float32 cases pass, but with bfloat16 logits whose experts are nearly tied your "
                     "function picks other experts than the block does. In which dtype does each step of "
                     "your function compute?"),
    "no_renorm": N_("your weights are the kept probabilities as they come out of the softmax: they sum to less "
                  "than 1. Renormalise the K kept weights so they sum to 1."),
    "dim0": N_("your softmax ran over the tokens (dim 0); it must run over the experts (the last dim)."),
    "raw_logits": N_("those weights come from the raw logits: turn the logits into probabilities (softmax) first."),
    "softmax_again": N_("a softmax of the kept probabilities is not a renormalisation: divide them by their sum "
                      "instead."),
    "order": N_("the right experts, in the wrong order: keep torch.topk's order, best expert first (slot 0)."),
    "top_k": N_("the number of experts kept must follow the top_k argument, not a fixed number."),
    "cast": N_("the softmax runs in float32, but the weights go back to the logits' dtype before they scale "
             "the experts' outputs: cast them back."),
    "index_dtype": N_("keep the indices torch.topk returns (torch.long): they index the experts."),
    "weights": N_("the experts are right but the weights are not: compare each step with sections 4 and 5."),
    "experts": N_("other experts than the block's: check which dimension topk runs over, and on what."),
}
DISPATCH_HINTS = {
    "assign_symptom": N_("a token that chose K experts gets only one expert's contribution: the others are lost "
                       "on the way back into the output. Which line writes into the output, and what does it "
                       "do with what was there?"),
    "no_weights": N_("you add the experts' outputs without their routing weights: scale each row by the weight "
                   "of that (token, slot) choice."),
    "slot0": N_("every choice got slot 0's weight: use the weight of the slot torch.where returned for that pair."),
    "flipped": N_("each output was scaled with the other slot's weight: take the weight at [token, slot]."),
    "mean": N_("you averaged the experts' outputs instead of weighting them with the routing weights."),
    "dtype_symptom": N_("the values are right but the output's dtype is not x's: where is the output tensor "
                      "created, and with which dtype?"),
    "shape": N_("one output row per token: add a token's K weighted contributions into its one row, (N, C)."),
    "dtype": N_("return the weighted sums as a tensor of x's dtype, the dtype the block's output has."),
    "values": N_("some tokens' outputs are wrong: check that every (token, slot) pair is gathered, weighted and "
               "added back exactly once."),
}
GROUPED_HINTS = {
    "modulo": N_("pair p of the flattened (N*K) list belongs to token p // K (p % K is its slot): your rows "
               "went to the wrong tokens."),
    "weights_unsorted": N_("the weights were not put in the same order as the sorted pairs: permute them with "
                         "the same order as the tokens."),
    "unique_counts": N_("an expert nobody chose needs its count too (0), or the slices after it shift onto the "
                      "wrong experts: count with minlength = the number of experts."),
    "assign": N_("a plain assignment into the output keeps one contribution per token: add them (index_add_)."),
    "dtype": N_("the output must have x's dtype: make the output tensor from x (zeros_like), not with a default dtype."),
    "called_twice": N_("expert {e} was called {n} times: in the grouped dispatch each expert runs once, on its "
                     "whole slice."),
    "wrong_rows": N_("expert {e} received {got} rows but {want} (token, slot) pairs chose it: give each expert "
                   "only its own tokens."),
    "separate_gathers": N_("the experts' inputs are separate gathers of x: gather all N*K rows once, in expert "
                         "order, and hand each expert a slice (a view) of that one tensor."),
    "values": N_("some tokens' outputs are wrong: sort the pairs by expert, keep for each sorted pair its token "
               "and its weight, and add every weighted row back to its token."),
    "not_one_add": N_("case {label}: the output is right, but the rows go back into it with {n} scatter calls, not one."),
    "no_add": N_("case {label}: the output is right, but the rows go back into it without index_add_."),
    "one_add": N_("add all N*K weighted rows back with ONE index_add_: its index is the token of each sorted pair, so "
                "one call sums every contribution into its token's row (a Python loop writes them one by one)."),
}
# the torch calls that scatter rows back into the output (one is asked for)
SCATTERS = ("index_add_", "index_add", "scatter_add_", "scatter_add", "index_put_", "index_put")
LOSS_HINTS = {
    "sign": N_("your change has the wrong sign: the loss without the expert minus the loss with it."),
    "not_off": N_("your number says nothing changed: was the expert really off while you measured? Apply the "
                "hook spec with `with hooks(model, spec):` around the measurement."),
    "all_layers": N_("you switched the expert off in every layer: the exercise asks for one layer "
                   "(disable_expert(layer, expert))."),
    "ratio": N_("return the difference of the two losses, not their ratio."),
    "after_only": N_("that is the loss without the expert; return the change: subtract the loss with it."),
    "leaked": N_("after your function returned, the model still had hooks attached, so every later cell would "
               "run without that expert."),
    "leaked_hint": N_("attach the hook spec with a with-block (`with hooks(model, spec):`), which always takes it off."),
    "values": N_("measure with mixtral_edu.tiny.evaluate.domain_loss(model, tokenizer, domain), once with the "
               "expert and once without it."),
    "ignores_args": N_("your function gives the same number whatever layer and expert it is asked about: build the "
                     "hook spec inside it from its own arguments, disable_expert(layer, expert), not from a name "
                     "defined elsewhere in the notebook such as `spec`."),
}
PASSED = N_("{name} agrees with MixtralSparseMoeBlock on all {n} cases ({what}).")
ROUTE_COVERS = N_("float32 and bfloat16, nearly tied experts, top_k 1 to 3")
DISPATCH_COVERS = N_("experts nobody chose, top_k=1, bfloat16")
GROUPED_COVERS = N_("one sorted gather, each expert once on its slice")
NOT_GROUPED = N_("case {label}: the output is right, but this is not a grouped dispatch.")
THE_OUTPUT, THE_LOSS_CHANGE = N_("the output"), N_("the change of loss")
LOSS_PASSED = N_("loss_change agrees with the measurement on all 3 (layer, expert, domain) cases, "
                 "and leaves the model as it found it.")


# -- the reference: the package's block, read at its hook points -------------------------------------

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
    """block.forward on x (N, C) -> (output (N, C), routing weights (N, K), selected experts (N, K)).

    Routing given here replaces the router's own at the block's hook points.
    """
    seen = {}

    def at(key, given):
        def hook(t, point):
            seen[key] = t if given is None else given
            return given
        return hook

    fns = [(block.hook_topk_weights, at("weights", routing_weights)),
           (block.hook_topk_indices, at("experts", selected_experts))]
    for point, fn in fns:
        point.fns.append(fn)
    try:
        with torch.no_grad():
            out, router_logits = block(x[None])                                       # (1, N, C)
    finally:
        for point, fn in fns:
            point.fns.remove(fn)
    return out[0], seen["weights"], seen["experts"]


def reference_route(router_logits: torch.Tensor, top_k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The block's routing of these logits: its gate replaced by the identity (hidden size = E)."""
    n_experts = router_logits.shape[-1]
    block = _block(0, n_experts, top_k, hidden_size=n_experts).to(router_logits.dtype)
    block.gate = torch.nn.Identity()
    output, weights, experts = _run_block(block, router_logits)
    return weights, experts


def reference_dispatch(x, routing_weights, selected_experts, experts) -> torch.Tensor:
    """The block's expert loop on these experts (a ModuleList) and this routing."""
    block = _block(0, len(experts), selected_experts.shape[1], hidden_size=x.shape[-1]).to(x.dtype)
    block.experts = experts
    return _run_block(block, x, routing_weights, selected_experts)[0]


# -- 07.1 routing: find the bug ----------------------------------------------------------------------

def _route_cases() -> List[Tuple[str, torch.Tensor, int]]:
    g = torch.Generator().manual_seed(7)
    return [
        (N_("N=6 tokens, E=8 experts, top_k=2, float32"), torch.randn(6, 8, generator=g) * 2, 2),
        (N_("N=5, E=4, top_k=1 (one expert per token)"), torch.randn(5, 4, generator=g) * 2, 1),
        ("N=3, E=8, top_k=3", torch.randn(3, 8, generator=g) * 2, 3),
        (N_("N=6, E=8, top_k=2, bfloat16 logits (a bf16 model)"), (torch.randn(6, 8, generator=g) * 2).bfloat16(), 2),
        (N_("N=16, E=8, top_k=2, bfloat16 logits of a freshly initialised router (experts nearly tied)"),
         (torch.randn(16, 8, generator=g) * 0.05).bfloat16(), 2),
    ]


def _route_steps(logits, k, *, softmax_dtype=torch.float, dim=-1, probs_from=None, renorm="sum",
                 cast=True, k_used=None):
    """The routing computed with one step changed: how each known mistake answers."""
    probs = probs_from if probs_from is not None else F.softmax(logits, dim=dim, dtype=softmax_dtype)
    w, e = torch.topk(probs, k if k_used is None else k_used, dim=-1)
    if renorm == "sum":
        w = w / w.sum(-1, keepdim=True)
    elif renorm == "softmax":
        w = F.softmax(w, dim=-1)
    return (w.to(logits.dtype) if cast else w), e


def _route_mistakes(logits, k):
    return [
        (ROUTE_HINTS["bf16_symptom"], lambda: _route_steps(logits, k, softmax_dtype=logits.dtype)),
        (ROUTE_HINTS["no_renorm"], lambda: _route_steps(logits, k, renorm=None)),
        (ROUTE_HINTS["dim0"], lambda: _route_steps(logits, k, dim=0)),
        (ROUTE_HINTS["raw_logits"], lambda: _route_steps(logits, k, probs_from=logits.float(), renorm=None)),
        (ROUTE_HINTS["raw_logits"], lambda: _route_steps(logits, k, probs_from=logits.float())),
        (ROUTE_HINTS["softmax_again"], lambda: _route_steps(logits, k, renorm="softmax")),
    ]


def _route_hint(got, logits, k, want_w, want_e, atol) -> str:
    w, e = got
    known = name_the_mistake((w, e), _route_mistakes(logits, k), atol=atol)
    if known:
        return known
    if isinstance(e, torch.Tensor) and e.shape != want_e.shape:
        return ROUTE_HINTS["top_k"]
    if isinstance(e, torch.Tensor) and same(e.sort(-1).values, want_e.sort(-1).values) and not same(e, want_e):
        return ROUTE_HINTS["order"]
    if same(e, want_e):
        return ROUTE_HINTS["weights"]
    return ROUTE_HINTS["experts"]


@checker
def check_route(route: Callable) -> ExerciseResult:
    """route(router_logits (N, E), top_k) -> (routing_weights (N, K) in the logits' dtype, selected_experts (N, K))."""
    cases = _route_cases()
    for label, logits, k in cases:
        got = call(route, logits.clone(), k, name="route", label=label)
        want_w, want_e = reference_route(logits, k)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            raise NotYet(_(PAIR).format(label=_(label), got=type(got).__name__), PAIR_HINT)
        w, e = got
        if (isinstance(w, torch.Tensor) and isinstance(e, torch.Tensor) and not w.is_floating_point()
                and e.is_floating_point()):
            raise NotYet(_(SWAPPED).format(label=_(label)), SWAPPED_HINT)
        # bfloat16 weights: allow one unit in the last place (another correct order of the same steps)
        atol = 1e-6 if logits.dtype == torch.float32 else 2 ** -8
        hint = lambda: _route_hint(got, logits, k, want_w, want_e, atol)  # noqa: E731
        problem = difference(e, want_e, what="selected_experts")
        if problem is not None and problem.kind == "dtype":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), ROUTE_HINTS["index_dtype"])
        expect_same(e, want_e, label, hint, what="selected_experts")
        problem = difference(w, want_w, atol=atol, what="routing_weights")
        if problem is not None and problem.kind == "dtype":
            raise NotYet(_(CASE).format(label=_(label), problem=problem), ROUTE_HINTS["cast"])
        expect_same(w, want_w, label, hint, atol=atol, what="routing_weights")
    return ExerciseResult(True, _(PASSED).format(name="route", n=len(cases), what=_(ROUTE_COVERS)))


# -- 07.2 dispatch: find the bug -----------------------------------------------------------------------

def _dispatch_cases():
    """(label, x, routing_weights, selected_experts, experts) with K = 2 first: one bug shows in float32."""
    cases = []
    g = torch.Generator().manual_seed(3)
    for label, seed, e, k, n, chosen, dtype in [
        (N_("N=6 tokens, E=4 experts, top_k=2"), 1, 4, 2, 6, None, torch.float32),
        (N_("N=5, E=4, top_k=2, expert 3 chosen by nobody"), 2, 4, 2, 5, [[0, 1], [1, 0], [2, 0], [0, 2], [1, 2]],
         torch.float32),
        (N_("N=6, E=5, top_k=2, experts 1 and 4 chosen by nobody"), 4, 5, 2, 6,
         [[0, 2], [3, 0], [2, 3], [0, 3], [2, 0], [3, 2]], torch.float32),
        ("N=4, E=4, top_k=1", 3, 4, 1, 4, None, torch.float32),
        (N_("N=6, E=4, top_k=2, bfloat16 (x, weights and experts in bfloat16, as in a bf16 model)"), 5, 4, 2, 6, None,
         torch.bfloat16),
    ]:
        block = _block(seed, e, k).to(dtype)
        x = torch.randn(n, 8, generator=g)
        if chosen is None:
            probs = F.softmax(torch.randn(n, e, generator=g) * 2, dim=-1)
            w, sel = torch.topk(probs, k, dim=-1)
        else:
            sel = torch.tensor(chosen)
            w = torch.rand(n, k, generator=g) + 0.1
        w = w / w.sum(-1, keepdim=True)
        cases.append((label, x.to(dtype), w.to(dtype), sel, block.experts))
    return cases


def _tolerance(x: torch.Tensor) -> Tuple[float, float]:
    """(atol, rtol): float32 sums in another order differ by rounding; bfloat16 keeps about 3 digits."""
    return (1e-5, 1e-5) if x.dtype == torch.float32 else (2e-2, 2e-2)


def _outputs(x, sel, experts) -> torch.Tensor:
    """(N, K, C): each (token, slot)'s expert output, before weighting."""
    n, k = sel.shape
    return torch.stack([torch.stack([experts[int(sel[t, s])](x[t:t + 1])[0] for s in range(k)]) for t in range(n)])


def _last_wins(x, w, sel, experts) -> torch.Tensor:
    """What `out[token] = ...` inside the expert loop leaves: the highest-numbered expert's contribution."""
    outs = _outputs(x, sel, experts) * w[:, :, None]
    final = torch.zeros_like(x)
    for e in range(len(experts)):
        for t in range(sel.shape[0]):
            for s in range(sel.shape[1]):
                if int(sel[t, s]) == e:
                    final[t] = outs[t, s]
    return final


def _dispatch_mistakes(x, w, sel, experts):
    outs = lambda: _outputs(x, sel, experts)  # noqa: E731
    return [
        (DISPATCH_HINTS["assign_symptom"], lambda: _last_wins(x, w, sel, experts)),
        (DISPATCH_HINTS["no_weights"], lambda: outs().sum(1)),
        (DISPATCH_HINTS["slot0"], lambda: (outs() * w[:, :1, None]).sum(1)),
        (DISPATCH_HINTS["flipped"], lambda: (outs() * w.flip(-1)[:, :, None]).sum(1)),
        (DISPATCH_HINTS["mean"], lambda: outs().mean(1)),
    ]


def _dispatch_problem(got, want, label, mistakes, atol, rtol, dtype_hint, shape_hint, values_hint) -> None:
    """NotYet naming what is wrong with a dispatch answer, or nothing when it matches."""
    problem = difference(got, want, atol=atol, rtol=rtol, what=THE_OUTPUT)
    if problem is None:
        return
    if problem.kind == "dtype":
        raise NotYet(_(CASE).format(label=_(label), problem=problem),
                     dtype_hint if same(got, want, atol=atol, rtol=rtol) else DISPATCH_HINTS["dtype"])
    if problem.kind == "shape":
        raise NotYet(_(CASE).format(label=_(label), problem=problem), shape_hint)
    hint = name_the_mistake(got, mistakes, atol=max(atol, 1e-5), default=None) if problem.kind == "values" else None
    expect_same(got, want, label, hint or values_hint, atol=atol, rtol=rtol, what=THE_OUTPUT)


@checker
def check_dispatch(dispatch: Callable) -> ExerciseResult:
    """dispatch(x (N, C), routing_weights (N, K), selected_experts (N, K), experts) -> (N, C) in x's dtype."""
    cases = _dispatch_cases()
    for label, x, w, sel, experts in cases:
        with torch.no_grad():
            got = call(dispatch, x.clone(), w.clone(), sel.clone(), experts, name="dispatch", label=label)
            want = reference_dispatch(x, w, sel, experts)
            atol, rtol = _tolerance(x)
            _dispatch_problem(got, want, label, _dispatch_mistakes(x, w, sel, experts), atol, rtol,
                              DISPATCH_HINTS["dtype_symptom"], DISPATCH_HINTS["shape"], DISPATCH_HINTS["values"])
    return ExerciseResult(True, _(PASSED).format(name="dispatch", n=len(cases), what=_(DISPATCH_COVERS)))


# -- 07.3 grouped dispatch: implement a variant ----------------------------------------------------------

class _Watched:
    """An expert that notes every input it is called with (the check inspects them afterwards)."""

    def __init__(self, expert):
        self.expert, self.inputs = expert, []

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        self.inputs.append(rows)
        return self.expert(rows)


def _grouped_mistakes(x, w, sel, experts):
    n, k = sel.shape
    flat = sel.reshape(-1)                                                     # (N*K,)
    order = torch.argsort(flat, stable=True)

    def grouped(token, weight, counts):
        rows, outs, start = x[token], [], 0
        for expert, m in zip(experts, counts):
            outs.append(expert(rows[start:start + m]))
            start += m
        final = torch.zeros_like(x)
        return final.index_add_(0, token, (torch.cat(outs) * weight).to(x.dtype))

    bincount = torch.bincount(flat, minlength=len(experts)).tolist()
    return [
        (GROUPED_HINTS["modulo"], lambda: grouped(order % k, w.reshape(-1)[order, None], bincount)),
        (GROUPED_HINTS["weights_unsorted"], lambda: grouped(order // k, w.reshape(-1)[:, None], bincount)),
        (GROUPED_HINTS["unique_counts"],
         lambda: grouped(order // k, w.reshape(-1)[order, None], torch.unique(flat, return_counts=True)[1].tolist())),
        (GROUPED_HINTS["assign"], lambda: _last_wins(x, w, sel, experts)),
    ] + _dispatch_mistakes(x, w, sel, experts)[1:]


def _grouping_problem(watched: List[_Watched], sel: torch.Tensor) -> Optional[str]:
    """Why the experts' inputs are not one sorted gather handed out in slices, or None."""
    counts = torch.bincount(sel.reshape(-1), minlength=len(watched)).tolist()
    storages = set()
    for e, (expert, want) in enumerate(zip(watched, counts)):
        if len(expert.inputs) > 1:
            return _(GROUPED_HINTS["called_twice"]).format(e=e, n=len(expert.inputs))
        got = expert.inputs[0].shape[0] if expert.inputs else 0
        if got != want:
            return _(GROUPED_HINTS["wrong_rows"]).format(e=e, got=got, want=want)
        if want:
            storages.add(expert.inputs[0].untyped_storage().data_ptr())
    return GROUPED_HINTS["separate_gathers"] if len(storages) > 1 else None


@checker
def check_dispatch_grouped(dispatch_grouped: Callable) -> ExerciseResult:
    """dispatch_grouped(x, routing_weights, selected_experts, experts) -> (N, C): the loop's result, with the
    pairs sorted by expert once and each expert run once on its slice of one gathered batch."""
    cases = _dispatch_cases()
    for label, x, w, sel, experts in cases:
        watched = [_Watched(e) for e in experts]
        with torch.no_grad():
            with watching(*SCATTERS) as scatters:                 # the learner's call only
                got = call(dispatch_grouped, x.clone(), w.clone(), sel.clone(), watched, name="dispatch_grouped",
                           label=label)
            want = reference_dispatch(x, w, sel, experts)
            atol, rtol = _tolerance(x)
            _dispatch_problem(got, want, label, _grouped_mistakes(x, w, sel, experts), atol, rtol,
                              GROUPED_HINTS["dtype"], DISPATCH_HINTS["shape"], GROUPED_HINTS["values"])
        problem = _grouping_problem(watched, sel)
        if problem is not None:
            raise NotYet(_(NOT_GROUPED).format(label=_(label)), problem)
        if len(scatters) != 1:                     # e.g. final[token[i]] += row[i] in a loop: right, but not one op
            raise NotYet(_(GROUPED_HINTS["not_one_add"] if scatters else GROUPED_HINTS["no_add"]).format(
                label=_(label), n=len(scatters)), GROUPED_HINTS["one_add"])
    return ExerciseResult(True, _(PASSED).format(name="dispatch_grouped", n=len(cases), what=_(GROUPED_COVERS)))


# -- 07.4 switching an expert off: experiment ---------------------------------------------------------------

def _loss_cases():
    # (layer, expert, domain): a spread of layers, experts and domains of the shipped model
    return [(N_("layer 0, expert 3, domain 'arith'"), 0, 3, "arith"),
            (N_("layer 2, expert 5, domain 'lang'"), 2, 5, "lang"),
            (N_("layer 3, expert 0, domain 'kv'"), 3, 0, "kv")]


def _measured(model, tokenizer, domain, spec=None) -> float:
    from ..observe.capture import hooks
    from ..tiny.evaluate import domain_loss
    if spec is None:
        return domain_loss(model, tokenizer, domain)
    with hooks(model, spec):
        return domain_loss(model, tokenizer, domain)


def _hooked(model) -> bool:
    from ..modeling.hook_points import HookPoint
    return any(m.fns for m in model.modules() if isinstance(m, HookPoint))


@checker
def check_loss_change(loss_change: Callable) -> ExerciseResult:
    """loss_change(model, tokenizer, layer, expert, domain) -> the domain's loss without the expert minus with it."""
    from ..observe.capture import disable_expert
    from ..tiny.pretrained import load_tiny
    model, tokenizer = load_tiny()              # a fresh copy: a hook left behind cannot spoil the notebook's model
    for label, layer, expert, domain in _loss_cases():
        got = call(loss_change, model, tokenizer, layer, expert, domain, name="loss_change", label=label)
        if _hooked(model):
            model.reset_hooks()
            raise NotYet(_(CASE).format(label=_(label), problem=_(LOSS_HINTS["leaked"])), LOSS_HINTS["leaked_hint"])
        before = _measured(model, tokenizer, domain)
        after = _measured(model, tokenizer, domain, disable_expert(layer, expert))
        other = ((layer + 1) % model.config.num_hidden_layers, (expert + 1) % model.config.num_local_experts)
        mistakes = [
            (LOSS_HINTS["sign"], before - after),
            (LOSS_HINTS["not_off"], 0.0),
            (LOSS_HINTS["all_layers"], lambda: _measured(model, tokenizer, domain, disable_expert(None, expert)) - before),
            (LOSS_HINTS["ratio"], after / before),
            (LOSS_HINTS["after_only"], after),
            (LOSS_HINTS["ignores_args"],        # the same number for another (layer, expert): the arguments are unused
             lambda: call(loss_change, model, tokenizer, *other, domain, name="loss_change")),
        ]
        expect_same(got, after - before, label, lambda: name_the_mistake(got, mistakes, atol=1e-5), atol=1e-5,
                    what=THE_LOSS_CHANGE)
    return ExerciseResult(True, LOSS_PASSED)


EXERCISES = {
    "07.1": ("route", check_route),
    "07.2": ("dispatch", check_dispatch),
    "07.3": ("dispatch_grouped", check_dispatch_grouped),
    "07.4": ("loss_change", check_loss_change),
}
