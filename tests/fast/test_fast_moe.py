"""mixtral_edu.fast.moe (grouped dispatch): the same results as the teaching loop, and it puts the loop back."""
from __future__ import annotations

import copy

import pytest
import torch

import mixtral_edu
from mixtral_edu.fast.moe import GroupedMixtralSparseMoeBlock, grouped_moe
from mixtral_edu.modeling.moe import MixtralSparseMoeBlock

from pairs import left_padded, make_pair, random_ids


def _block_classes(model):
    return {type(m) for m in model.modules() if isinstance(m, MixtralSparseMoeBlock)}


@pytest.mark.parametrize("overrides", [{}, dict(num_experts_per_tok=1), dict(num_local_experts=8, num_experts_per_tok=3)],
                         ids=["top2", "top1", "8experts-top3"])
def test_grouped_dispatch_equals_loop_and_transformers(overrides):
    loop, theirs = make_pair(**overrides)
    grouped = copy.deepcopy(loop)
    ids, mask = left_padded(3, 10, pads=[0, 2, 6], seed=21)
    single = random_ids(1, 1, seed=22)          # one token: most experts receive nobody
    with torch.no_grad(), grouped_moe(grouped):
        assert _block_classes(grouped) == {GroupedMixtralSparseMoeBlock}
        for x, m in ((ids, mask), (single, None)):
            a = loop(x, attention_mask=m, output_router_logits=True)
            b = grouped(x, attention_mask=m, output_router_logits=True)
            # a token's K contributions are summed in the same order (by expert): bit for bit
            assert torch.equal(b.logits, a.logits)
            assert all(torch.equal(p, q) for p, q in zip(b.router_logits, a.router_logits))
            assert torch.equal(b.logits, theirs(x, attention_mask=m).logits)
    assert _block_classes(grouped) == {MixtralSparseMoeBlock}


@pytest.mark.parametrize("with_a_hook", [False, True])
def test_grouped_fires_the_loops_hook_points_in_the_same_order_but_an_idle_experts(with_a_hook):
    model, _ = make_pair()
    ids = random_ids(1, 1, seed=3)              # one token, top-2 of 4: two experts get nobody

    def fired():
        seen = []
        spec = {}
        if with_a_hook:  # a hook on every expert input: it must not change which experts run
            spec = {n: (lambda x, point: seen.append(point.name))
                    for n in model.hook_names() if n.endswith("hook_in")}
        with mixtral_edu.hooks(model, spec):
            _, cache = mixtral_edu.run_with_cache(model, ids)
        return {n: cache[n] for n in cache.keys()}, seen

    with torch.no_grad():
        loop_acts, loop_seen = fired()
        with grouped_moe(model):
            grouped_acts, grouped_seen = fired()
    idle = {n.rsplit(".", 1)[0] for n, t in loop_acts.items() if n.endswith("hook_in") and t.shape[0] == 0}
    assert idle, "some expert got no token: the loop still calls it on a (0, C) batch"
    # the grouped path calls every busy expert, in the loop's order, and no idle one
    assert list(grouped_acts) == [n for n in loop_acts if n.rsplit(".", 1)[0] not in idle]
    assert all(torch.equal(grouped_acts[n], loop_acts[n]) for n in grouped_acts)
    if with_a_hook:
        assert grouped_seen == [n for n in loop_seen if n.rsplit(".", 1)[0] not in idle]


def test_grouped_moe_restores_the_loop_after_an_error_and_refuses_inside_a_trace():
    model, _ = make_pair()
    with pytest.raises(RuntimeError, match="boom"):
        with grouped_moe(model):
            raise RuntimeError("boom")
    assert _block_classes(model) == {MixtralSparseMoeBlock}
    with mixtral_edu.trace(model):
        with pytest.raises(RuntimeError, match="Enter grouped_moe"):
            with grouped_moe(model):
                pass
    with grouped_moe(model), mixtral_edu.trace(model) as tr, torch.no_grad():
        model(random_ids(1, 4))
    assert tr.find("block_sparse_moe")


def test_grouped_block_trains_like_the_loop():
    torch.manual_seed(0)
    loop, _ = make_pair(router_jitter_noise=0.0)
    grouped = copy.deepcopy(loop)
    ids = random_ids(2, 8, seed=5)
    loop.train(), grouped.train()
    loss_a = loop(ids, labels=ids, output_router_logits=True).loss
    with grouped_moe(grouped):
        loss_b = grouped(ids, labels=ids, output_router_logits=True).loss
    loss_a.backward(), loss_b.backward()
    assert torch.equal(loss_a, loss_b)
    for (name, p), q in zip(loop.named_parameters(), grouped.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=0, msg=name)
