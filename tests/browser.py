"""Shared helpers for browser tests: a loopback static server and Debian's headless Chromium.

Playwright drives the system Chromium (/usr/bin/chromium); it never downloads a
browser here. Every request a page makes is recorded, and any request to a host
other than the loopback server is refused before it leaves the machine, so a
test can assert that a page needs nothing from the network.

    with serve(directory) as base_url, chromium() as browser:
        page, log = open_page(browser, base_url + "index.html")
        assert not log.problems()
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Tuple
from urllib.parse import urlsplit

CHROMIUM = os.environ.get("MIXTRAL_EDU_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL_HOSTS = {"127.0.0.1"}


def chromium_available() -> bool:
    return Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is not None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@contextlib.contextmanager
def serve(directory: os.PathLike) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL ending in '/'."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="docs-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextlib.contextmanager
def chromium(viewport: Tuple[int, int] = (1280, 900)):
    """A headless Debian Chromium (playwright Browser); closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        browser._mxe_viewport = {"width": viewport[0], "height": viewport[1]}
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What happened while a page was open."""

    requests: List[str] = field(default_factory=list)
    blocked: List[str] = field(default_factory=list)      # requests to other hosts (refused)
    failed: List[str] = field(default_factory=list)       # local requests that failed or got >= 400
    page_errors: List[str] = field(default_factory=list)  # uncaught exceptions
    console_errors: List[str] = field(default_factory=list)

    def problems(self) -> List[str]:
        return ([f"request to another host: {u}" for u in self.blocked]
                + [f"failed request: {u}" for u in self.failed]
                + [f"JavaScript error: {e}" for e in self.page_errors]
                + [f"console error: {e}" for e in self.console_errors])


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in ("data", "blob", "about", "javascript"):
        return True
    return parts.hostname in LOCAL_HOSTS


def new_page(browser):
    """A fresh page in its own context, with its PageLog recording everything."""
    context = browser.new_context(viewport=getattr(browser, "_mxe_viewport", None), service_workers="block")
    log = PageLog()

    def route(r):
        url = r.request.url
        if _is_local(url):
            r.continue_()
        else:
            log.blocked.append(url)
            r.abort("blockedbyclient")

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda req: log.requests.append(req.url))
    page.on("requestfailed", lambda req: _is_local(req.url) and log.failed.append(
        f"{req.url} ({req.failure})"))
    page.on("response", lambda resp: resp.status >= 400 and log.failed.append(f"{resp.url} (HTTP {resp.status})"))
    page.on("pageerror", lambda err: log.page_errors.append(str(err)))
    page.on("console", lambda msg: msg.type == "error" and log.console_errors.append(
        f"{msg.text} at {msg.location.get('url', '')}"))
    return page, log


def open_page(browser, url: str, wait_until: str = "load", timeout_ms: int = 60_000):
    """Open ``url`` in a fresh page; returns (page, log). Close with ``page.context.close()``."""
    page, log = new_page(browser)
    page.goto(url, wait_until=wait_until, timeout=timeout_ms)
    return page, log


def screenshot(page, path: os.PathLike, full_page: bool = True) -> Optional[Path]:
    """Save a PNG of the page (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path


def lab_run_all(page) -> None:
    """In a JupyterLab page (started with --LabApp.expose_app_in_browser): wait for the current
    notebook's kernel, then queue every cell (the command behind Run > Run All Cells)."""
    page.evaluate("""async () => {
        const app = window.jupyterapp;
        const panel = app.shell.currentWidget;
        await panel.sessionContext.ready;
        await app.commands.execute('notebook:run-all-cells');
    }""")
