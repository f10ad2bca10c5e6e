"""2. The cost of seeing inside: hook points at rest, a full trace, capturing every activation.

(a) Nothing attached. Every HookPoint stays in the model, so there is no "plain" build of
    the same code to time against. Two measurements stand in for one:
      - an upper bound: (HookPoint calls per forward) x (one `self.hook_x(x)` with nothing
        attached) / (time of that forward), the call micro-benchmarked (the MoE loop calls
        every expert, as transformers does: no other check depends on hooks);
      - transformers' model (no hook points at all) as the plain reference: the speed
        ratio ours/theirs of one forward on the same weights, prefill and one decode step
        (> 1: ours is faster).
(b) Full trace: `with mixtral_edu.trace(model): model.generate(...)` against the same
    generate untraced; also one forward on the prompt. Slowdown = traced / plain. A traced
    call notes what it saw and writes each node's text the first time the node is read, so
    "trace, then read" also reads every node (`tr.to_dict()`) inside the timed call: the
    whole cost for a reader of the tree.
(c) Capture: `run_with_cache(model, ...)` with every hook point against the plain call,
    for one forward on the prompt and for a whole generate.
Each slowdown is a paired per-repeat ratio (median, IQR).
"""
from __future__ import annotations

import timeit
from typing import List

import torch
from torch import nn

import mixtral_edu
from mixtral_edu.modeling.hook_points import HookPoint, name_hook_points

from .common import Settings, Stats, build_pair, compare, greedy, paired, prompt


def hook_call_cost(number: int = 200_000, repeat: int = 5) -> dict:
    """Seconds per at-rest cost item, loop overhead included (timeit, median of `repeat`).

    hookpoint_call_s: `self.hook_x(x)` as the model code does it: the attribute lookup (a plain
    instance attribute, see hook_points.name_hook_points), then HookPoint.__call__ finding no fns.
    python_identity_call_s: a bare Python function call, for scale.
    """
    holder = nn.Module()
    holder.hook_x = HookPoint("bench")
    name_hook_points(holder)  # as the model's constructor does
    x = torch.zeros(1)

    def per_call(stmt, g):
        return Stats([t / number for t in timeit.Timer(stmt, globals=g).repeat(repeat=repeat, number=number)]).to_dict()

    return {"hookpoint_call_s": per_call("h.hook_x(x)", {"h": holder, "x": x}),
            "python_identity_call_s": per_call("f(x)", {"f": _identity, "x": x})}


def _identity(x):
    return x


def count_hook_calls(fn) -> int:
    """How many HookPoint calls fn makes (the class's __call__ is counted for the call only)."""
    original = HookPoint.__call__
    n = [0]

    def counting(self, x):
        n[0] += 1
        return original(self, x)

    HookPoint.__call__ = counting
    try:
        fn()
    finally:
        HookPoint.__call__ = original
    return n[0]


