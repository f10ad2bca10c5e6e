"""Plausible wrong answers to notebook 07's exercises: each gets NOT YET with a hint naming the mistake."""
import torch
import torch.nn.functional as F

from exercise_harness import Mutant, mutation_tests
from mixtral_edu import disable_expert, hooks
from mixtral_edu.exercises import moe as ex
from mixtral_edu.tiny.evaluate import domain_loss


# -- 07.1 route ---------------------------------------------------------------------------------------

def _route(logits, k, probs=None, renorm=True, cast=True):
    probs = F.softmax(logits.float(), dim=-1) if probs is None else probs
    w, e = torch.topk(probs, k, dim=-1)
    if renorm:
        w = w / w.sum(-1, keepdim=True)
    return (w.to(logits.dtype) if cast else w), e


def route_stub(router_logits, top_k):                      # the notebook's broken function, untouched
    probs = F.softmax(router_logits, dim=-1)
    routing_weights, selected_experts = torch.topk(probs, top_k, dim=-1)
    routing_weights = routing_weights / routing_weights.sum(dim=-1, keepdim=True)
    return routing_weights.to(router_logits.dtype), selected_experts


def route_bf16_everywhere(router_logits, top_k):           # the upcast, then everything back in bf16
    probs = F.softmax(router_logits.float(), dim=-1).to(router_logits.dtype)
    return _route(router_logits, top_k, probs=probs)


ROUTE = [
    Mutant("07.1", "softmax in the logits' dtype (the stub)", route_stub, ["bfloat16", "dtype"]),
    Mutant("07.1", "probabilities rounded to bf16 before top-k", route_bf16_everywhere, ["dtype"]),
    Mutant("07.1", "no renormalisation", lambda l, k: _route(l, k, renorm=False), ["less than 1", "renormalise"]),
    Mutant("07.1", "softmax over the tokens", lambda l, k: _route(l, k, probs=F.softmax(l.float(), dim=0)),
           ["tokens", "experts"]),
    Mutant("07.1", "top-k of the raw logits", lambda l, k: _route(l, k, probs=l.float(), renorm=False),
           ["logits", "softmax"]),
    Mutant("07.1", "softmax of the kept probabilities",
           lambda l, k: (F.softmax(torch.topk(F.softmax(l.float(), -1), k).values, -1).to(l.dtype),
                         torch.topk(l.float(), k).indices), ["divide"]),
    Mutant("07.1", "weights left in float32", lambda l, k: _route(l, k, cast=False), ["cast"]),
    Mutant("07.1", "outputs swapped", lambda l, k: _route(l, k)[::-1], ["routing_weights, selected_experts"]),
    Mutant("07.1", "worst expert first", lambda l, k: tuple(t.flip(-1) for t in _route(l, k)), ["best expert first"]),
    Mutant("07.1", "int32 expert indices", lambda l, k: (_route(l, k)[0], _route(l, k)[1].int()), ["torch.long"]),
    Mutant("07.1", "top_k fixed at 2", lambda l, k: _route(l, 2), ["top_k"]),
    Mutant("07.1", "NaN weights", lambda l, k: (_route(l, k)[0] * float("nan"), _route(l, k)[1]), ["NaN"]),
    Mutant("07.1", "only the weights returned", lambda l, k: _route(l, k)[0], ["pair"]),
]


# -- 07.2 dispatch -----------------------------------------------------------------------------------------

def _loop(x, w, sel, experts, buffer=torch.zeros_like, assign=False, weight=lambda w, t, s: w[t, s, None],
          cast=True):
    final = buffer(x)
    mask = F.one_hot(sel, num_classes=len(experts)).permute(2, 1, 0)
    for e, expert in enumerate(experts):
        slot, token = torch.where(mask[e])
        out = expert(x[token]) * weight(w, token, slot)
        if assign:
            final[token] = out.to(final.dtype)
        else:
            final.index_add_(0, token, out.to(final.dtype) if cast else out)
    return final


def dispatch_stub(x, routing_weights, selected_experts, experts):   # the notebook's broken function, untouched
    final = torch.zeros(x.shape)
    expert_mask = F.one_hot(selected_experts, num_classes=len(experts)).permute(2, 1, 0)
    for e, expert in enumerate(experts):
        slot, token = torch.where(expert_mask[e])
        out = expert(x[token]) * routing_weights[token, slot, None]
        final[token] = out
    return final


