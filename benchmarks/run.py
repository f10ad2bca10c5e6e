"""Run every benchmark and write results.md, results.json and the plots.

    python -m benchmarks.run [--quick] [--out DIR] [--notebooks] [--docs] [--threads N (default 1)]
                             [--repeats N] [--only SECTION,...]
    python benchmarks/run.py ...      (the same)

Sections: generation, instrumentation, moe, kv, memory (run by default), notebooks and
docs (only with --notebooks / --docs; otherwise reported as "not run"). --quick uses toy
sizes and two repeats: a smoke run of a few seconds, not a measurement.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402  (sets the offline environment before transformers loads)
from benchmarks import generation, instrumentation, kv_cache, memory, moe_dispatch, notebooks_docs, report  # noqa: E402

SECTIONS = ("generation", "instrumentation", "moe", "kv", "memory", "notebooks", "docs")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="toy sizes, 2 repeats: a smoke run of seconds")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent),
                   help="directory for results.md, results.json and *.png (default: benchmarks/)")
    p.add_argument("--notebooks", action="store_true", help="also time every notebook from a clean kernel")
    p.add_argument("--docs", action="store_true", help="also time a clean and a cached docs build")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1; 0: torch's own default). Per-op work is small "
                        "here, and with 2+ threads any background load makes the threads wait on each other")
    p.add_argument("--repeats", type=int, default=None, help="repeats for the generation benchmark")
    p.add_argument("--only", default=None,
                   help=f"comma-separated sections to run, from {', '.join(SECTIONS)} (default: all enabled)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)   # the memory processes inherit it through their spec
    common.quiet_transformers()
    common.freeze_heap()
    settings = common.Settings.make(args.quick, repeats=args.repeats, threads=args.threads,
                                    notebooks=args.notebooks, docs=args.docs)
    only = set(SECTIONS if args.only is None else [s.strip() for s in args.only.split(",") if s.strip()])
    unknown = only - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")

    from mixtral_edu.full_size.sizes import parameter_count
    used = dict.fromkeys(list(settings.models) + [settings.kv_model] + list(settings.mem_models))
    results = {
        "command": "python -m benchmarks.run" + ("" if not argv else " " + " ".join(argv)),
        "settings": settings.to_dict(),
        "machine": common.machine_info(),
        "models": {name: _describe(common.our_config(name), parameter_count) for name in used},
        "errors": {},
    }
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    log(f"benchmarks: torch {results['machine']['torch']} with {results['machine']['torch_threads']} thread(s), "
        f"{results['machine']['cpu']}, load {results['machine']['load_average_start']}")
    t_start = time.perf_counter()

    def section(key, title, fn):
        if key not in only:
            return
        log(f"== {title}")
        t0 = time.perf_counter()
        try:
            results[title] = fn()
        except Exception:  # record and go on: one broken benchmark should not hide the others
            results["errors"][title] = traceback.format_exc()
            log(results["errors"][title])
        results.setdefault("section_seconds", {})[title] = round(time.perf_counter() - t0, 1)
        log(f"   ({time.perf_counter() - t0:.1f} s)")

    background = memory.start(settings) if settings.mem_background and "memory" in only else None
    section("generation", "generation", lambda: generation.run(settings, log))
    section("instrumentation", "instrumentation", lambda: instrumentation.run(settings, log))
    section("moe", "moe_dispatch", lambda: moe_dispatch.run(settings, log))
    section("kv", "kv_cache", lambda: kv_cache.run(settings, log))
    section("memory", "memory", lambda: memory.finish(background, log) if background else memory.run(settings, log))
    section("notebooks", "notebooks", lambda: notebooks_docs.run_notebooks(settings.notebooks, log))
    section("docs", "docs", lambda: notebooks_docs.run_docs(settings.docs, log))
    for key in ("notebooks", "docs"):
        results.setdefault(key, {"run": False, "reason": "excluded by --only" if key not in only
                                 else "failed (see errors)", "rows": []})

    results["elapsed_s"] = time.perf_counter() - t_start
    results["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    paths = report.write_all(results, Path(args.out))
    log(f"wrote {paths['md']}, {paths['json']} and {len(results['plots'])} plot(s) in {results['elapsed_s']:.0f} s")
    if results["errors"]:
        log(f"errors in: {', '.join(results['errors'])}")
    import gc
    gc.unfreeze()  # hand the heap back as it was (matters when main() runs inside another program)
    return results


def _describe(config, parameter_count) -> str:
    p = parameter_count(config)
    return (f"{p} parameters, C={config.hidden_size}, I={config.intermediate_size}, L={config.num_hidden_layers}, "
            f"H={config.num_attention_heads}, Hkv={config.num_key_value_heads}, E={config.num_local_experts}, "
            f"K={config.num_experts_per_tok}, V={config.vocab_size}, sliding_window={config.sliding_window}")


if __name__ == "__main__":
    sys.exit(1 if main()["errors"] else 0)
