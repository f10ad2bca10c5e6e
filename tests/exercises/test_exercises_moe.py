"""mixtral_edu.exercises.moe: a correct answer passes; typical mistakes fail with a message naming them."""
import torch
import torch.nn.functional as F

from mixtral_edu.exercises import moe


# -- route ---------------------------------------------------------------------------

def route_ok(router_logits, top_k):
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float)
    w, e = torch.topk(probs, top_k, dim=-1)
    return (w / w.sum(-1, keepdim=True)).to(router_logits.dtype), e


def route_softmax_of_topk(router_logits, top_k):  # the paper's formula: also correct
    vals, e = torch.topk(router_logits.float(), top_k, dim=-1)
    return F.softmax(vals, dim=-1).to(router_logits.dtype), e


def test_route_correct_answers_pass():
    assert moe.check_route(route_ok)
    assert moe.check_route(route_softmax_of_topk)


def test_route_not_yet():
    def route(router_logits, top_k):
        raise NotImplementedError("your code here")
    r = moe.check_route(route)
    assert not r and "not yet" in r.message and "NotImplementedError" in r.message


def test_route_without_renormalising():
    def route(router_logits, top_k):
        w, e = torch.topk(F.softmax(router_logits.float(), dim=-1), top_k, dim=-1)
        return w.to(router_logits.dtype), e
    r = moe.check_route(route)
    assert not r and "sum to 1" in r.message


def test_route_softmax_over_tokens():
    def route(router_logits, top_k):
        probs = F.softmax(router_logits.float(), dim=0)
        w, e = torch.topk(probs, top_k, dim=-1)
        return (w / w.sum(-1, keepdim=True)).to(router_logits.dtype), e
    r = moe.check_route(route)
    assert not r and ("experts" in r.message)


def test_route_forgets_the_cast_back():
    def route(router_logits, top_k):
        w, e = torch.topk(F.softmax(router_logits.float(), dim=-1), top_k, dim=-1)
        return w / w.sum(-1, keepdim=True), e
    r = moe.check_route(route)
    assert not r and "bfloat16" in r.message and "cast" in r.message


def test_route_swapped_outputs_and_wrong_order():
    def swapped(router_logits, top_k):
        w, e = route_ok(router_logits, top_k)
        return e, w
    r = moe.check_route(swapped)
    assert not r and "(routing_weights, selected_experts)" in r.message

    def ascending(router_logits, top_k):
        w, e = route_ok(router_logits, top_k)
        return w.flip(-1), e.flip(-1)
    r = moe.check_route(ascending)
    assert not r and "wrong order" in r.message


def test_route_on_logits_without_softmax():
    def route(router_logits, top_k):
        w, e = torch.topk(router_logits, top_k, dim=-1)
        return w, e
    r = moe.check_route(route)
    assert not r and "softmax" in r.message


def test_route_experts_right_values_wrong_integer_dtype():
    r = moe.check_route(lambda logits, k: (route_ok(logits, k)[0], route_ok(logits, k)[1].int()))
    assert not r and repr(r).startswith("NOT YET"), repr(r)
    assert "selected experts: dtype torch.int32, expected torch.int64" in r.message, r.message


def test_route_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    moe.check_route(route_ok)
    assert torch.equal(torch.rand(3), a)


# -- dispatch -------------------------------------------------------------------------

def dispatch_ok(x, routing_weights, selected_experts, experts):
    out = torch.zeros_like(x)
    mask = F.one_hot(selected_experts, num_classes=len(experts)).permute(2, 1, 0)
    for e, expert in enumerate(experts):
        slot, token = torch.where(mask[e])
        out.index_add_(0, token, expert(x[token]) * routing_weights[token, slot, None])
    return out


def dispatch_per_token(x, routing_weights, selected_experts, experts):  # slow but right
    rows = []
    for t in range(x.shape[0]):
        rows.append(sum(routing_weights[t, s] * experts[int(selected_experts[t, s])](x[t:t + 1])[0]
                        for s in range(selected_experts.shape[1])))
    return torch.stack(rows)


def test_dispatch_correct_answers_pass():
    assert moe.check_dispatch(dispatch_ok)
    assert moe.check_dispatch(dispatch_per_token)


def test_dispatch_not_yet():
    def dispatch(x, w, s, experts):
        raise NotImplementedError("your code here")
    r = moe.check_dispatch(dispatch)
    assert not r and "not yet" in r.message


def test_dispatch_without_weights():
    def dispatch(x, routing_weights, selected_experts, experts):
        return dispatch_ok(x, torch.ones_like(routing_weights), selected_experts, experts)
    r = moe.check_dispatch(dispatch)
    assert not r and "routing weights" in r.message


def test_dispatch_with_assignment_instead_of_index_add():
    def dispatch(x, routing_weights, selected_experts, experts):
        out = torch.zeros_like(x)
        mask = F.one_hot(selected_experts, num_classes=len(experts)).permute(2, 1, 0)
        for e, expert in enumerate(experts):
            slot, token = torch.where(mask[e])
            out[token] = expert(x[token]) * routing_weights[token, slot, None]
        return out
    r = moe.check_dispatch(dispatch)
    assert not r and "index_add_" in r.message


def test_dispatch_with_slot_zero_weight():
    def dispatch(x, routing_weights, selected_experts, experts):
        out = torch.zeros_like(x)
        mask = F.one_hot(selected_experts, num_classes=len(experts)).permute(2, 1, 0)
        for e, expert in enumerate(experts):
            slot, token = torch.where(mask[e])
            out.index_add_(0, token, expert(x[token]) * routing_weights[token, 0, None])
        return out
    r = moe.check_dispatch(dispatch)
    assert not r and "slot" in r.message


def test_dispatch_right_values_wrong_dtype():
    r = moe.check_dispatch(lambda *a: dispatch_ok(*a).double())
    assert not r and "dtype torch.float64, expected torch.float32" in r.message, r.message


def test_dispatch_wrong_shape_and_crash():
    r = moe.check_dispatch(lambda x, w, s, experts: x.sum(0))
    assert not r and "shape" in r.message
    r = moe.check_dispatch(lambda x, w, s, experts: experts[99](x))
    assert not r and "IndexError" in r.message
