"""Chapter 11's checkers: every solution passes, every untouched stub is NOT YET, and plausible
wrong answers (at least five per exercise) are NOT YET with a hint naming the mistake, never a
traceback and never the expected values."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mixtral_edu.exercises import then_and_now as ex

ROOT = Path(__file__).resolve().parents[2]


def _solutions():
    path = ROOT / "notebooks" / "solutions" / "11_then_and_now.py"
    spec = importlib.util.spec_from_file_location("solutions_11", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOL = _solutions()


def verdict(check, fn):
    result = check(fn)
    assert isinstance(result, ex.ExerciseResult)
    return result


@pytest.mark.parametrize("key", list(ex.EXERCISES))
def test_solution_passes_and_stub_is_not_yet(key):
    name, check = ex.EXERCISES[key]
    assert verdict(check, getattr(SOL, name))

    def stub(*args):
        raise NotImplementedError(f"Exercise {key}")
    stub.__name__ = name
    result = verdict(check, stub)
    assert not result and repr(result).startswith("NOT YET") and name in result.message


def test_registry_order_and_names():
    assert list(ex.EXERCISES) == ["11.1", "11.2", "11.3"]
    assert [v[0] for v in ex.EXERCISES.values()] == ["fuse_experts", "sliding_visible", "sliding_layer_update"]


# -- 11.1 fuse_experts ------------------------------------------------------------------------------

def fuse_up_first(w1, w3, w2):
    return torch.cat([torch.stack(w3), torch.stack(w1)], dim=1), torch.stack(w2)


def fuse_interleaved(w1, w3, w2):
    rows = [torch.stack([a, b], dim=1).reshape(2 * a.shape[0], -1) for a, b in zip(w1, w3)]
    return torch.stack(rows), torch.stack(w2)


def fuse_expert_axis(w1, w3, w2):
    return torch.cat([torch.stack(w1), torch.stack(w3)], dim=0), torch.stack(w2)


def fuse_down_transposed(w1, w3, w2):
    return SOL.fuse_experts(w1, w3, w2)[0], torch.stack([t.T for t in w2])


def fuse_float32(w1, w3, w2):
    return tuple(t.float() for t in SOL.fuse_experts(w1, w3, w2))


def fuse_nan(w1, w3, w2):
    gate_up, down = SOL.fuse_experts(w1, w3, w2)
    return gate_up * float("nan"), down


@pytest.mark.parametrize("wrong, words", [
    (fuse_up_first, "gate"), (fuse_interleaved, "alternate"), (fuse_expert_axis, "expert axis"),
    (fuse_down_transposed, "w2"), (fuse_float32, "dtype"), (fuse_nan, "NaN"),
    (lambda w1, w3, w2: torch.stack(w1), "pair"), (lambda w1, w3, w2: (None, None), "pair"),
    (lambda w1, w3, w2: [][0], "IndexError"),
])
def test_fuse_experts_mistakes(wrong, words):
    result = verdict(ex.check_fuse_experts, wrong)
    assert not result and words in result.message, result.message


# -- 11.2 sliding_visible ---------------------------------------------------------------------------

def visible_441(q_len, past_len, w):
    q = torch.arange(q_len)[:, None] + past_len
    k = torch.arange(past_len + q_len)[None, :]
    return (k <= q) & (k >= q - w)


def visible_short(q_len, past_len, w):
    q = torch.arange(q_len)[:, None] + past_len
    k = torch.arange(past_len + q_len)[None, :]
    return (k <= q) & (k > q - w + 1)


def visible_not_causal(q_len, past_len, w):
    q = torch.arange(q_len)[:, None] + past_len
    k = torch.arange(past_len + q_len)[None, :]
    return k > q - w


def visible_ignores_past(q_len, past_len, w):
    q = torch.arange(q_len)[:, None]
    k = torch.arange(q_len)[None, :]
    return (k <= q) & (k > q - w)


def visible_unshifted(q_len, past_len, w):
    q = torch.arange(q_len)[:, None]
    k = torch.arange(past_len + q_len)[None, :]
    return (k <= q) & (k > q - w)


@pytest.mark.parametrize("wrong, words", [
    (visible_441, "4.41.2's rule"), (visible_short, "one key too few"), (visible_not_causal, "future"),
    (visible_ignores_past, "S = P + T"), (visible_unshifted, "P + i"),
    (lambda t, p, w: SOL.sliding_visible(t, p, w).float(), "bool"),
    (lambda t, p, w: SOL.sliding_visible(t, p, w).float() * float("nan"), "NaN"),
    (lambda t, p, w: SOL.sliding_visible(t, p, w).tolist(), "tensor"),
])
def test_sliding_visible_mistakes(wrong, words):
    result = verdict(ex.check_sliding_visible, wrong)
    assert not result and words in result.message, result.message


# -- 11.3 sliding_layer_update ----------------------------------------------------------------------

def update_keeps_w(ck, cv, nk, nv, w):
    k, v = torch.cat([ck, nk], -2), torch.cat([cv, nv], -2)
    return k[:, :, -w:], v[:, :, -w:], k, v


def update_keeps_all(ck, cv, nk, nv, w):
    k, v = torch.cat([ck, nk], -2), torch.cat([cv, nv], -2)
    return k, v, k, v


def update_attends_to_kept(ck, cv, nk, nv, w):
    keep_k, keep_v, _, _ = SOL.sliding_layer_update(ck, cv, nk, nv, w)
    return keep_k, keep_v, keep_k, keep_v


def update_keeps_oldest(ck, cv, nk, nv, w):
    k, v = torch.cat([ck, nk], -2), torch.cat([cv, nv], -2)
    return k[:, :, :w - 1], v[:, :, :w - 1], k, v


def update_mixes_k_and_v(ck, cv, nk, nv, w):
    keep_k, keep_v, k, v = SOL.sliding_layer_update(ck, cv, nk, nv, w)
    return keep_v, keep_k, k, v


def update_wrong_axis(ck, cv, nk, nv, w):
    k, v = torch.cat([ck, nk], 1), torch.cat([cv, nv], 1)
    return k, v, k, v


@pytest.mark.parametrize("wrong, words", [
    (update_keeps_w, "W - 1"), (update_keeps_all, "stops growing"), (update_attends_to_kept, "about to be dropped"),
    (update_keeps_oldest, "oldest"), (update_mixes_k_and_v, "keys and values"),
    (update_wrong_axis, "Sizes of tensors must match"),
    (lambda *a: tuple(t * float("inf") for t in SOL.sliding_layer_update(*a)), "NaN or inf"),
    (lambda *a: SOL.sliding_layer_update(*a)[:2], "four tensors"),
])
def test_sliding_layer_update_mistakes(wrong, words):
    result = verdict(ex.check_sliding_layer_update, wrong)
    assert not result and words in result.message, result.message


def test_hints_never_print_the_expected_values():
    """No message of a wrong answer holds a tensor's printout (the expected values)."""
    for check, wrong in ((ex.check_fuse_experts, fuse_up_first), (ex.check_sliding_visible, visible_441),
                         (ex.check_sliding_layer_update, update_keeps_w)):
        message = check(wrong).message
        assert "tensor(" not in message and "[[" not in message, message


def test_checks_leave_the_global_rng_alone():
    torch.manual_seed(5)
    a = torch.rand(3)
    torch.manual_seed(5)
    for _, check in ex.EXERCISES.values():
        check(lambda *args: None)
    assert torch.equal(torch.rand(3), a)
