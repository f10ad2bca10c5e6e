"""The classroom route: its minutes add up, it fits the chapters, and applying it is idempotent.

Runs on copies of two current chapters (01 and 07): the route is written into the copies, checked,
written again (nothing changes), and the copies keep every code cell as it was.
"""
from __future__ import annotations

import nbformat
import pytest

import route as rt

ROUTE = rt.load_route()
LECTURE = [c["notebook"] for c in rt.lecture_chapters(ROUTE)]


def test_minutes_add_up():
    t = rt.totals(ROUTE)
    assert t["lecture"] == 90, t
    assert t["short"] == 45, t
    assert [t[f"lesson {i}"] for i in (1, 2, 3)] == [90, 90, 90], t


def test_course_covers_every_chapter_once():
    """Every chapter is taught in one lesson or named after the course (11 and 12), never both or twice."""
    names = sorted(p.stem for p in rt.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    taught = [c["notebook"] for lesson in ROUTE["course"] for c in lesson["chapters"]]
    after = [c["notebook"] for c in ROUTE.get("after_course") or []]
    assert sorted(taught + after) == names
    assert {f"{n:02d}" for n in range(11)} == {name[:2] for name in taught}   # the walkthrough 00..10 in class


@pytest.mark.parametrize("name", LECTURE)
def test_every_routed_heading_exists(name):
    """A renamed section fails here, naming the heading and the nearest ones (fix route.yaml)."""
    nb = nbformat.read(rt.NOTEBOOKS / f"{name}.ipynb", as_version=4)
    applied = rt.apply_route(nb, rt.chapter_of(ROUTE, name))
    roles = [c.metadata["slideshow"]["slide_type"] for c in applied.cells]
    assert set(roles) <= set(rt.ROLES)
    sections = rt.chapter_of(ROUTE, name)["sections"]
    assert roles.count("slide") == 1 + len(sections)       # the title and one per routed section
    assert roles.count("notes") == 1 + len(sections)


@pytest.fixture()
def copies(tmp_path):
    """The two chapters with the route taken out (as a chapter is before its first `apply`)."""
    for name in ("01_generation_loop", "07_moe"):
        nb = nbformat.read(rt.NOTEBOOKS / f"{name}.ipynb", as_version=4)
        nbformat.write(rt.apply_route(nb, None), tmp_path / f"{name}.ipynb")
    return tmp_path


def _code(nb):
    return [(c.source, c.get("outputs")) for c in nb.cells if c.cell_type == "code"]


def test_apply_is_idempotent_and_keeps_the_code(copies):
    before = {p.stem: nbformat.read(p, as_version=4) for p in copies.glob("*.ipynb")}
    assert rt.main(["check", "--dir", str(copies)]) == 1          # not applied yet: check says so
    assert rt.main(["apply", "--dir", str(copies)]) == 0
    first = {p.stem: p.read_bytes() for p in copies.glob("*.ipynb")}
    assert rt.main(["check", "--dir", str(copies)]) == 0
    assert rt.main(["apply", "--dir", str(copies)]) == 0
    assert {p.stem: p.read_bytes() for p in copies.glob("*.ipynb")} == first   # byte for byte
    for name, old in before.items():
        new = nbformat.read(copies / f"{name}.ipynb", as_version=4)
        assert _code(new) == _code(old)                            # not one code cell added, lost or edited
        for cell in new.cells:
            assert "slide_type" in cell.metadata["slideshow"]
            if rt.MARK in cell.metadata:                           # our notes and questions: off the site
                assert cell.cell_type == "markdown" and rt.HIDE_ON_SITE in cell.metadata["tags"]
        # the markdown reads the same once our cells are taken out (cells were only split at headings)
        text = lambda nb: "\n".join(c.source for c in nb.cells if c.cell_type == "markdown"  # noqa: E731
                                    and rt.MARK not in c.metadata).replace("\n", "")
        assert text(new) == text(old)
        stripped = rt.apply_route(new, None)
        assert all("slideshow" not in c.metadata for c in stripped.cells)


def test_exercises_and_solutions_stay_off_the_slides(copies):
    rt.main(["apply", "--dir", str(copies)])
    nb = nbformat.read(copies / "07_moe.ipynb", as_version=4)
    for cell in nb.cells:
        if "raise NotImplementedError" in cell.source or cell.source.lstrip().startswith("<details><summary>Solution"):
            assert cell.metadata["slideshow"]["slide_type"] == "skip", cell.source[:60]


def test_a_missing_heading_names_the_nearest(copies):
    route = rt.load_route()
    chapter = dict(rt.chapter_of(route, "07_moe"))
    chapter["sections"] = [dict(heading="Routing heatmap: additions", minutes=3)]
    nb = nbformat.read(copies / "07_moe.ipynb", as_version=4)
    with pytest.raises(rt.RouteError, match="Routing heatmaps: additions, sentences, records"):
        rt.apply_route(nb, chapter)


def test_the_chapters_carry_the_route():
    """notebooks/ as committed equals the route applied (after editing route.yaml or a chapter, run
    `python docs/_ext/route.py apply` and commit the notebooks)."""
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(rt.ROOT / "docs" / "_ext" / "route.py"), "check"],
                          cwd=rt.ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