def run(settings: Settings, log=print) -> dict:
    s = settings
    cost = None
    rows: List[dict] = []
    for name in s.models:
        ours, theirs = build_pair(name, "sdpa", s.seed)
        if cost is None:
            cost = hook_call_cost(number=5_000 if s.quick else 200_000, repeat=3 if s.quick else 5)
            per_call = cost["hookpoint_call_s"]["median"]
            log(f"  empty HookPoint call: {per_call * 1e9:.0f} ns")
        ids, mask = prompt(1, s.prompt_len, ours.config.vocab_size, s.seed)
        with torch.no_grad():
            legacy_ours = ours(ids, attention_mask=mask, use_cache=True).past_key_values  # no cache in: a tuple out
            assert isinstance(legacy_ours, tuple), type(legacy_ours)
            legacy_theirs = tuple((k.clone(), v.clone()) for k, v in legacy_ours)
        step_ids = ids[:, -1:]
        step_mask = torch.ones(1, s.prompt_len + 1, dtype=torch.long)
        step_pos = torch.tensor([[s.prompt_len]])

        def prefill(m):
            def f():
                with torch.no_grad():
                    return m(input_ids=ids, attention_mask=mask, use_cache=True)
            return f

        def step(m, past):
            def f():  # a legacy tuple in: each call starts from the same cache, nothing accumulates
                with torch.no_grad():
                    return m(input_ids=step_ids, attention_mask=step_mask, position_ids=step_pos,
                             past_key_values=past, use_cache=True)
            return f

        runs = {"prefill": prefill(ours), "decode_step": step(ours, legacy_ours),
                "generate": lambda: greedy(ours, ids, mask, s.trace_new_tokens)}
        calls = {k: count_hook_calls(f) for k, f in runs.items()}

        def bound(kind, time_s):
            return calls[kind] * per_call / time_s

        def traced_generate():
            with mixtral_edu.trace(ours):
                greedy(ours, ids, mask, s.trace_new_tokens)

        def traced_generate_read():
            with mixtral_edu.trace(ours) as tr:
                greedy(ours, ids, mask, s.trace_new_tokens)
            tr.to_dict()

        def traced_prefill():
            with mixtral_edu.trace(ours):
                prefill(ours)()

        fns = {
            "ours.prefill": prefill(ours), "theirs.prefill": prefill(theirs),
            "ours.step": step(ours, legacy_ours), "theirs.step": step(theirs, legacy_theirs),
            "plain.generate": lambda: greedy(ours, ids, mask, s.trace_new_tokens),
            "trace.generate": traced_generate,
            "trace.generate+read": traced_generate_read,
            "trace.prefill": traced_prefill,
            "capture.prefill": lambda: mixtral_edu.run_with_cache(ours, ids, attention_mask=mask, use_cache=True),
            "capture.generate": lambda: mixtral_edu.run_with_cache(
                ours, lambda: greedy(ours, ids, mask, s.trace_new_tokens)),
        }
        t = compare(fns, s.inst_repeats, warmup=1)
        _, captured = mixtral_edu.run_with_cache(ours, ids, attention_mask=mask, use_cache=True)

        def ratio(a, b):
            return paired(t[a].samples, t[b].samples, lambda x, y: x / y).to_dict()

        row = {
            "model": name, "attn": "sdpa", "batch": 1, "prompt_len": s.prompt_len,
            "generate_new_tokens": s.trace_new_tokens,
            "hook_points": len(ours.hook_points()),
            "hook_calls": calls,
            "captured_points": len(captured),
            "times": {k: v.to_dict() for k, v in t.items()},
            # upper bound of hooks-at-rest overhead, as a fraction of our own forward time
            "idle_bound_prefill": bound("prefill", t["ours.prefill"].median),
            "idle_bound_step": bound("decode_step", t["ours.step"].median),
            "idle_bound_generate": bound("generate", t["plain.generate"].median),
            # speed ours / speed theirs = time theirs / time ours (> 1: ours is faster), as in generation
            "vs_transformers_prefill": ratio("theirs.prefill", "ours.prefill"),
            "vs_transformers_step": ratio("theirs.step", "ours.step"),
            "trace_generate": ratio("trace.generate", "plain.generate"),
            "trace_generate_read": ratio("trace.generate+read", "plain.generate"),
            "trace_prefill": ratio("trace.prefill", "ours.prefill"),
            "capture_prefill": ratio("capture.prefill", "ours.prefill"),
            "capture_generate": ratio("capture.generate", "plain.generate"),
        }
        log(f"  instrumentation {name}: idle bound {row['idle_bound_step']:.2%} of a decode step; "
            f"speed ours/theirs, decode step {row['vs_transformers_step']['median']:.2f}; "
            f"trace generate {row['trace_generate']['median']:.2f}x; "
            f"capture prefill {row['capture_prefill']['median']:.2f}x")
        rows.append(row)
        del ours, theirs
    return {"rows": rows, "hook_call": cost, "method": __doc__}
