"""mixtral_edu.exercises.training: a correct answer passes; typical mistakes fail with a message naming them."""
import math

import torch

from mixtral_edu.exercises import training


def lr_ok(step, r):
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    p = (step - r.warmup) / max(1, r.steps - r.warmup)
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * p))


def repeat_ok(chosen):
    same, shared = 0, 0
    for t in range(chosen.shape[0] - 1):
        a, b = chosen[t].tolist(), chosen[t + 1].tolist()
        same += a[0] == b[0]
        shared += bool(set(a) & set(b))
    n = chosen.shape[0] - 1
    return same / n, shared / n


def test_correct_answers_pass():
    assert training.check_lr_schedule(lr_ok)
    assert training.check_repeat_rates(repeat_ok)


def test_not_yet():
    def nope(*a):
        raise NotImplementedError("your code here")
    assert "not yet" in training.check_lr_schedule(nope).message
    assert "not yet" in training.check_repeat_rates(nope).message


def test_lr_mistakes():
    def zero_start(step, r):
        return r.lr * step / r.warmup if step < r.warmup else lr_ok(step, r)
    r = training.check_lr_schedule(zero_start)
    assert not r and "(step + 1)" in r.message

    def to_zero(step, r):
        if step < r.warmup:
            return lr_ok(step, r)
        p = (step - r.warmup) / max(1, r.steps - r.warmup)
        return 0.5 * r.lr * (1 + math.cos(math.pi * p))
    r = training.check_lr_schedule(to_zero)
    assert not r and "min_lr" in r.message

    def from_zero(step, r):
        if step < r.warmup:
            return lr_ok(step, r)
        p = step / r.steps
        return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * p))
    r = training.check_lr_schedule(from_zero)
    assert not r and "end of warm-up" in r.message

    def linear(step, r):
        if step < r.warmup:
            return lr_ok(step, r)
        p = (step - r.warmup) / max(1, r.steps - r.warmup)
        return r.lr - (r.lr - r.min_lr) * p
    r = training.check_lr_schedule(linear)
    assert not r and "cosine" in r.message


def test_repeat_mistakes():
    def per_token(chosen):
        a, b = repeat_ok(chosen)
        n = chosen.shape[0]
        return a * (n - 1) / n, b * (n - 1) / n
    r = training.check_repeat_rates(per_token)
    assert not r and "pairs" in r.message

    def slotwise(chosen):
        a, b = chosen[:-1], chosen[1:]
        return (a[:, 0] == b[:, 0]).float().mean(), (a == b).any(-1).float().mean()
    r = training.check_repeat_rates(slotwise)
    assert not r and "slot by slot" in r.message


def test_chance_baseline():
    assert training.chance_shared_any(8, 1) == 1 / 8
    assert abs(training.chance_shared_any(8, 2) - (1 - 15 / 28)) < 1e-12
