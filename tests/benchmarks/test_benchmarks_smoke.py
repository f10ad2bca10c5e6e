"""The benchmark command still runs: `python -m benchmarks.run --quick` into a temporary folder.

Benchmarks are not tests: nothing here looks at a timing. It checks that every file is
written and that the table has the rows it should, so the benchmarks cannot rot.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import run  # noqa: E402

PLOTS = ["generation.png", "instrumentation.png", "moe_dispatch.png", "kv_cache.png"]


def test_quick_benchmark_run_writes_every_file_and_row(tmp_path):
    results = run.main(["--quick", "--threads", "1", "--out", str(tmp_path)])
    assert results["errors"] == {}, "\n".join(results["errors"].values())

    for name in ["results.md", "results.json"] + PLOTS:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 0, name
    assert sorted(results["plots"]) == sorted(PLOTS)

    data = json.loads((tmp_path / "results.json").read_text())
    machine = data["machine"]
    for key in ("cpu", "cores", "torch", "torch_threads", "transformers", "date"):
        assert machine[key] not in (None, ""), key
    assert machine["torch_threads"] == 1

    s = data["settings"]
    gen = data["generation"]["rows"]
    assert [(r["model"], r["attn"], r["batch"]) for r in gen] == \
        [(m, a, b) for m in s["models"] for a in s["attn"] for b in s["batches"]]
    for r in gen:  # greedy on the same weights: transformers and we produce the same tokens
        assert r["same_tokens"] == 1.0
        for side in ("ours", "fast", "theirs"):  # fast: grouped_moe, its tokens asserted equal to ours
            assert r[side]["decode_tok_s"]["n"] == s["repeats"]
        assert r["fast_decode_ratio"]["n"] == s["repeats"]
    inst = data["instrumentation"]["rows"]
    assert [r["model"] for r in inst] == list(s["models"])
    assert all(r["hook_calls"]["prefill"] > 0 and r["captured_points"] > 0 for r in inst)
    moe = data["moe_dispatch"]["rows"]
    assert [r["tokens"] for r in moe] == list(s["moe_tokens"]) * len(s["models"])
    assert all(r["max_abs_diff"] < 1e-5 for r in moe), "loop and grouped dispatch must agree"
    kv = data["kv_cache"]
    assert kv["same_tokens"] is True
    assert len(kv["cache"]["step_s_median"]) == len(kv["no_cache"]["step_s_median"]) == s["kv_new_tokens"]
    mem = data["memory"]["rows"]
    assert [(r["side"], r["batch"]) for r in mem] == [("ours", 1), ("theirs", 1)]
    for r in mem:
        assert "error" not in r, r.get("error")
        assert r["kv_measured_bytes"] == r["kv_formula_bytes"]
        assert r["generated"] == s["new_tokens"]
    assert data["notebooks"]["run"] is False and data["docs"]["run"] is False

    md = (tmp_path / "results.md").read_text()
    for heading in ["## Machine", "## Summary", "## 1. Generation throughput", "## 2. The cost of instrumentation",
                    "## 3. MoE dispatch", "## 4. KV cache on vs off", "## 5. Notebooks and docs", "## 6. Memory"]:
        assert heading in md, heading
    for row in ["| CPU |", "| torch |", "| transformers |", "| date |",
                "| notebooks |  | not run: disabled (pass --notebooks) |",
                "| docs build |  | not run: disabled (pass --docs) |"]:
        assert row in md, row
    table_rows = [line for line in md.splitlines() if line.startswith("| random toy (--quick) | sdpa | ")]
    assert len(table_rows) == len(s["batches"])
    assert "![" not in md, "no image links: the docs site includes this file and would miss the images"


def test_the_readme_quotes_the_committed_benchmark_run():
    """The README's table is copied from benchmarks/results.json by hand: it must say what that run measured."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    data = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    gen = data["generation"]["rows"]

    def span(values):
        return f"{min(values):.2f}x – {max(values):.2f}x"

    assert span([r["decode_ratio"]["median"] for r in gen]) in readme
    assert span([r["fast_decode_ratio"]["median"] for r in gen]) in readme
    for batch in (1, 8):
        fast = [r["fast_decode_ratio"]["median"] for r in gen if r["batch"] == batch]
        assert f"batch {batch}: {span(fast)}" in readme
    trace = {r["model"]: r["trace_generate"]["median"] for r in data["instrumentation"]["rows"]}
    assert f"{trace['medium']:.2f}x on the ~50M model, {trace['tiny']:.2f}x on the tiny model" in readme
    assert data["machine"]["date"][:10] in readme