def per_slot_outputs(x, w, sel, experts):                 # (N, K, C): forgot to add the K contributions
    return torch.stack([torch.stack([experts[int(sel[t, s])](x[t:t + 1])[0] * w[t, s] for s in range(sel.shape[1])])
                        for t in range(x.shape[0])])


def averaged(x, w, sel, experts):
    return per_slot_outputs(x, torch.ones_like(w), sel, experts).mean(1)


float32_buffer = lambda x: torch.zeros(x.shape)   # noqa: E731

DISPATCH = [
    Mutant("07.2", "assignment and a float32 buffer (the stub)", dispatch_stub, ["only one expert"]),
    Mutant("07.2", "assignment instead of index_add_", lambda *a: _loop(*a, assign=True), ["only one expert"]),
    Mutant("07.2", "index_add_ into a float32 buffer", lambda *a: _loop(*a, buffer=float32_buffer), ["dtype"]),
    Mutant("07.2", "the first fix alone: index_add_ of bf16 rows into the float32 buffer (RuntimeError)",
           lambda *a: _loop(*a, buffer=float32_buffer, cast=False), ["different dtypes", "scalar type"]),
    Mutant("07.2", "no routing weights", lambda *a: _loop(*a, weight=lambda w, t, s: 1.0), ["routing weights"]),
    Mutant("07.2", "slot 0's weight for every choice", lambda *a: _loop(*a, weight=lambda w, t, s: w[t, 0, None]),
           ["slot 0"]),
    Mutant("07.2", "the other slot's weight", lambda *a: _loop(*a, weight=lambda w, t, s: w[t, 1 - s, None]),
           ["other slot"]),
    Mutant("07.2", "an average", averaged, ["averaged"]),
    Mutant("07.2", "K contributions not added up", per_slot_outputs, ["one output row per token"]),
    Mutant("07.2", "a bool tensor", lambda *a: _loop(*a) != 0, ["dtype"]),
    Mutant("07.2", "NaN", lambda *a: _loop(*a) * float("nan"), ["NaN"]),
]


# -- 07.3 grouped dispatch ---------------------------------------------------------------------------------

def _grouped(x, w, sel, experts, token_of=lambda order, k: order // k, sort_weights=True, counts=None,
             assign=False, buffer=torch.zeros_like, row_by_row=False):
    k = sel.shape[1]
    flat = sel.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token = token_of(order, k)
    weight = w.reshape(-1)[order, None] if sort_weights else w.reshape(-1)[:, None]
    counts = torch.bincount(flat, minlength=len(experts)).tolist() if counts is None else counts(flat)
    rows, outs, start = x[token], [], 0
    for expert, n in zip(experts, counts):
        outs.append(expert(rows[start:start + n]))
        start += n
    final = buffer(x)
    contrib = (torch.cat(outs) * weight).to(final.dtype)
    if assign:
        final[token] = contrib
        return final
    if row_by_row:                                         # right numbers, N*K writes instead of one index_add_
        for i in range(len(token)):
            final[token[i]] += contrib[i]
        return final
    return final.index_add_(0, token, contrib)


def grouped_but_index_add_per_expert(x, w, sel, experts):  # one index_add_ per expert's slice: E scatters
    k = sel.shape[1]
    flat = sel.reshape(-1)
    order = torch.argsort(flat, stable=True)
    token, weight = order // k, w.reshape(-1)[order, None]
    rows, final, start = x[token], torch.zeros_like(x), 0
    for expert, n in zip(experts, torch.bincount(flat, minlength=len(experts)).tolist()):
        final.index_add_(0, token[start:start + n], (expert(rows[start:start + n]) * weight[start:start + n]).to(x.dtype))
        start += n
    return final


def dense(x, w, sel, experts):                             # every expert on every token, masked weights
    full = torch.zeros(x.shape[0], len(experts), dtype=w.dtype).scatter(1, sel, w)   # (N, E)
    return sum(expert(x) * full[:, e, None] for e, expert in enumerate(experts)).to(x.dtype)


