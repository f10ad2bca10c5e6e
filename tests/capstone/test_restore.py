"""Plugging in and taking out leaves the model exactly as it was, whatever is raised inside (hypothesis).

"Exactly": every module of the model holds the very same attribute objects as before (no attribute
added, none replaced), every mixtral_edu.modeling module holds the very same globals, no hook fn is
left on a hook point, nothing is left running, and the logits are bit for bit those of before.
"""
from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixtral_edu.build import PIECES, PieceError, plug_in
from mixtral_edu.build.plug import RUNNING
from mixtral_edu.build.diff import trace_diff

from capstone_helpers import reference_pieces
from pairs import left_padded, make_pair

REF = reference_pieces()
NAMES = list(PIECES)


def _stub(*args):
    raise NotImplementedError("a stub")


def _crash(*args):
    raise RuntimeError("the learner's bug")


def _wrong_shape(*args):
    return torch.zeros(1)


FAULTS = {
    "none": None,
    "raise in the block": ValueError("raised inside the with block"),
    "interrupt in the block": KeyboardInterrupt("Ctrl-C inside the with block"),
    "a stub": _stub,
    "a piece that crashes": _crash,
    "a piece of the wrong shape": _wrong_shape,
    "a piece that does not fit the signature": lambda: None,
}


def snapshot(model):
    modules = {name: dict(vars(m)) for name, m in model.named_modules()}
    modeling = {name: dict(vars(mod)) for name, mod in sys.modules.items() if name.startswith("mixtral_edu.modeling")}
    points = {name: list(p.fns) for name, p in model.hook_points().items()}
    return modules, modeling, points


def assert_same(before, after):
    for a, b in zip(before, after):
        assert a.keys() == b.keys()
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, dict):   # a module's attributes, or a modeling module's globals
                assert x.keys() == y.keys(), f"{key}: added or removed {set(x) ^ set(y)}"
                replaced = [k for k in x if x[k] is not y[k]]
                assert not replaced, f"{key}: {replaced} replaced"
            else:                     # a hook point's fns
                assert x == y, f"{key}: hook fns left behind"


@pytest.fixture(scope="module")
def setup():
    model, _ = make_pair(seed=8, sliding_window=3)
    ids, mask = left_padded(2, 5, pads=[0, 2], seed=9)
    with torch.no_grad():
        model.generate(ids, attention_mask=mask, max_new_tokens=3)   # rotary tables built once, for good
        logits = model(ids, attention_mask=mask).logits
    return model, ids, mask, logits, snapshot(model)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chosen=st.sets(st.sampled_from(NAMES), min_size=1),
       fault=st.sampled_from(list(FAULTS)), victim=st.integers(0, 100), nested=st.booleans())
def test_the_model_is_as_it_was_whatever_happens(setup, chosen, fault, victim, nested):
    model, ids, mask, logits, before = setup
    pieces = {name: REF[name] for name in sorted(chosen)}
    value = FAULTS[fault]
    if callable(value):
        pieces[sorted(chosen)[victim % len(chosen)]] = value
    try:
        with torch.no_grad(), plug_in(model, pieces):
            if nested:
                with plug_in(model, {"repeat_kv": REF["repeat_kv"], "rms_norm": REF["rms_norm"]}):
                    model.generate(ids, attention_mask=mask, max_new_tokens=2)
            else:
                model.generate(ids, attention_mask=mask, max_new_tokens=2)
            if isinstance(value, BaseException):
                raise value
    except (PieceError, ValueError, KeyboardInterrupt):
        pass
    assert_same(before, snapshot(model))
    assert RUNNING == []
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, logits)


def test_a_trace_diff_leaves_both_models_as_they_were(setup):
    model, ids, mask, logits, before = setup
    other, _ = make_pair(seed=8, sliding_window=3)
    with torch.no_grad():   # its rotary tables are built on first use: build them before the snapshot
        other.generate(ids, attention_mask=mask, max_new_tokens=5)
    other_before = snapshot(other)
    trace_diff(model, {"route": _crash}, input_ids=ids, attention_mask=mask)
    trace_diff(model, other=other, pieces={"dispatch": REF["dispatch"]}, input_ids=ids, attention_mask=mask)
    assert_same(before, snapshot(model))
    assert_same(other_before, snapshot(other))
    with torch.no_grad():
        assert torch.equal(model(ids, attention_mask=mask).logits, logits)
