"""Contexts always clean up: any number of trace / hooks / run_with_cache, entered and exited in
any order, with exceptions raised inside, leave the model exactly as it was, and a trace that has
exited records nothing more. A property test over random orders, plus the cases the issue saw."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mixtral_edu
from mixtral_edu.modeling.hook_points import HookPoint

from pairs import make_pair, random_ids

MODEL, _ = make_pair(seed=31)
IDS = random_ids(2, 5, seed=32)
GEN = dict(max_new_tokens=3, eos_token_id=None)


def snapshot(model):
    """Everything a context could leave behind: instance attributes, hook fns, torch hooks."""
    out = {}
    for name, m in model.named_modules():
        out[name] = (sorted(k for k in m.__dict__),
                     len(m._forward_pre_hooks), len(m._forward_hooks),
                     len(m.fns) if isinstance(m, HookPoint) else 0,
                     {k: id(v) for k, v in m.__dict__.items() if callable(v) and not isinstance(v, torch.nn.Module)})
    return out


def outputs(model):
    with torch.no_grad():
        return model(IDS).logits, model.generate(IDS, **GEN)


BEFORE = snapshot(MODEL)
LOGITS, GENERATED = outputs(MODEL)


def assert_pristine(model):
    assert snapshot(model) == BEFORE
    logits, generated = outputs(model)
    assert torch.equal(logits, LOGITS) and torch.equal(generated, GENERATED)


class Boom(RuntimeError):
    pass


def raising_hook(x, point):
    raise Boom("raised inside a hook")


def doubling_hook(x, point):
    return x * 2


def make_context(kind):
    if kind == "trace":
        return mixtral_edu.trace(MODEL)
    if kind == "hooks-look":
        return mixtral_edu.hooks(MODEL, {"*hook_resid_post": lambda x, p: None})
    if kind == "hooks-edit":
        return mixtral_edu.hooks(MODEL, {"model.layers.0.hook_attn_out": doubling_hook})
    if kind == "hooks-expert":
        return mixtral_edu.hooks(MODEL, mixtral_edu.disable_expert(layer=None, expert=1))
    return mixtral_edu.hooks(MODEL, {"model.hook_final_norm": raising_hook})


KINDS = ["trace", "hooks-look", "hooks-edit", "hooks-expert", "hooks-raise"]
ACTIONS = ["forward", "generate", "run_with_cache", "run_with_cache-raise", "nothing"]


@st.composite
def scenarios(draw):
    """A list of events: ("enter", i), ("exit", i, with_exception), ("act", action)."""
    n = draw(st.integers(1, 4))
    kinds = [draw(st.sampled_from(KINDS)) for _ in range(n)]
    events = [("enter", i) for i in range(n)] + [("exit", i) for i in range(n)]
    order = draw(st.permutations(events))
    # each context's exit after its enter: swap where needed
    seen, fixed = set(), []
    pending = list(order)
    while pending:
        ev = next(e for e in pending if e[0] == "enter" or e[1] in seen)
        pending.remove(ev)
        if ev[0] == "enter":
            seen.add(ev[1])
        fixed.append(ev)
    out = []
    for ev in fixed:
        out.append(("act", draw(st.sampled_from(ACTIONS))))
        out.append(ev + ((draw(st.booleans()),) if ev[0] == "exit" else ()))
    return kinds, out


def forward_then_raise():
    MODEL(IDS)
    raise Boom("raised inside run_with_cache")


def act(action):
    try:
        with torch.no_grad():
            if action == "forward":
                MODEL(IDS)
            elif action == "generate":
                MODEL.generate(IDS, **GEN)
            elif action == "run_with_cache":
                mixtral_edu.run_with_cache(MODEL, IDS, names="*hook_resid_post")
            elif action == "run_with_cache-raise":
                mixtral_edu.run_with_cache(MODEL, forward_then_raise)
    except Boom:
        pass  # a hook or the run raised: the contexts must still unwind cleanly


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_any_order_of_contexts_leaves_the_model_as_it_was(scenario):
    kinds, events = scenario
    contexts = [make_context(k) for k in kinds]
    entered = {}
    closed_counts = {}
    for ev in events:
        if ev[0] == "act":
            act(ev[1])
        elif ev[0] == "enter":
            entered[ev[1]] = contexts[ev[1]].__enter__()
        else:
            i, with_exception = ev[1], ev[2]
            cm = contexts[i]
            if with_exception:  # as when the body of `with` raises
                try:
                    raise Boom("raised in the with block")
                except Boom as err:
                    try:
                        swallowed = cm.__exit__(Boom, err, err.__traceback__)
                    except Boom:
                        swallowed = False
                    assert not swallowed, "a context must never swallow the exception"
            else:
                cm.__exit__(None, None, None)
            if kinds[i] == "trace":
                tr = contexts[i]
                closed_counts[i] = (len(tr.steps), sum(1 for _ in tr.nodes()))
    act("forward")
    act("generate")
    for i, counts in closed_counts.items():  # exited traces recorded nothing more
        tr = contexts[i]
        assert (len(tr.steps), sum(1 for _ in tr.nodes())) == counts
    assert_pristine(MODEL)


def test_two_traces_exited_out_of_order_unwrap_everything():
    a, b = mixtral_edu.trace(MODEL), mixtral_edu.trace(MODEL)
    a.__enter__()
    b.__enter__()
    MODEL.generate(IDS, **GEN)
    a.__exit__(None, None, None)           # the outer one first
    steps_a = len(a.steps)
    MODEL.generate(IDS, **GEN)
    assert len(a.steps) == steps_a          # a has stopped recording ...
    assert len(b.steps) == 2 * steps_a      # ... b has not
    b.__exit__(None, None, None)
    assert_pristine(MODEL)


def test_a_wrapper_kept_past_exit_only_calls_through():
    with mixtral_edu.trace(MODEL) as tr:
        kept = MODEL.generate             # the trace's wrapper
    n = len(tr.steps)
    out = kept(IDS, **GEN)
    assert len(tr.steps) == n and torch.equal(out, GENERATED)
    assert_pristine(MODEL)


def test_reentering_an_open_trace_is_refused():
    tr = mixtral_edu.trace(MODEL)
    with tr:
        try:
            tr.__enter__()
            raise AssertionError("entering twice must raise")
        except RuntimeError as err:
            assert "already recording" in str(err)
    assert_pristine(MODEL)
