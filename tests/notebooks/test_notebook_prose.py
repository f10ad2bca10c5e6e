"""The walkthrough's teaching conventions (issue 15), checked on every notebook's text.

Each notebook opens with prerequisites, a time and what you will be able to do; the time covers its exercises'
minutes; every numbered section opens with its one-sentence takeaway; tables come from the package's one
`table(header, rows)`; activations from run_with_cache are never called `cache`; bfloat16 is described with one
wording.
"""
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    return nbformat.read(path, as_version=4).cells


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_opening_says_prerequisites_time_and_objectives(path):
    first = _cells(path)[0].source
    for needed in (r"\*\*Prerequisites\.?\*\*", r"\*\*Time\.?\*\* about \d+ min", r"\*\*You will be able to\*\*"):
        assert re.search(needed, first, flags=re.I), f"{path.name}: the first cell has no {needed}"


TIME = re.compile(r"\*\*Time\.?\*\* about (\d+) min(?:: (\d+) to read and run, (\d+) for the (\w+) exercises\.)?")
EXERCISE_MINUTES = re.compile(r"^### Exercise \d+\.\d+ · [★☆]+ · (\d+) min", flags=re.M)
COUNTS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_stated_time_covers_the_exercises(path):
    """"**Time** about N min: R to read and run, X for the k exercises.": X is the sum of the exercises' own
    minutes, k their number, N = R + X; so the time a learner plans is never less than the exercises ask."""
    cells = _cells(path)
    stated = TIME.search(cells[0].source)
    assert stated, f"{path.name}: the first cell states no time as '**Time** about N min'"
    minutes = [int(m) for c in cells if c.cell_type == "markdown" for m in EXERCISE_MINUTES.findall(c.source)]
    total = int(stated.group(1))
    assert total >= sum(minutes), f"{path.name}: about {total} min stated, but its exercises alone take {sum(minutes)}"
    if minutes:
        assert stated.group(2), (f"{path.name}: say '**Time** about N min: R to read and run, X for the k exercises.' "
                                 f"(its {len(minutes)} exercises take {sum(minutes)} min)")
        read, exercises, count = int(stated.group(2)), int(stated.group(3)), stated.group(4)
        assert exercises == sum(minutes), f"{path.name}: {exercises} min stated for exercises labelled {minutes}"
        assert COUNTS.get(count, int(count) if count.isdigit() else None) == len(minutes), \
            f"{path.name}: '{count} exercises' stated, {len(minutes)} found"
        assert read + exercises == total, f"{path.name}: {read} + {exercises} is not {total}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_section_opens_with_its_takeaway(path):
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    for section in sections:
        title, _, body = section.partition("\n")
        if not re.match(r"\d+ · ", title):
            continue   # Exercises, Recap
        first_paragraph = body.strip().split("\n\n")[0]
        assert first_paragraph.startswith("**Takeaway.**"), f"{path.name}: section '{title}' opens without its takeaway"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_one_table_helper_and_no_activation_dict_called_cache(path):
    code = "\n".join(c.source for c in _cells(path) if c.cell_type == "code")
    assert "def table(" not in code, f"{path.name}: use `from mixtral_edu.viz import table` (table(header, rows))"
    assert not re.search(r"\bcache\s*=\s*mixtral_edu\.run_with_cache|,\s*cache\s*=\s*(mixtral_edu\.)?run_with_cache",
                         code), f"{path.name}: name run_with_cache's activations `acts`; `cache` is the KV cache"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_bfloat16_is_described_one_way(path):
    text = "\n".join(c.source for c in _cells(path) if c.cell_type == "markdown")
    assert not re.search(r"8 bits of mantissa|8 mantissa bits|8-bit mantissa", text), \
        f"{path.name}: bfloat16 stores 7 mantissa bits (8 bits of precision with the implicit leading bit)"
