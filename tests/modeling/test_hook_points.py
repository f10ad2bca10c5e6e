"""HookPoint: free at rest, named, and PyTorch's own module hooks fire on it."""
from __future__ import annotations

import torch

import mixtral_edu
from mixtral_edu.modeling.hook_points import HookPoint, run_torch_hooks

from pairs import random_ids, tiny_kwargs


def build() -> mixtral_edu.MixtralForCausalLM:
    torch.manual_seed(0)
    return mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**tiny_kwargs())).eval()


def test_register_forward_hook_on_a_hook_point_fires_and_can_replace():
    model = build()
    ids = random_ids(2, 5)
    point = model.model.layers[0].self_attn.hook_q
    with torch.no_grad():
        plain = model(ids).logits
        seen = []
        handle = point.register_forward_hook(lambda module, args, output: seen.append((module, output.shape)))
        assert torch.equal(model(ids).logits, plain)            # a hook that returns None only looks
        assert seen == [(point, (2, 4, 5, 8))]                   # (B, H, T, D), with the point as the module
        zero = point.register_forward_pre_hook(lambda module, args: (torch.zeros_like(args[0]),))
        assert not torch.equal(model(ids).logits, plain)         # a pre-hook may replace the input
        zero.remove()
        handle.remove()
        assert torch.equal(model(ids).logits, plain)
    assert not point.fns                                          # back on the free path after one call


def test_torch_hooks_outlive_reset_hooks_and_backward_hooks_fire():
    model = build()
    point = model.model.hook_embed
    grads = []
    handle = point.register_full_backward_hook(lambda module, grad_in, grad_out: grads.append(grad_out[0].shape))
    point.fns.append(lambda x, p: None)
    model.reset_hooks()                                           # ours go, PyTorch's stay (their handle owns them)
    assert point.fns == [run_torch_hooks]
    ids = random_ids(1, 3)
    model(ids, labels=ids).loss.backward()
    assert grads == [(1, 3, 32)]
    handle.remove()


def test_at_rest_a_hook_point_is_one_check():
    point = HookPoint("(B,) anything")
    x = torch.ones(2)
    assert point(x) is x and point.forward(x) is x and not point.fns


def test_hook_points_are_plain_attributes_and_follow_reassignment():
    m = build()
    attn = m.model.layers[0].self_attn
    # read without nn.Module.__getattr__ (the at-rest cost), yet the same object the module tree holds
    assert attn.__dict__["hook_q"] is attn._modules["hook_q"] is attn.hook_q
    fresh = HookPoint("(B, H, T, D) replaced")
    attn.hook_q = fresh                         # nn.Module.__setattr__ drops the shortcut: no stale object
    assert attn.hook_q is fresh and attn._modules["hook_q"] is fresh
    seen = []
    fresh.fns.append(lambda x, h: seen.append(x.shape))
    m(random_ids(2, 6))
    assert seen and seen[0] == (2, 4, 6, 8)
