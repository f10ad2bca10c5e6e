"""Shared by every test folder (pytest loads this file for all of tests/).

The helpers of the "proof of equality" suite, mixtral_edu against transformers 4.41.2, live
here: tiny configs, ids, masks, and `make_pair` (ours, theirs) with the very same weights
(ours are initialised from a seed, then loaded into transformers' model with strict=True),
so any difference in the outputs is a difference in the code. transformers is imported
only by the helpers that need it: tests that do not compare with it never load it.
The helpers live in tests/pairs.py (`from pairs import make_pair`); `import browser` gives tests/browser.py.
"""
from __future__ import annotations

import os
import sys
import tempfile

# Set before transformers is imported anywhere: the machine is offline and no
# test may try the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Keep hypothesis' caches (example database, constants) out of the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      os.path.join(tempfile.gettempdir(), "mixtral_edu_tests_hypothesis"))

# tests/ itself, so the shared modules (this file, browser.py) import from any subfolder
# whatever pytest's import mode
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


import pytest  # noqa: E402
import torch  # noqa: E402


# The models are tiny and the 2 CPU cores are shared: with several intra-op threads
# each forward spends ~1 s waiting on busy cores, with one it takes milliseconds.
torch.set_num_threads(1)


from pairs import make_pair  # noqa: E402  (the pair fixture below)


@pytest.fixture(scope="module")
def pair():
    """The default tiny eager pair, shared within a test module (tests must not modify it)."""
    return make_pair()


# -- the exercise checkers' mutation score (tests/exercises) -----------------------------------------

def pytest_terminal_summary(terminalreporter):
    harness = sys.modules.get("exercise_harness")  # loaded only when mutation tests ran
    results = harness.RESULTS if harness is not None else None
    if not results:
        return
    total = sum(len(v) for v in results.values())
    caught = sum(c for v in results.values() for _, c, _ in v)
    named = sum(n for v in results.values() for _, _, n in v)
    write = terminalreporter.write_line
    write("")
    write(f"mutation score: {caught}/{total} wrong answers caught ({caught / total:.0%}), "
          f"{named}/{total} with a hint naming the mistake ({named / total:.0%})")
    for key in sorted(results, key=lambda k: tuple(int(x) for x in k.split("."))):
        v = results[key]
        missed = [name for name, c, n in v if not n]
        write(f"  {key}: {sum(n for _, _, n in v)}/{len(v)}" + (f"  (missed: {', '.join(missed)})" if missed else ""))
