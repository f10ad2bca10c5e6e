"""4. KV cache on vs off: the time of each decoding step as the sequence grows.

generate(use_cache=True) feeds one new token per step and attends over the cached keys;
generate(use_cache=False) feeds the whole sequence again every step. Each step is timed
inside the real generate call: a hook function on `model.hook_next_tokens` (which fires
once per step, right after the next token is chosen) records a timestamp, so step i lasts
from stamp i-1 (or the start of the call) to stamp i. Step 0 is the prefill.

With the cache a step costs about the same at any length (its attention part grows
linearly, but is small here), so total time grows linearly with the number of tokens;
without it step i re-runs the whole model on prompt + i tokens, so per-step time grows
linearly and total time quadratically. Reported: per-step times (median over repeats),
a straight-line fit of step time against sequence length, and the totals.
"""
from __future__ import annotations

import time
from typing import Dict, List

import numpy as np
import torch

import mixtral_edu

from .common import Settings, build_ours, greedy, prompt


def _timed_generate(model, ids, mask, new_tokens: int, use_cache: bool):
    stamps: List[float] = []

    def stamp(tokens, point):
        stamps.append(time.perf_counter())

    with mixtral_edu.hooks(model, {"hook_next_tokens": stamp}):
        t0 = time.perf_counter()
        out = greedy(model, ids, mask, new_tokens, use_cache=use_cache)
        total = time.perf_counter() - t0
    steps = np.diff([t0] + stamps).tolist()
    return out, steps, total


def run(settings: Settings, log=print) -> dict:
    s = settings
    model = build_ours(s.kv_model, "sdpa", s.seed)
    ids, mask = prompt(1, s.kv_prompt_len, model.config.vocab_size, s.seed)
    greedy(model, ids, mask, 4, use_cache=True)   # warm-up
    greedy(model, ids, mask, 4, use_cache=False)
    per_step: Dict[str, List[List[float]]] = {"cache": [], "no_cache": []}
    totals: Dict[str, List[float]] = {"cache": [], "no_cache": []}
    outs = {}
    for r in range(s.kv_repeats):
        for key in (("cache", "no_cache") if r % 2 == 0 else ("no_cache", "cache")):
            out, steps, total = _timed_generate(model, ids, mask, s.kv_new_tokens, use_cache=(key == "cache"))
            per_step[key].append(steps)
            totals[key].append(total)
            outs[key] = out
    same = bool(torch.equal(outs["cache"], outs["no_cache"]))
    seq_len = [s.kv_prompt_len + i for i in range(s.kv_new_tokens)]   # tokens in the sequence at step i
    result = {"model": s.kv_model, "prompt_len": s.kv_prompt_len, "new_tokens": s.kv_new_tokens,
              "repeats": s.kv_repeats, "same_tokens": same, "seq_len": seq_len, "method": __doc__}
    for key in per_step:
        arr = np.array(per_step[key])                         # (repeats, steps)
        med = np.median(arr, axis=0)
        x, y = np.array(seq_len[1:], dtype=float), med[1:]
        slope, intercept = (np.polyfit(x, y, 1) if len(x) >= 2 else (float("nan"), float(y[0]) if len(y) else 0.0))
        k = max(1, min(5, (len(med) - 1) // 4))
        result[key] = {
            "step_s_median": med.tolist(),
            "step_s_q1": np.percentile(arr, 25, axis=0).tolist(),
            "step_s_q3": np.percentile(arr, 75, axis=0).tolist(),
            "total_s": totals[key],
            "total_s_median": float(np.median(totals[key])),
            "prefill_s": float(med[0]),
            "first_decode_steps_s": float(np.median(med[1:1 + k])) if len(med) > 1 else float("nan"),
            "last_decode_steps_s": float(np.median(med[-k:])) if len(med) > 1 else float("nan"),
            "fit_slope_s_per_token": float(slope),
            "fit_intercept_s": float(intercept),
        }
    result["total_speedup"] = result["no_cache"]["total_s_median"] / result["cache"]["total_s_median"]
    log(f"  kv cache {s.kv_model}: last steps {result['cache']['last_decode_steps_s'] * 1e3:.2f} ms with cache, "
        f"{result['no_cache']['last_decode_steps_s'] * 1e3:.2f} ms without; total speedup {result['total_speedup']:.2f}x")
    return result
