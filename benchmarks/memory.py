"""6. Peak memory of generation, and the KV cache's measured bytes against the formula.

tracemalloc sees only Python's allocator, not torch's tensors, so memory is read from
the kernel instead, in a fresh process per configuration (`python -m benchmarks.memory
SPEC`): import, build the model, make the prompt; then reset the peak-RSS counter
(`echo 5 > /proc/self/clear_refs`, Linux >= 4.0), run one greedy generate, and read
the peak (`getrusage(RUSAGE_SELF).ru_maxrss`, equal to VmHWM after the reset). A 1-token
generate runs first, outside the measurement, so one-time lazy imports (transformers
loads torch._dynamo on its first generate) are not counted as generation memory.
  peak delta = peak RSS during generate - RSS just before it
That delta is what generation itself needs on top of the loaded model: activations of
the widest forward (the prefill), logits, and the KV cache. Where the reset is not
allowed the delta falls back to ru_maxrss after minus before (a lower bound, since the
setup's own peak can hide it). Alongside: resident weights, and the returned cache's
bytes (`sizes.measure_cache_bytes`) against `sizes.kv_cache_bytes(config, S, B, fp32)`
with S = prompt + new tokens - 1 (the last token's keys are never computed).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import List

from .common import ROOT, Settings


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(spec: dict) -> dict:
    """Runs in its own process: one configuration, one generate."""
    import torch
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    from mixtral_edu.full_size.sizes import kv_cache_bytes, measure_cache_bytes
    from .common import build_ours, build_theirs, greedy, our_config, prompt

    model = (build_ours if spec["side"] == "ours" else build_theirs)(spec["model"], spec["attn"])
    cfg = our_config(spec["model"])
    ids, mask = prompt(spec["batch"], spec["prompt_len"], model.config.vocab_size)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    # one-time work outside the measurement: transformers imports torch._dynamo (tens of MiB of
    # Python modules) on its first generate; a 1-token generate on a 2-token prompt triggers it
    greedy(model, ids[:1, :2], mask[:1, :2], 1)
    import gc
    gc.collect()
    rss_before = _status_kib("VmRSS") * 1024
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    reset = _reset_peak()
    out = greedy(model, ids, mask, spec["new_tokens"], return_dict_in_generate=True)
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    hwm_after = _status_kib("VmHWM") * 1024
    seq = spec["prompt_len"] + spec["new_tokens"] - 1
    measured = measure_cache_bytes(out.past_key_values)
    formula = kv_cache_bytes(cfg, seq, spec["batch"], dtype=torch.float32)
    return dict(spec, weights_bytes=weights, rss_before=rss_before, peak_reset=reset,
                peak_rss=(hwm_after if reset else maxrss_after),
                peak_delta=(hwm_after - rss_before) if reset else (maxrss_after - maxrss_before),
                ru_maxrss_after=maxrss_after, kv_seq_len=seq, kv_measured_bytes=measured,
                kv_formula_bytes=formula, generated=int(out.sequences.shape[1] - spec["prompt_len"]))


def _spawn(spec: dict) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-m", "benchmarks.memory", json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        return dict(spec, error=proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else
                    f"exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def start(settings: Settings):
    """Launch the worker processes (at most mem_parallel at once); `finish` collects them."""
    import torch
    s = settings
    specs: List[dict] = [
        {"side": side, "model": name, "attn": "sdpa", "batch": b, "prompt_len": s.prompt_len,
         "new_tokens": s.new_tokens, "threads": torch.get_num_threads()}
        for name in s.mem_models for b in s.mem_batches for side in ("ours", "theirs")]
    # Processes are independent (each has its own peak), so several can run at once.
    pool = ThreadPoolExecutor(max_workers=max(1, s.mem_parallel))
    return pool, [pool.submit(_spawn, spec) for spec in specs]


def finish(handle, log=print) -> dict:
    pool, futures = handle
    rows = [f.result() for f in futures]
    pool.shutdown()
    for r in rows:
        if "error" in r:
            log(f"  memory {r['side']} {r['model']} B={r['batch']}: failed: {r['error']}")
        else:
            log(f"  memory {r['side']} {r['model']} B={r['batch']}: peak +{r['peak_delta'] / 2**20:.1f} MiB, "
                f"KV {r['kv_measured_bytes']} B measured vs {r['kv_formula_bytes']} B formula")
    return {"rows": rows, "method": __doc__}


def run(settings: Settings, log=print) -> dict:
    return finish(start(settings), log)


if __name__ == "__main__":
    print(json.dumps(worker(json.loads(sys.argv[1]))))