def per_pair(x, w, sel, experts):                          # one call per (token, slot) pair
    final = torch.zeros_like(x)
    for t in range(sel.shape[0]):
        for s in range(sel.shape[1]):
            final[t] += (experts[int(sel[t, s])](x[t:t + 1])[0] * w[t, s]).to(x.dtype)
    return final


GROUPED = [
    Mutant("07.3", "the per-expert loop (a gather per expert)", lambda *a: _loop(*a), ["one", "slice"]),
    Mutant("07.3", "token = pair % K", lambda *a: _grouped(*a, token_of=lambda o, k: o % k), ["p // K"]),
    Mutant("07.3", "weights not permuted", lambda *a: _grouped(*a, sort_weights=False), ["same order"]),
    Mutant("07.3", "counts without the unchosen experts",
           lambda *a: _grouped(*a, counts=lambda f: torch.unique(f, return_counts=True)[1].tolist()), ["minlength"]),
    Mutant("07.3", "assignment at the end", lambda *a: _grouped(*a, assign=True), ["index_add_"]),
    Mutant("07.3", "dense: every expert on every token", dense, ["only its own tokens"]),
    Mutant("07.3", "one call per pair", per_pair, ["once"]),
    Mutant("07.3", "float32 output", lambda *a: _grouped(*a, buffer=float32_buffer), ["x's dtype"]),
    Mutant("07.3", "a Python loop instead of one index_add_", lambda *a: _grouped(*a, row_by_row=True),
           ["without index_add_", "ONE index_add_"]),
    Mutant("07.3", "one index_add_ per expert", grouped_but_index_add_per_expert, ["scatter calls", "ONE index_add_"]),
]


# -- 07.4 switching an expert off ------------------------------------------------------------------------

def _change(model, tok, layer, expert, domain, spec_layer="same", combine=lambda after, before: after - before):
    before = domain_loss(model, tok, domain)
    with hooks(model, disable_expert(layer if spec_layer == "same" else spec_layer, expert)):
        after = domain_loss(model, tok, domain)
    return combine(after, before)


def leaves_hooks_on(model, tok, layer, expert, domain):
    before = domain_loss(model, tok, domain)
    (pattern, fn), = disable_expert(layer, expert).items()
    point = model.model.layers[layer].block_sparse_moe.hook_router_logits
    point.fns.append(fn)                                      # attached by hand, never taken off
    return domain_loss(model, tok, domain) - before


GLOBAL_SPEC = disable_expert(1, 2)   # the notebook's `spec`, for one (layer, expert) picked earlier


def uses_the_notebooks_spec(model, tok, layer, expert, domain):
    before = domain_loss(model, tok, domain)
    with hooks(model, GLOBAL_SPEC):                          # not disable_expert(layer, expert)
        after = domain_loss(model, tok, domain)
    return after - before


LOSS = [
    Mutant("07.4", "before minus after", lambda *a: _change(*a, combine=lambda after, before: before - after),
           ["wrong sign"]),
    Mutant("07.4", "never switched off", lambda model, tok, layer, expert, domain: 0.0, ["really off"]),
    Mutant("07.4", "off in every layer", lambda *a: _change(*a, spec_layer=None), ["every layer"]),
    Mutant("07.4", "a ratio", lambda *a: _change(*a, combine=lambda after, before: after / before), ["ratio"]),
    Mutant("07.4", "the loss without the expert", lambda *a: _change(*a, combine=lambda after, before: after),
           ["subtract"]),
    Mutant("07.4", "hooks left attached", leaves_hooks_on, ["hooks attached", "with-block"]),
    Mutant("07.4", "the notebook's global spec, not its arguments", uses_the_notebooks_spec,
           ["whatever layer and expert", "disable_expert(layer, expert)"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, ROUTE + DISPATCH + GROUPED + LOSS)


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    ex.check_route(route_stub)
    ex.check_dispatch(dispatch_stub)
    assert torch.equal(torch.random.get_rng_state(), before)


def test_the_packages_grouped_dispatch_passes_07_3():
    """Notebook 07 warns that mixtral_edu/fast/moe.py is a complete solution of Exercise 07.3: it is."""
    from mixtral_edu.fast.moe import grouped_dispatch
    assert ex.check_dispatch_grouped(grouped_dispatch)
