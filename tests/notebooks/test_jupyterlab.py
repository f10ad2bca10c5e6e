"""A live view in a real JupyterLab, driven in headless Chromium like a learner would.

JupyterLab starts on 127.0.0.1 (a free port, no token) in a temporary root holding
tests/fixtures/lab_widget_demo.ipynb. The page opens the notebook and runs every
cell; then the mask explorer's past-length slider is moved with the keyboard, and
the plotly figure in the page must show the new mask: the title the kernel
redrew and the heatmap's rows (T = n - P queries). Screenshots go to
artifacts/screenshots/ (gitignored). Nothing may be fetched from another host.

It runs twice: in English, and in Chinese the way `bash scripts/lab.sh --lang zh_CN`
opens the notebooks: JupyterLab's interface in Chinese (the language pack, chosen by the
settings override in scripts/lab-settings/zh_CN/), and the notebook starting with the
generated notebooks' setup cell, so the view's title and sliders are in Chinese.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch

import browser as br  # tests/browser.py (pytest puts tests/ on sys.path)
from mixtral_edu.modeling.masks import mask_reasons

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "lab_widget_demo.ipynb"
SHOTS = ROOT / "artifacts" / "screenshots"
N_IDS = 9  # len(ids) in the fixture notebook
LAB_SETTINGS = ROOT / "scripts" / "lab-settings"
# what the figure's title says, per language (the view's own messages, from mixtral_edu's catalog)
TEXT = {
    "en": {"prefill": "prefill", "past": "past length P={}", "chunked": "chunked prefill", "decode": "decode"},
    "zh_CN": {"prefill": "预填充", "past": "已缓存长度 P={}", "chunked": "分块预填充", "decode": "decode"},
}
# a menu of JupyterLab's own interface
MENU = {"en": "File", "zh_CN": "文件"}

pytestmark = [pytest.mark.slow, pytest.mark.browser]  # starts JupyterLab, drives Chromium



def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"jupyter lab did not answer {url} in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _i18n_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("mxe_i18n_tool", ROOT / "scripts" / "i18n.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["en", "zh_CN"])
def lab(request):
    """(base URL, root, language) of a JupyterLab serving a temp root with the fixture notebook."""
    language = request.param
    root = Path(tempfile.mkdtemp(prefix="mxe_lab_"))
    if language == "en":
        shutil.copy(FIXTURE, root / FIXTURE.name)
    else:  # what the Chinese notebooks start with
        nb = json.loads(FIXTURE.read_text(encoding="utf-8"))
        setup = _i18n_tool().setup_cell(language)
        setup["source"] = setup["source"].replace("{name}", FIXTURE.name).replace('os.chdir("..")', "pass")
        nb["cells"].insert(0, setup)
        (root / FIXTURE.name).write_text(json.dumps(nb), encoding="utf-8")
    port = _free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0",
               # keep Lab's settings, workspaces and runtime files out of the user's home
               JUPYTER_RUNTIME_DIR=str(root / ".rt"), JUPYTERLAB_SETTINGS_DIR=str(root / ".settings"),
               JUPYTERLAB_WORKSPACES_DIR=str(root / ".ws"), IPYTHONDIR=str(root / ".ipython"))
    jupyter = Path(sys.executable).with_name("jupyter")
    log = Path(tempfile.mkdtemp(prefix="mxe_lab_log_")) / "lab.log"  # outside the root Lab lists
    cmd = [str(jupyter), "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
           "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}", "--IdentityProvider.token=",
           "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",  # loopback, no auth: lets us POST
           "--ServerApp.terminals_enabled=False", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           "--LabApp.extension_manager=readonly",  # no index queries
           "--LabApp.expose_app_in_browser=True"]  # window.jupyterapp: run cells by command
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI and these machines run as root
    if language != "en":  # the same override lab.sh --lang passes
        cmd.append(f"--LabApp.app_settings_dir={LAB_SETTINGS / language}")
    # no "get notified about Jupyter news?" prompt over the page (and no fetch for it)
    settings = root / ".settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    base = f"http://127.0.0.1:{port}/"
    t_start = time.monotonic()
    try:
        _wait_http(base + "api/status", 40, proc, log)
        print(f"server up {time.monotonic() - t_start:.1f} s")
        yield base, root, language
    finally:
        t_stop = time.monotonic()
        try:  # the clean way: the server stops its kernels, then itself
            urllib.request.urlopen(urllib.request.Request(base + "api/shutdown", method="POST"), timeout=10)
        except OSError:
            proc.send_signal(signal.SIGTERM)  # jupyter's own handler stops the kernels too
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group we started (server and its kernel)
            proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(log.parent, ignore_errors=True)
        print(f"shutdown {time.monotonic() - t_stop:.1f} s")


FIGURE_STATE = """() => {
  const view = document.querySelector('.mxe-live-view');
  const gd = view && view.querySelector('.js-plotly-plot');
  if (!gd || !gd.layout || !gd.data) { return null; }
  // _fullData: plotly.js has decoded the typed arrays plotly.py sends as base64
  const panels = (gd._fullData || []).filter(t => (t.name || '').startsWith('row '));
  return {title: gd.layout.title.text, rows: panels.map(t => t.z.length), cols: panels.map(t => t.z[0].length),
          z: panels.map(t => Array.from(t.z, r => Array.from(r))), drawn: !!gd.querySelector('svg.main-svg')};
}"""


def _wait_figure(page, predicate_js: str, timeout_ms: int = 30_000):
    page.wait_for_function(f"() => {{ const s = ({FIGURE_STATE})(); return s && s.drawn && ({predicate_js}); }}",
                           timeout=timeout_ms)
    return page.evaluate(FIGURE_STATE)


def _start_session(base: str) -> None:
    """Start the notebook's kernel through the REST API (the page then joins this session)."""
    body = json.dumps({"path": FIXTURE.name, "name": FIXTURE.name, "type": "notebook",
                       "kernel": {"name": "python3"}}).encode()
    request = urllib.request.Request(base + "api/sessions", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=60).close()


