"""5. Notebook execution times and the docs build time.

Notebooks (--notebooks): every notebooks/*.ipynb runs top to bottom in a fresh kernel with
nbclient (as tests/notebooks/test_notebooks.py does), outputs discarded; wall time of
`client.execute()`, kernel start included. Floors: each under 30 s, all under 3 min.
Chapter 12 (build it yourself) holds only stubs; it is timed with the reference pieces
plugged in (MIXTRAL_EDU_SOLUTIONS), as the docs build and its tests run it.

Docs (--docs): `bash scripts/docs.sh` in a temporary copy of the work tree (the files git
lists: tracked and untracked-but-not-ignored; the project's .venv is linked, not copied),
so the real docs/_build is left alone. "Clean" starts with no docs/_build at all except
the npm asset cache (docs/_build/.vendor), copied over when present so the build does not
go to the network; "cached" runs the same command again unchanged.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import List

from mixtral_edu.build.chapter import ENV as CAPSTONE_ENV

from .common import ROOT

CAPSTONE = "12_build_it_yourself"

NOTEBOOK_FLOOR_S = 30.0
NOTEBOOKS_TOTAL_FLOOR_S = 180.0


def run_notebooks(enabled: bool, log=print, root: Path = ROOT) -> dict:
    notebooks = sorted((root / "notebooks").glob("*.ipynb"))
    if not enabled:
        return {"run": False, "reason": "disabled (pass --notebooks)", "rows": []}
    if not notebooks:
        return {"run": False, "reason": "no notebooks in notebooks/", "rows": []}
    try:
        import nbformat
        from nbclient import NotebookClient
    except ImportError as e:
        return {"run": False, "reason": f"nbclient/nbformat missing ({e})", "rows": []}
    env_backup = dict(os.environ)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    rows: List[dict] = []
    try:
        for path in notebooks:
            # chapter 12 is all stubs for the learner to fill; timed, like the docs build and the tests
            # run it, with the reference pieces plugged in (otherwise it stops at the first stub)
            os.environ.pop(CAPSTONE_ENV, None)
            if path.stem == CAPSTONE:
                os.environ[CAPSTONE_ENV] = str(root / "notebooks" / "solutions")
            nb = nbformat.read(path, as_version=4)
            client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                    resources={"metadata": {"path": str(path.parent)}})
            t0 = time.perf_counter()
            status = "ok"
            try:
                client.execute()
            except Exception as e:  # a failing notebook is a result, not a crash of the benchmarks
                status = f"error: {type(e).__name__}: {str(e).strip().splitlines()[-1][:160] if str(e).strip() else ''}"
            seconds = time.perf_counter() - t0
            rows.append({"notebook": path.name, "seconds": seconds, "status": status,
                         "meets_floor": status == "ok" and seconds < NOTEBOOK_FLOOR_S})
            log(f"  notebook {path.name}: {seconds:.1f} s ({status})")
    finally:
        os.environ.clear()
        os.environ.update(env_backup)
    total = sum(r["seconds"] for r in rows)
    return {"run": True, "rows": rows, "total_s": total,
            "kernel_omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset (torch's default)"),
            "meets_floor": all(r["meets_floor"] for r in rows) and total < NOTEBOOKS_TOTAL_FLOOR_S,
            "method": __doc__}


def _copy_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.is_file() or rel.startswith("docs/_build/"):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    vendor = ROOT / "docs" / "_build" / ".vendor"
    if vendor.is_dir():
        shutil.copytree(vendor, dest / "docs" / "_build" / ".vendor", symlinks=True)


def run_docs(enabled: bool, log=print) -> dict:
    script = ROOT / "scripts" / "docs.sh"
    if not enabled:
        return {"run": False, "reason": "disabled (pass --docs)", "rows": []}
    if not script.is_file():
        return {"run": False, "reason": "scripts/docs.sh does not exist", "rows": []}
    if not (ROOT / ".venv" / "bin" / "python").exists():
        return {"run": False, "reason": "no .venv (run bash scripts/setup.sh first)", "rows": []}
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="mixtral_edu_docs_bench_") as tmp:
        tree = Path(tmp) / "tree"
        _copy_tree(tree)
        for kind in ("clean", "cached"):
            t0 = time.perf_counter()
            proc = subprocess.run(["bash", "scripts/docs.sh"], cwd=tree, capture_output=True, text=True,
                                  timeout=3600)
            seconds = time.perf_counter() - t0
            status = "ok" if proc.returncode == 0 else \
                f"error (exit {proc.returncode}): {(proc.stderr.strip().splitlines() or [''])[-1][:160]}"
            rows.append({"build": kind, "seconds": seconds, "status": status})
            log(f"  docs {kind} build: {seconds:.1f} s ({status})")
    return {"run": True, "rows": rows, "method": __doc__}
