"""Every walkthrough notebook runs top to bottom from a clean kernel, seeded.

Each notebook asserts its own claims in code, so running it is the test. Times
are printed (the benchmarks report them); no timing is asserted here.
"""
import os
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from notebook_timing import record_time

ROOT = Path(__file__).resolve().parents[2]
# Chapter 12 (build it yourself) is all stubs: it runs clean only with the reference pieces plugged in and must
# stop early without them; tests/capstone/test_chapter.py runs it both ways.
CAPSTONE = "12_build_it_yourself"
NOTEBOOKS = sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if p.stem != CAPSTONE)
pytestmark = pytest.mark.slow  # each notebook runs in a fresh kernel: minutes in all

EXPECTED = ["00_orientation", "01_generation_loop", "02_prepare_inputs", "03_causal_lm_forward",
            "04_model_forward", "05_decoder_layer", "06_attention", "07_moe", "08_lm_head_sampling",
            "09_training", "10_full_size", "11_then_and_now"]


def test_the_walkthrough_is_complete():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code teaches nothing live"
    assert "manual_seed" in "\n".join(code[:3]), "seed torch in the first cells so the numbers repeat"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        "commit notebooks without outputs (the docs build executes them)"
    env_backup = dict(os.environ)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    try:
        client = NotebookClient(nb, timeout=180, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        t0 = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - t0
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    record_time(path.stem, seconds)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
