"""Shared fixtures of the classroom tests: the built docs site (with its slide decks) and the browser.

The site is built the way scripts/docs.sh builds it (after scripts/test.sh has set the machine
up): the same Sphinx command, warnings as errors. An unchanged rebuild takes seconds, and the
decks reuse the notebooks the build executed.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from classroom_site import ARTIFACTS, ROOT, SITE  # noqa: E402  (the tests import SHOTS from it too)

import browser as br  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives headless Chromium (Debian's /usr/bin/chromium)")


@pytest.fixture(scope="session")
def site() -> Path:
    """The docs site with its decks, built as scripts/docs.sh builds it."""
    ARTIFACTS.mkdir(exist_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONHASHSEED="0",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-n", "-q",
                           "docs", "docs/_build/html"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=1800)
    (ARTIFACTS / "docs-build-classroom.log").write_text(proc.stdout)
    if proc.returncode != 0:
        pytest.fail(f"docs build failed (exit {proc.returncode}):\n{proc.stdout[-6000:]}", pytrace=False)
    print(f"docs build with decks: {time.monotonic() - start:.1f} s")
    return SITE


@pytest.fixture(scope="module")
def chrome():
    """One headless Chromium per test module (playwright's sync API allows one at a time: a session-wide one
    would block the other modules' browsers)."""
    if not br.chromium_available():
        pytest.fail(f"{br.CHROMIUM} not found: bash scripts/test.sh installs Debian's chromium", pytrace=False)
    with br.chromium(viewport=(1280, 720)) as browser:
        yield browser
