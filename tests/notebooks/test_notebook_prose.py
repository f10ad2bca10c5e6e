"""The walkthrough's teaching conventions (issue 15), checked on every notebook's text.

Each notebook opens with prerequisites, a time and what you will be able to do; every numbered section opens
with its one-sentence takeaway; tables come from the package's one `table(header, rows)`; activations from
run_with_cache are never called `cache`; bfloat16 is described with one wording.
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
