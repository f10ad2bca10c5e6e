"""The classroom in a real JupyterLab, started quiet the way scripts/lab.sh starts it, in headless Chromium.

One lab serves three checks:

* quiet: no Jupyter news (the server has none to give and the page asks nobody), no update check,
  no request to another host, no JavaScript error;
* projector mode on a lecture chapter at 1280 x 720: a copy of chapter 01 with the route applied
  and `viz.projector()` called first (as the teacher does) runs in the lab; then text, tables and
  source measure at least 20 px and no figure, table, source comparison or call-chain map is wider
  or taller than the screen;
* the live slideshow (jupyterlab-slideshow): enter it, move through the slides with the keyboard,
  move a live view's slider with the keyboard and see the model's new figure, leave it.

Screenshots go to artifacts/screenshots/classroom/.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

import browser as br
import route as rt

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
QUIET = ROOT / "scripts" / "jupyter"
SLIDESHOW = ROOT / "tests" / "fixtures" / "classroom_slideshow_demo.ipynb"
CHAPTER = "01_generation_loop"
SHOTS = ROOT / "artifacts" / "screenshots" / "classroom"
SCREEN = {"width": 1280, "height": 720}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lecture_copy(folder: Path) -> str:
    """Chapter 01 with the route applied and a first cell switching projector mode on."""
    nb = rt.apply_route(nbformat.read(rt.NOTEBOOKS / f"{CHAPTER}.ipynb", as_version=4),
                        rt.chapter_of(rt.load_route(), CHAPTER))
    cell = nbformat.v4.new_code_cell("from mixtral_edu import viz\nviz.projector()")
    cell.id = "projector-on"
    nb.cells.insert(1, cell)
    name = f"{CHAPTER}_projector.ipynb"
    nbformat.write(nb, folder / name)
    return name


@pytest.fixture(scope="module")
def lab():
    """(base URL, root) of a JupyterLab started with lab.sh's quiet configuration."""
    assert 'JUPYTER_CONFIG_PATH="$PWD/scripts/jupyter' in (ROOT / "scripts" / "lab.sh").read_text(), \
        "scripts/lab.sh no longer starts the lab with scripts/jupyter: this test would test something else"
    root = Path(tempfile.mkdtemp(prefix="mxe_classroom_lab_"))
    shutil.copy(SLIDESHOW, root / SLIDESHOW.name)
    lecture = _lecture_copy(root)
    # every cell in the page (no windowing), so the measurements cover the whole chapter
    settings = root / ".settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0", OMP_NUM_THREADS="1",
               JUPYTER_CONFIG_PATH=str(QUIET), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JUPYTER_RUNTIME_DIR=str(root / ".rt"), JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".ws"), IPYTHONDIR=str(root / ".ipython"))
    log = Path(tempfile.mkdtemp(prefix="mxe_classroom_lab_log_")) / "lab.log"
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}",
           "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
           "--ServerApp.terminals_enabled=False", "--LabApp.expose_app_in_browser=True"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(base + "api/status", timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(log.read_text()[-3000:])
                time.sleep(0.3)
        yield base, root, lecture
    finally:
        try:
            urllib.request.urlopen(urllib.request.Request(base + "api/shutdown", method="POST"), timeout=10)
        except OSError:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(log.parent, ignore_errors=True)


def _open_and_run(browser, base: str, name: str, ready_js: str, timeout_ms: int = 120_000):
    # ?reset: a fresh workspace, so the lab does not bring back the notebook an earlier test opened
    page, log = br.open_page(browser, base + "lab/tree/" + name + "?reset", wait_until="domcontentloaded")
    page.wait_for_function("(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                           " return w && w.context && w.context.path === name"
                           " && w.node.querySelector('.jp-Notebook .jp-Cell'); }", arg=name, timeout=60_000)
    br.lab_run_all(page)
    try:
        page.wait_for_function(ready_js, timeout=timeout_ms)
    except Exception:
        SHOTS.mkdir(parents=True, exist_ok=True)
        br.screenshot(page, SHOTS / f"timeout_{name}.png", full_page=False)
        state = page.evaluate("() => ({prompts: [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')]"
                              ".map(p => p.textContent), plots: document.querySelectorAll('.js-plotly-plot').length,"
                              " svgs: document.querySelectorAll('.js-plotly-plot .main-svg').length,"
                              " mimes: [...document.querySelectorAll('.jp-OutputArea-output')].map(o => o.dataset.mimeType),"
                              " errors: [...document.querySelectorAll('.jp-OutputArea-output"
                              "[data-mime-type=\"application/vnd.jupyter.stderr\"]')].map(e => e.innerText.slice(0, 300))})")
        raise AssertionError(f"{name} did not finish running: {state}")
    return page, log


def test_lab_is_quiet(lab, chrome):
    base, _, _ = lab
    with urllib.request.urlopen(base + "lab/api/news") as r:
        assert json.load(r) == {"news": []}                     # news_url None: nothing fetched, nothing to show
    page, log = br.open_page(chrome, base + "lab", wait_until="domcontentloaded")
    try:
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started", timeout=60_000)
        config = page.evaluate("() => JSON.parse(document.getElementById('jupyter-config-data').textContent)")
        assert "@jupyterlab/apputils-extension:announcements" in config["disabledExtensions"]
        page.wait_for_timeout(4000)                              # the news prompt used to come up by now
        toasts = page.evaluate("() => [...document.querySelectorAll('.jp-Notification-Toast, .Toastify__toast')]"
                               ".map(t => t.innerText)")
        assert not [t for t in toasts if re.search("news|update", t, re.I)], toasts
        assert not log.problems(), log.problems()
    finally:
        page.context.close()


# every code cell has run (no "[*]" prompt left) and the chapter's figures are drawn
ALL_RUN = ("() => { const prompts = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];"
           " return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent))"
           " && document.querySelectorAll('.jp-OutputArea .js-plotly-plot .main-svg').length >= 2; }")

MEASURE = """() => {
  const px = el => parseFloat(getComputedStyle(el).fontSize);
  const visible = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const texts = [...document.querySelectorAll('.jp-RenderedMarkdown p, .jp-RenderedMarkdown li')].filter(visible);
  const cells = [...document.querySelectorAll('.jp-OutputArea-output table td, .jp-OutputArea-output table th')]
      .filter(visible);
  const source = [...document.querySelectorAll('.mxe-sbs pre, .jp-OutputArea-output pre, .jp-CodeMirrorEditor .cm-line')]
      .filter(visible);
  const boxes = sel => [...document.querySelectorAll(sel)].filter(visible).map(el => {
      const r = el.getBoundingClientRect(); return {sel, w: Math.round(r.width), h: Math.round(r.height)}; });
  return {
    text: texts.map(px), tables: cells.map(px), source: source.map(px),
    boxes: [].concat(boxes('.jp-OutputArea .js-plotly-plot'), boxes('.jp-OutputArea-output table'),
                     boxes('.mxe-sbs'), boxes('.mxe-callchain')),
  };
}"""


def test_projector_mode_on_a_lecture_chapter(lab, chrome):
    base, _, lecture = lab
    page, log = _open_and_run(chrome, base, lecture, ALL_RUN)
    try:
        # the room's view: no sidebars (View > Presentation Mode would do the same)
        page.evaluate("() => { window.jupyterapp.shell.collapseLeft(); window.jupyterapp.shell.collapseRight(); }")
        page.wait_for_timeout(1500)                              # plotly relayout after the panel grew
        m = page.evaluate(MEASURE)
        assert m["text"] and m["source"] and m["boxes"], m
        assert min(m["text"]) >= 20, sorted(set(m["text"]))
        assert min(m["source"]) >= 20, sorted(set(m["source"]))
        if m["tables"]:
            assert min(m["tables"]) >= 20, sorted(set(m["tables"]))
        too_big = [b for b in m["boxes"] if b["w"] > SCREEN["width"] or b["h"] > SCREEN["height"]]
        assert not too_big, too_big
        kinds = {b["sel"] for b in m["boxes"]}
        assert {".jp-OutputArea .js-plotly-plot", ".mxe-sbs", ".mxe-callchain"} <= kinds, kinds
        SHOTS.mkdir(parents=True, exist_ok=True)
        for sel, shot in ((".mxe-callchain", "projector_callchain.png"), (".mxe-sbs", "projector_side_by_side.png"),
                          (".jp-OutputArea .js-plotly-plot", "projector_figure.png")):
            page.locator(sel).first.scroll_into_view_if_needed()
            page.wait_for_timeout(300)
            br.screenshot(page, SHOTS / shot, full_page=False)
        # the slider names (the script projector() shows) match what a reader sees
        errors = [e for e in log.problems() if "favicon" not in e]
        assert not errors, errors
    finally:
        page.context.close()


FIGURE_TITLE = ("() => { const gd = document.querySelector('.mxe-live-view .js-plotly-plot');"
                " return gd && gd.layout && gd.querySelector('.main-svg') ? gd.layout.title.text : null; }")


def test_live_slideshow(lab, chrome):
    base, _, _ = lab
    page, log = _open_and_run(chrome, base, SLIDESHOW.name, FIGURE_TITLE)
    try:
        before = page.evaluate(FIGURE_TITLE)
        assert "past length P=0" in before
        # enter the slideshow from the first cell, with the toolbar button a teacher presses
        page.evaluate("() => { const p = window.jupyterapp.shell.currentWidget; p.content.activeCellIndex = 0;"
                      " p.content.mode = 'command'; p.content.node.focus(); }")
        page.locator('.jp-Toolbar-item[data-jp-item-name="deck"] button').first.click()
        page.wait_for_selector(".jp-Deck", timeout=15_000)
        active = "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex"
        assert page.evaluate(active) == 0
        br.screenshot(page, SHOTS / "slideshow_title.png", full_page=False)
        seen = []
        for _ in range(2):                                   # title -> "the attention mask, live" -> its live view
            page.keyboard.press("Space")
            page.wait_for_timeout(700)
            seen.append(page.evaluate(active))
        nb = nbformat.read(SLIDESHOW, as_version=4)
        assert seen == [3, 4], seen                          # skipped and notes cells are passed over
        assert nb.cells[4].source.startswith("view = mask_explorer")
        handle = page.locator(".mxe-live-view .widget-slider .noUi-handle").first
        assert handle.is_visible()
        label = handle.evaluate("h => { const id = h.getAttribute('aria-labelledby');"
                                " return id ? document.getElementById(id).textContent : null; }")
        assert label and label.startswith("past length P"), label   # named by its visible label
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        page.wait_for_function(f"() => {{ const t = ({FIGURE_TITLE})(); return t && t.includes('past length P=3'); }}",
                               timeout=60_000)
        assert page.evaluate(active) == 4                     # the keys moved the slider, not the slides
        assert "chunked prefill" in page.evaluate(FIGURE_TITLE)
        br.screenshot(page, SHOTS / "slideshow_live_view.png", full_page=False)
        page.keyboard.press("Escape")
        page.wait_for_function("() => !document.querySelector('.jp-Deck')", timeout=10_000)
        br.screenshot(page, SHOTS / "slideshow_left.png", full_page=False)
        errors = [e for e in log.problems() if "favicon" not in e]
        assert not errors, errors
    finally:
        page.context.close()
