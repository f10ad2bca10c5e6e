"""Chapter 12 runs clean with the reference pieces, and stops early, with a message and no traceback,
on the untouched stubs. The notebook holds stubs only: no solution code, no outputs.

The switch: MIXTRAL_EDU_SOLUTIONS=<folder of the solutions> makes `cap.plug` take the reference
function of the same name instead of the notebook's stub (mixtral_edu.build.chapter). The docs
build sets it the same way, so the site shows the chapter with every piece plugged in.
"""
from __future__ import annotations

import ast
import json
import os
import re
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from mixtral_edu.build import PIECES
from mixtral_edu.build.chapter import ENV, Capstone, StopChapter

from capstone_helpers import ROOT, SOLUTIONS
from notebook_timing import record_time

NOTEBOOK = ROOT / "notebooks" / "12_build_it_yourself.ipynb"
HEADING = re.compile(r"^### Exercise 12\.(\d+) · (★{1,3}☆{0,2}) · (\d+) min · implement$", re.M)


def _execute(solutions: bool):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    saved = dict(os.environ)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0")
    os.environ.pop(ENV, None)
    if solutions:
        os.environ[ENV] = str(SOLUTIONS.parent)
    client = NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    t0 = time.perf_counter()
    error = None
    try:
        client.execute()
    except CellExecutionError as err:
        error = err
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return nb, error, time.perf_counter() - t0


def _errors(nb):
    return [(i, o) for i, c in enumerate(nb.cells) if c.cell_type == "code"
            for o in c.get("outputs", []) if o.output_type == "error"]


def test_the_chapter_runs_clean_with_the_reference_pieces():
    nb, error, seconds = _execute(solutions=True)
    record_time(NOTEBOOK.stem, seconds)
    assert error is None and not _errors(nb)
    text = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert text.count("Passed") == len(PIECES)
    assert "11 of 11 pieces are yours" in text and "Every row is token for token" in text


def test_the_untouched_stubs_stop_the_chapter_with_a_message_and_no_traceback():
    nb, error, _ = _execute(solutions=False)
    assert error is not None
    (index, out), = _errors(nb)
    assert out.ename == "StopChapter"
    assert "`greedy_step` is still a stub" in out.evalue
    assert len(out.traceback) == 1 and "Traceback" not in out.traceback[0] and 'File "' not in out.traceback[0]
    stopped = nb.cells[index]
    assert "def greedy_step" in stopped.source                       # the first exercise
    later = [c for c in nb.cells[index + 1:] if c.cell_type == "code"]
    assert later and not any(c.get("outputs") for c in later)        # nothing ran after it


def _stub_cells():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code" and "NotImplementedError" in c.source]


def test_every_untouched_stub_stops_with_its_own_message(capsys):
    cap = Capstone(max_new_tokens=3)
    cap.solutions = None
    for source in _stub_cells():
        stub = source[:source.index("cap.plug(")]
        space = {}
        exec(compile(stub, "<stub>", "exec"), space)
        fn = next(v for k, v in space.items() if k in PIECES)
        with pytest.raises(StopChapter, match=f"`{fn.__name__}` is still a stub"):
            cap.plug(fn)
        assert cap.pieces == {}


def test_the_notebook_holds_stubs_not_solutions():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert "manual_seed" in "\n".join(code[:2])
    first = nb.cells[0].source
    assert all(w in first for w in ("**Prerequisites**", "**Time**", "**You will be able to**"))
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    labels = HEADING.findall(markdown)
    assert [int(k) for k, *_ in labels] == list(range(1, len(PIECES) + 1))
    assert any(stars == "★★★" for _, stars, _ in labels)
    assert markdown.count("Why it matters") >= len(PIECES)
    assert markdown.count("<summary>Answer</summary>") >= 3
    stubs = _stub_cells()
    assert [re.search(r"def (\w+)\(", s).group(1) for s in stubs] == list(PIECES)
    for k, source in enumerate(stubs, 1):
        name = list(PIECES)[k - 1]
        assert f'raise NotImplementedError("Exercise 12.{k}")' in source
        assert source.rstrip().endswith(f"cap.plug({name})")
    # no solution body, nor any 3 consecutive statements of one, anywhere in the code a reader sees
    solution = ast.parse(SOLUTIONS.read_text())
    runs = []
    for fn in (n for n in solution.body if isinstance(n, ast.FunctionDef)):
        body = [ast.dump(s) for s in fn.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        runs += [body[i:i + 3] for i in range(max(len(body) - 2, 1))]
    for source in code:
        tree = ast.parse(source)
        blocks = [[ast.dump(s) for s in node.body] for node in ast.walk(tree) if hasattr(node, "body")
                  and isinstance(node.body, list)]
        for run in runs:
            assert not any(any(block[i:i + len(run)] == run for i in range(len(block))) for block in blocks), source
        assert "solutions" not in source