def test_mask_explorer_slider_redraws_in_jupyterlab(lab):
    base, root, language = lab
    text = TEXT[language]
    shots = SHOTS if language == "en" else SHOTS / language
    start = time.monotonic()
    # the kernel starts while Chromium and JupyterLab's page load (the slowest parts on a busy machine)
    kernel = threading.Thread(target=_start_session, args=(base,), daemon=True)
    kernel.start()
    with br.chromium(viewport=(1400, 1000)) as browser:
        t0 = time.monotonic()
        kernel.join(timeout=60)
        page, log = br.open_page(browser, base + "lab/tree/" + FIXTURE.name, wait_until="domcontentloaded")
        page.wait_for_function("() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')",
                               timeout=60_000)
        # wait for the kernel, then run every cell (the command behind Run > Run All Cells)
        ta = time.monotonic()
        br.lab_run_all(page)
        t1 = time.monotonic()
        before = _wait_figure(page, f"s.title.includes({text['prefill']!r})", timeout_ms=60_000)
        menus = page.eval_on_selector_all(".lm-MenuBar-itemLabel", "els => els.map(e => e.textContent)")
        assert MENU[language] in menus, menus  # JupyterLab's own interface in this language
        print(f"browser {t0 - start:.1f} s, page {ta - t0:.1f} s, kernel + cells {t1 - ta:.1f} s, "
              f"figure {time.monotonic() - t1:.1f} s")
        assert before["rows"] == [N_IDS, N_IDS] and before["cols"] == [N_IDS, N_IDS], before
        view = page.locator(".mxe-live-view")
        view.scroll_into_view_if_needed()
        br.screenshot(page, shots / "lab_mask_explorer_before.png", full_page=False)

        # the first slider is "past length P": focus its handle and press the right arrow three times
        handle = view.locator(".widget-slider .noUi-handle").first
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        after = _wait_figure(page, f"s.title.includes({text['past'].format(3)!r})")
        assert after["rows"] == [N_IDS - 3, N_IDS - 3], after   # T = n - P queries, computed by the model
        assert after["cols"] == [N_IDS, N_IDS], after
        assert text["chunked"] in after["title"]
        # cell by cell: why each key is hidden for P = 3, pads (2, 0), window 3 (the fixture's settings)
        mask_2d = torch.tensor([[0, 0] + [1] * (N_IDS - 2), [1] * N_IDS])
        want = mask_reasons(mask_2d, 2, N_IDS - 3, 3, sliding_window=3)[:, 0].tolist()
        assert after["z"] == want
        slider_text = view.locator(".widget-readout").first.inner_text()
        assert slider_text.strip() == "3"

        # and with the mouse: drag the handle to the far right end (P = n - 1: a decode step)
        box = handle.bounding_box()
        track = view.locator(".widget-slider .noUi-target").first.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(track["x"] + track["width"] + 20, box["y"] + box["height"] / 2, steps=8)
        page.mouse.up()
        decoded = _wait_figure(page, f"s.title.includes({text['past'].format(N_IDS - 1)!r})")
        assert decoded["rows"] == [1, 1] and text["decode"] in decoded["title"], decoded
        br.screenshot(page, shots / "lab_mask_explorer_after.png", full_page=False)

        # the static figure of the last cell is drawn by the plotly renderer too
        assert page.evaluate("() => document.querySelectorAll('.js-plotly-plot svg.main-svg').length") >= 2
        errors = [e for e in log.problems() if "favicon" not in e]
        assert not errors, errors
        page.context.close()
    print(f"test body {time.monotonic() - start:.1f} s")
    assert time.monotonic() - start < 90
