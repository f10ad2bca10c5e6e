"""One table of bad inputs (tests/bad_inputs.py): each gives a clear error that names the problem.

Every row runs its code and checks the error type (or warning, or NOT YET for an exercise
checker) and that the message names the argument, the valid range or type and the fix. The
docs page "When something goes wrong" shows the same rows with their messages.
"""
from __future__ import annotations

import collections

import pytest

from bad_inputs import AREAS, CASES, check, namespace, run


@pytest.fixture(scope="module")
def ns():
    names, cleanup = namespace()
    yield names
    cleanup()


def test_the_table_covers_every_area_with_at_least_80_rows():
    per_area = collections.Counter(c.area for c in CASES)
    assert len(CASES) >= 80
    assert set(per_area) == set(AREAS), per_area
    assert all(n >= 3 for n in per_area.values()), per_area
    assert len({(c.area, c.code) for c in CASES}) == len(CASES)      # no row twice
    assert len({c.problem.lower() for c in CASES}) == len(CASES)     # one heading each on the docs page
    stricter = [c for c in CASES if c.stricter]
    assert {"config", "generate"} <= {c.area for c in stricter}      # unknown keys, int32 ids, top_p=0, ...


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.problem}" for c in CASES])
def test_bad_input(case, ns):
    problem = check(case, run(case, ns))
    assert not problem, f"{case.code!r}: {problem}"


def test_negative_step_counts_from_the_end_in_the_views(ns):
    """mask_figure(step=-1) used to fail inside torch.cat; like pick_step, -1 is the last step."""
    from mixtral_edu.viz import attention_figure, mask_figure
    tr = ns["tr"]
    last = len(tr.steps) - 1
    for view in (mask_figure, attention_figure):
        assert view(tr, step=-1).to_json() == view(tr, step=last).to_json()
