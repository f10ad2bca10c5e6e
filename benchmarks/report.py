"""Write results.md (tables), results.json (everything) and the plots from the collected results."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List

from .common import MODEL_TITLES, fmt_num, fmt_ratio, fmt_stats

MiB = 2 ** 20


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _pct(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x * 100:.2f}%"


def _title(name: str) -> str:
    return MODEL_TITLES.get(name, name)


# -- markdown ---------------------------------------------------------------------------------------

def write_markdown(results: dict, path: Path) -> None:
    m, st = results["machine"], results["settings"]
    load0 = m.get("load_average_start") or [math.nan]
    load1 = m.get("load_average_end") or [math.nan]
    lines = ["# Benchmark results", ""]
    lines += [f"Written by `{results['command']}` in {results['elapsed_s']:.0f} s. "
              "Every number is the median over repeats, with the interquartile range (IQR) in "
              "brackets; a ratio is formed per repeat from samples taken back to back, then summarised."]
    busy = max(load0[0], load1[0])
    if math.isfinite(busy) and busy > (m.get("cores_available") or m["cores"] or 1):
        lines += ["", f"**Warning: the machine was busy (1-minute load average up to {busy:.1f} on "
                  f"{m.get('cores_available') or m['cores']} cores): other work competed for the CPU, so these "
                  "timings are noisy. Run again on a quiet machine for numbers to quote.**"]
    if st["quick"]:
        lines += ["", "**This is a `--quick` run: toy sizes and two repeats, to check the command works. "
                  "Its numbers are not results.**"]
    lines += [""]
    lines += ["## Machine", ""]
    lines += _table(["", ""], [
        ["CPU", f"{m['cpu']} (from /proc/cpuinfo)"],
        ["cores", f"{m['cores']} ({m['cores_available']} available to this process)"],
        ["torch", f"{m['torch']}, {m['torch_threads']} intra-op thread(s)"],
        ["transformers", m["transformers"]],
        ["python", f"{m['python']} on {m['platform']}"],
        ["date", m["date"]],
        ["load average (1 min)", f"{load0[0]:.2f} at start, {load1[0]:.2f} at end "
                                 "(above the core count means other work competed for the CPU)"],
        ["commit", m.get("git_commit") or "unknown"],
    ])
    lines += ["Models: " + "; ".join(f"**{_title(k)}**: {v}" for k, v in results["models"].items()) + ".", ""]

    if results.get("errors"):
        lines += ["## Errors", "", "These benchmarks failed (full tracebacks in results.json):", ""]
        lines += [f"- **{k}**: {v.strip().splitlines()[-1].replace('|', '/')}" for k, v in results["errors"].items()] + [""]
    lines += _summary(results)
    lines += _generation(results)
    lines += _instrumentation(results)
    lines += _moe(results)
    lines += _kv(results)
    lines += _notebooks_docs(results)
    lines += _memory(results)
    lines += ["## Reproduce", "", "```bash",
              ". .venv/bin/activate",
              "python -m benchmarks.run                                # sections 1-4 and 6 (~10 min on a quiet 2-core machine)",
              "python -m benchmarks.run --notebooks --docs             # everything",
              "python -m benchmarks.run --quick --out /tmp/bench        # smoke run, seconds",
              "```", "",
              "Plots: " + ", ".join(f"`{p}`" for p in results.get("plots", [])) + " (next to this file); "
              "raw samples: `results.json`.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _span(values: List[float]) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.2f}x" if round(lo, 2) == round(hi, 2) else f"{lo:.2f}x – {hi:.2f}x"


def _summary(results: dict) -> List[str]:
    rows = []
    gen = results.get("generation", {}).get("rows", [])
    if gen:
        dec = [r["decode_ratio"]["median"] for r in gen]
        pre = [r["prefill_ratio"]["median"] for r in gen]
        rows.append(["as fast as transformers: decode tokens/s, ours (the teaching loop: every expert called, "
                     "as in transformers) / theirs", ">= 1x (within noise)",
                     f"{_span(dec)} over {len(dec)} configurations"])
        rows.append(["as fast as transformers: prefill tokens/s, ours / theirs", ">= 1x (within noise)",
                     _span(pre)])
        if all("fast_decode_ratio" in r for r in gen):
            fdec = [r["fast_decode_ratio"]["median"] for r in gen]
            fpre = [r["fast_prefill_ratio"]["median"] for r in gen]
            rows.append(["faster than transformers: decode tokens/s, fast path (`grouped_moe`: idle experts "
                         "not called) / theirs", "> 1x", f"{_span(fdec)} over {len(fdec)} configurations"])
            rows.append(["faster than transformers: prefill tokens/s, fast path / theirs", ">= 1x", _span(fpre)])
    inst = results.get("instrumentation", {}).get("rows", [])
    if inst:
        bound = max(max(r["idle_bound_prefill"], r["idle_bound_step"]) for r in inst)
        rows.append(["hook points at rest (upper bound)", "< 3%", f"at most {_pct(bound)} of a forward"])
        tr = [r["trace_generate"]["median"] for r in inst]
        rows.append(["full trace of generate", "< 1.5x", _span(tr)])
        if all("trace_generate_read" in r for r in inst):
            rd = [r["trace_generate_read"]["median"] for r in inst]
            rows.append(["full trace of generate, then every node read", "report", _span(rd)])
        cap = [r["capture_prefill"]["median"] for r in inst]
        rows.append(["capture of every hook point, one forward", "report", _span(cap)])
    nb = results.get("notebooks", {})
    if nb.get("run"):
        slowest = max((r["seconds"] for r in nb["rows"]), default=0)
        rows.append(["notebooks from a clean kernel", "each < 30 s, all < 3 min",
                     f"slowest {slowest:.1f} s, all {nb['total_s']:.1f} s"
                     + ("" if nb["meets_floor"] else " (floor missed)")])
    else:
        rows.append(["notebooks from a clean kernel", "each < 30 s, all < 3 min", f"not run: {nb.get('reason')}"])
    docs = results.get("docs", {})
    if docs.get("run"):
        rows.append(["docs build", "report",
                     ", ".join(f"{r['build']} {r['seconds']:.0f} s ({r['status']})" for r in docs["rows"])])
    else:
        rows.append(["docs build", "report", f"not run: {docs.get('reason')}"])
    return ["## Summary", ""] + _table(["claim", "target", "measured"], rows)


def _generation(results: dict) -> List[str]:
    g = results.get("generation")
    if not g:
        return []
    st = results["settings"]
    lines = ["## 1. Generation throughput: mixtral_edu vs transformers 4.41.2", "",
             f"Same weights on both sides, greedy, CPU, fp32, {st['prompt_len']}-token prompts without padding, "
             f"{st['new_tokens']} new tokens (eos stopping off on both sides: `eos_token_id=None`), "
             f"up to {st['repeats']} repeats (n; fewer, but at least 3, where they would take more than "
             f"{st['gen_budget_s']:.0f} s), ours, fast and theirs interleaved within each repeat.",
             "",
             "- **ours** = the teaching model as it ships: its MoE loop calls all E experts in every layer, "
             "an expert no token chose on an empty batch, as transformers 4.41.2 does, so both sides do the "
             "same work.",
             "- **fast** = the same weights inside `mixtral_edu.fast.moe.grouped_moe`: tokens sorted by expert "
             "once, only the experts some token chose are called (in a decode step at batch 1 that is K of E "
             "per layer); its tokens are asserted equal to ours.",
             "- **prefill** = one forward call on the whole prompt with `use_cache=True`, timed apart from "
             "the generate calls: ours and theirs alternate, each sample averages back-to-back calls lasting "
             "at least 0.1 s, at least 7 samples (a single ~10 ms call timed right after the other side's long "
             "generate showed an order effect of up to 25%); tokens/s = batch x prompt length / time.",
             f"- **decode** = (time of `generate(max_new_tokens={st['new_tokens']})` - time of "
             f"`generate(max_new_tokens=1)`) / {st['new_tokens'] - 1}: the difference is exactly the "
             f"{st['new_tokens'] - 1} decode steps (prepare inputs, one forward on one token per row with the "
             "KV cache, argmax, append), with setup and prefill cancelled out; tokens/s = batch / step time.",
             "- **ours/theirs**, **fast/theirs** = ratio of tokens/s, per repeat (> 1: ours is faster).",
             "- **same tokens** = share of generated tokens identical on both sides "
             "(fp32 rounding can flip a near-tie late in a random model).", ""]
    rows = []
    fast = all("fast" in r for r in g["rows"])
    for r in g["rows"]:
        o, t = r["ours"], r["theirs"]
        row = [_title(r["model"]), r["attn"], r["batch"], r["repeats"],
               fmt_stats(o["prefill_tok_s"]), fmt_stats(t["prefill_tok_s"]), fmt_ratio(r["prefill_ratio"]),
               fmt_stats(o["decode_tok_s"]), fmt_stats(t["decode_tok_s"]), fmt_ratio(r["decode_ratio"]),
               fmt_stats(o["decode_step_s"], 1e3, " ms", spread=False)]
        if fast:
            row += [fmt_stats(r["fast"]["decode_tok_s"]), fmt_ratio(r["fast_decode_ratio"]),
                    fmt_ratio(r["fast_prefill_ratio"])]
        rows.append(row + [f"{r['same_tokens']:.0%}"])
    lines += _table(["model", "attn", "batch", "n", "prefill tok/s ours", "prefill tok/s transformers", "ours/theirs",
                     "decode tok/s ours", "decode tok/s transformers", "ours/theirs", "ours ms/step"]
                    + (["decode tok/s fast", "fast/theirs (decode)", "fast/theirs (prefill)"] if fast else [])
                    + ["same tokens"], rows)
    lines += ["Plot: `generation.png`.", ""]
    return lines


def _instrumentation(results: dict) -> List[str]:
    ins = results.get("instrumentation")
    if not ins:
        return []
    st = results["settings"]
    call = ins["hook_call"]
    lines = ["## 2. The cost of instrumentation", "",
             "sdpa attention, batch 1, the same prompt as above. Hook points cannot be removed from the model, "
             "so the cost of **hooks at rest** (nothing attached) is bounded from above: (HookPoint calls per "
             f"forward) x (one `self.hook_x(x)`, submodule lookup included: {fmt_num(call['hookpoint_call_s']['median'] * 1e9)} ns) "
             "/ (that forward's time); nothing else in the model looks at hooks. A bare Python function "
             f"call takes {fmt_num(call['python_identity_call_s']['median'] * 1e9)} ns here. Transformers' model, "
             "which has no hook points, is the plain reference: speed ours / speed theirs (> 1: ours is faster). "
             f"A decode step is one forward on one token with a {st['prompt_len']}-token cache (given as a legacy "
             "tuple, so every call starts from the same cache).", ""]
    rows = []
    for r in ins["rows"]:
        c = r["hook_calls"]
        rows.append([_title(r["model"]), r["hook_points"], f"{c['prefill']} / {c['decode_step']}",
                     _pct(r["idle_bound_prefill"]), _pct(r["idle_bound_step"]),
                     fmt_ratio(r["vs_transformers_prefill"]), fmt_ratio(r["vs_transformers_step"])])
    lines += _table(["model", "hook points", "hook calls per prefill / decode step", "at-rest bound, prefill",
                     "at-rest bound, decode step", "speed ours/theirs, prefill", "speed ours/theirs, decode step"],
                    rows)
    lines += [f"**Tracing and capture**: slowdown = time with / time without, paired per repeat "
              f"({st['inst_repeats']} repeats). Generate: batch 1, {st['trace_new_tokens']} new tokens. "
              "Trace: `with mixtral_edu.trace(model)` with default settings (every layer, step and node). "
              "A node's text (summaries, facts) is written the first time it is read, from what the call "
              "noted: *trace, then read* also calls `tr.to_dict()` in the timed block, which reads every node. "
              "Capture: `run_with_cache` with every hook point (`names=None`).", ""]
    rows = []
    for r in ins["rows"]:
        tm = r["times"]
        rows.append([_title(r["model"]), fmt_stats(tm["plain.generate"], 1e3, " ms", spread=False),
                     fmt_ratio(r["trace_generate"]), fmt_ratio(r.get("trace_generate_read", {})),
                     fmt_ratio(r["trace_prefill"]),
                     f"{fmt_ratio(r['capture_prefill'])} ({r['captured_points']} points)",
                     fmt_ratio(r["capture_generate"])])
    lines += _table(["model", "generate, plain", "trace: generate (target < 1.5x)", "trace, then read every node",
                     "trace: one forward",
                     "capture all: one forward", "capture all: generate"], rows)
    lines += ["Plot: `instrumentation.png`.", ""]
    return lines


def _moe(results: dict) -> List[str]:
    moe = results.get("moe_dispatch")
    if not moe:
        return []
    st = results["settings"]
    cfgs = "; ".join(f"{_title(c['model'])}: C={c['hidden_size']}, I={c['intermediate_size']}, "
                     f"E={c['experts']}, K={c['top_k']}" for c in moe["configs"])
    lines = ["## 3. MoE dispatch: per-expert loop vs grouped", "",
             f"One `MixtralSparseMoeBlock` (layer 0; {cfgs}), forward on (1, N, C) random hidden states, "
             f"{st['moe_repeats']} repeats. **loop** is the default (transformers' loop: a `torch.where` per "
             "expert, then gather, expert MLP, `index_add_`); **grouped** sorts the N*K (token, expert) pairs by "
             "expert once and runs each expert on a contiguous slice (`mixtral_edu.fast.moe.grouped_moe`); **transformers** is "
             "transformers' own block on the same weights. Time per forward call; speedup = loop / grouped.", ""]
    rows = []
    for r in moe["rows"]:
        tm = r["times"]
        rows.append([_title(r["model"]), r["tokens"], r["busy_experts"],
                     fmt_stats(tm["loop"], 1e3, " ms"), fmt_stats(tm["grouped"], 1e3, " ms"),
                     fmt_stats(tm["transformers"], 1e3, " ms"), fmt_ratio(r["speedup_grouped"]),
                     f"{r['max_abs_diff']:.1e}"])
    lines += _table(["model", "tokens N", "experts used", "loop", "grouped", "transformers",
                     "speedup grouped", "max abs diff"], rows)
    lines += ["Plot: `moe_dispatch.png`.", ""]
    return lines


def _kv(results: dict) -> List[str]:
    kv = results.get("kv_cache")
    if not kv:
        return []
    c, n = kv["cache"], kv["no_cache"]
    lines = ["## 4. KV cache on vs off", "",
             f"Model {_title(kv['model'])}, sdpa, batch 1, {kv['prompt_len']}-token prompt, {kv['new_tokens']} new "
             f"tokens, {kv['repeats']} repeat(s). Each step of the real `generate(use_cache=True/False)` is "
             "timed by a hook function on `model.hook_next_tokens`, which fires once per step. Without the "
             "cache, step i re-runs the model on all prompt + i tokens: the per-step time grows linearly with "
             "the sequence and the total quadratically; with it, each step feeds one token. "
             f"Same tokens with and without the cache: {'yes' if kv['same_tokens'] else 'no'}.", ""]
    k = lambda d, key: f"{d[key] * 1e3:.2f} ms"  # noqa: E731
    rows = [
        ["prefill (step 0)", k(c, "prefill_s"), k(n, "prefill_s")],
        ["first decode steps", k(c, "first_decode_steps_s"), k(n, "first_decode_steps_s")],
        ["last decode steps", k(c, "last_decode_steps_s"), k(n, "last_decode_steps_s")],
        ["fit: step time growth per token of sequence", f"{c['fit_slope_s_per_token'] * 1e6:.2f} µs",
         f"{n['fit_slope_s_per_token'] * 1e6:.2f} µs"],
        ["whole generate", f"{c['total_s_median']:.2f} s", f"{n['total_s_median']:.2f} s"],
    ]
    lines += _table(["", "use_cache=True", "use_cache=False"], rows)
    lines += [f"Total speedup from the cache: {kv['total_speedup']:.2f}x. Plot: `kv_cache.png`.", ""]
    return lines


def _notebooks_docs(results: dict) -> List[str]:
    lines = ["## 5. Notebooks and docs", "",
             "Each notebook runs top to bottom in a fresh kernel (nbclient, kernel start included). The docs are "
             "built with `bash scripts/docs.sh` in a temporary copy of the work tree: clean (no docs/_build but "
             "the npm asset cache), then again unchanged (cached).", ""]
    rows = []
    nb = results.get("notebooks", {})
    if nb.get("run"):
        lines[-2] += f" Kernels' OMP_NUM_THREADS: {nb.get('kernel_omp_num_threads')}."
        for r in nb["rows"]:
            rows.append([r["notebook"], f"{r['seconds']:.1f} s", r["status"],
                         "yes" if r["meets_floor"] else "no (floor 30 s)"])
        rows.append(["all notebooks", f"{nb['total_s']:.1f} s", "", "yes" if nb["meets_floor"] else "no (floor 3 min)"])
    else:
        rows.append(["notebooks", "", f"not run: {nb.get('reason')}", ""])
    docs = results.get("docs", {})
    if docs.get("run"):
        for r in docs["rows"]:
            rows.append([f"docs build, {r['build']}", f"{r['seconds']:.1f} s", r["status"], ""])
    else:
        rows.append(["docs build", "", f"not run: {docs.get('reason')}", ""])
    lines += _table(["what", "time", "status", "within floor"], rows)
    return lines


def _memory(results: dict) -> List[str]:
    mem = results.get("memory")
    if not mem:
        return []
    st = results["settings"]
    lines = ["## 6. Memory", "",
             f"One fresh process per row: greedy `generate`, {st['prompt_len']}-token prompt, {st['new_tokens']} "
             "new tokens, sdpa, fp32. tracemalloc cannot see torch's allocations, so the kernel's peak resident "
             "set is read instead: the peak counter is reset just before `generate` "
             "(`/proc/self/clear_refs`), and **peak delta** = peak RSS during generate - RSS before it "
             "(activations, logits, KV cache: what generation needs on top of the loaded model). "
             "**KV measured** = `sizes.measure_cache_bytes` of the returned cache; **formula** = "
             "`sizes.kv_cache_bytes(config, S, B, torch.float32)` with S = prompt + new - 1 (the last token's "
             "keys are never computed).", ""]
    rows = []
    for r in mem["rows"]:
        if "error" in r:
            rows.append([r["side"], _title(r["model"]), r["batch"], f"failed: {r['error']}", "", "", "", "", ""])
            continue
        rows.append(["mixtral_edu" if r["side"] == "ours" else "transformers", _title(r["model"]), r["batch"],
                     f"{r['weights_bytes'] / MiB:.1f}", f"{r['rss_before'] / MiB:.0f}",
                     f"{r['peak_delta'] / MiB:.1f}" + ("" if r["peak_reset"] else " (lower bound)"),
                     f"{r['kv_measured_bytes'] / MiB:.3f}", f"{r['kv_formula_bytes'] / MiB:.3f}",
                     "yes" if r["kv_measured_bytes"] == r["kv_formula_bytes"] else "no"])
    lines += _table(["implementation", "model", "batch", "weights MiB", "RSS before MiB", "peak delta MiB",
                     "KV measured MiB", "KV formula MiB", "equal"], rows)
    return lines


# -- plots --------------------------------------------------------------------------------------------

def write_plots(results: dict, out: Path) -> List[str]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

    gen = results.get("generation", {}).get("rows")
    if gen:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        labels = [f"{r['model']}\n{r['attn']} B={r['batch']}" for r in gen]
        xs = range(len(gen))
        for ax, key, title in ((axes[0], "prefill_tok_s", "prefill"), (axes[1], "decode_tok_s", "decode")):
            sides = [("ours", "tab:blue", "mixtral_edu (teaching loop)"),
                     ("fast", "tab:green", "mixtral_edu, grouped_moe"),
                     ("theirs", "tab:orange", "transformers 4.41.2")]
            sides = [x for x in sides if all(x[0] in r for r in gen)]
            w = 0.8 / len(sides)
            for j, (side, color, label) in enumerate(sides):
                med = [r[side][key]["median"] for r in gen]
                err = [[r[side][key]["median"] - r[side][key]["q1"] for r in gen],
                       [r[side][key]["q3"] - r[side][key]["median"] for r in gen]]
                ax.bar([x + (j - (len(sides) - 1) / 2) * w for x in xs], med, w, yerr=err, capsize=3, color=color,
                       label=label)
            ax.set_xticks(list(xs))
            ax.set_xticklabels(labels, fontsize=8)
            ax.set_yscale("log")
            ax.set_ylabel("tokens / s (log)")
            ax.set_title(f"{title} throughput (median, IQR)")
            ax.legend(fontsize=8)
        save(fig, "generation.png")

    inst = results.get("instrumentation", {}).get("rows")
    if inst:
        keys = [("trace_generate", "trace: generate"), ("trace_generate_read", "trace: generate, then read"),
                ("trace_prefill", "trace: forward"),
                ("capture_prefill", "capture all: forward"), ("capture_generate", "capture all: generate")]
        keys = [(k, t) for k, t in keys if all(k in r for r in inst)]  # older results lack some
        fig, ax = plt.subplots(figsize=(8, 4))
        width = 0.8 / len(inst)
        for j, r in enumerate(inst):
            med = [r[k]["median"] for k, _ in keys]
            err = [[r[k]["median"] - r[k]["q1"] for k, _ in keys], [r[k]["q3"] - r[k]["median"] for k, _ in keys]]
            ax.barh([i + j * width for i in range(len(keys))], med, width, xerr=err, capsize=3,
                    label=_title(r["model"]))
        ax.axvline(1.0, color="black", lw=0.8)
        ax.axvline(1.5, color="red", ls="--", lw=0.8, label="trace target 1.5x")
        ax.set_yticks([i + width * (len(inst) - 1) / 2 for i in range(len(keys))])
        ax.set_yticklabels([t for _, t in keys])
        ax.set_xlabel("slowdown: time with / time without (median, IQR)")
        ax.legend(fontsize=8, loc="lower right")
        save(fig, "instrumentation.png")

    moe = results.get("moe_dispatch", {}).get("rows")
    if moe:
        models = list(dict.fromkeys(r["model"] for r in moe))
        fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.2), squeeze=False)
        for ax, name in zip(axes[0], models):
            rs = [r for r in moe if r["model"] == name]
            n = [r["tokens"] for r in rs]
            for key, style in (("loop", "o-"), ("grouped", "s-"), ("transformers", "^--")):
                med = [r["times"][key]["median"] * 1e3 for r in rs]
                lo = [r["times"][key]["q1"] * 1e3 for r in rs]
                hi = [r["times"][key]["q3"] * 1e3 for r in rs]
                ax.plot(n, med, style, label=key)
                ax.fill_between(n, lo, hi, alpha=0.2)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("tokens N")
            ax.set_ylabel("ms per forward (log)")
            ax.set_title(f"MoE block, {_title(name)}")
            ax.legend(fontsize=8)
        save(fig, "moe_dispatch.png")

    kv = results.get("kv_cache")
    if kv:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        seq = kv["seq_len"]
        for key, label in (("cache", "use_cache=True"), ("no_cache", "use_cache=False")):
            med = [x * 1e3 for x in kv[key]["step_s_median"]]
            axes[0].plot(seq[1:], med[1:], label=label)
            cum, total = [], 0.0
            for x in kv[key]["step_s_median"]:
                total += x
                cum.append(total)
            axes[1].plot(range(1, len(cum) + 1), cum, label=label)
        axes[0].set_xlabel("sequence length at the step (tokens)")
        axes[0].set_ylabel("ms per decode step")
        axes[0].set_title("time of each decode step")
        axes[1].set_xlabel("tokens generated")
        axes[1].set_ylabel("seconds since generate started")
        axes[1].set_title("cumulative: linear with the cache, quadratic without")
        for ax in axes:
            ax.legend(fontsize=8)
        save(fig, "kv_cache.png")
    return written


def write_json(results: dict, path: Path) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return str(x)
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x
    path.write_text(json.dumps(clean(results), indent=1), encoding="utf-8")


def write_all(results: dict, out: Path) -> Dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    results["plots"] = write_plots(results, out)
    write_json(results, out / "results.json")
    write_markdown(results, out / "results.md")
    return {"md": out / "results.md", "json": out / "results.json"}
