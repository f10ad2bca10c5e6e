"""Show transformers' code beside ours, read live from the installed packages.

`side_by_side(theirs, ours)` renders both functions' source (via
`inspect.getsource`) in two columns, so a learner can compare them line by
line. Nothing is copied into this project: the left column is whatever
transformers version is installed (the suite pins 4.41.2).

`columns(*listings)` shows any number of `Listing`s: source text with a
title, for code read somewhere else (chapter 11 reads transformers 5.23's in
its own environment, through `mixtral_edu.then_and_now`).
"""
from __future__ import annotations

import ast
import html
import inspect
import textwrap
from typing import Any, List, Optional, Sequence

COLOURS = ("#0072B2", "#009E73", "#D55E00", "#CC79A7")
THEIRS_LABEL = "transformers (installed): "
OURS_LABEL = "mixtral_edu: "


def _cut(src: str, max_lines: Optional[int]) -> str:
    lines = textwrap.dedent(src).splitlines()
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines] + [f"# ... {len(lines) - max_lines} more lines"]
    return "\n".join(lines)


def source_of(obj: Any, max_lines: Optional[int] = None) -> str:
    """Dedented source of a function, method or class; optionally only its first max_lines."""
    return _cut(inspect.getsource(obj), max_lines)


def string_literals(obj: Any, containing: str = "") -> List[str]:
    """The string constants written in obj's source that contain `containing` (e.g. the text of a
    warning it raises). Reads the installed source; nothing is run."""
    tree = ast.parse(source_of(obj))
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and containing in node.value]


def qualified_name(obj: Any) -> str:
    return f"{obj.__module__}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}"


class Listing:
    """One column: a heading (where the code comes from) and the source text."""

    def __init__(self, heading: str, text: str, max_lines: Optional[int] = None):
        self.heading, self.text = heading, _cut(text, max_lines)

    @classmethod
    def of(cls, obj: Any, label: str, max_lines: Optional[int] = None) -> "Listing":
        """The live source of an object importable here, headed `label + qualified name`."""
        return cls(label + qualified_name(obj), inspect.getsource(obj), max_lines)


class Columns:
    """Source listings side by side; HTML columns in a notebook, plain text elsewhere."""

    def __init__(self, listings: Sequence[Listing], colours: Sequence[str] = COLOURS):
        self.listings, self.colours = list(listings), tuple(colours)

    def __repr__(self) -> str:
        bar = "=" * 78
        return "\n\n".join(f"{bar}\n{x.heading}\n{bar}\n{x.text}" for x in self.listings)

    def _repr_html_(self) -> str:
        def column(x: Listing, colour: str) -> str:
            return (f'<div style="flex:1;min-width:280px"><div style="font:600 12px sans-serif;padding:4px 6px;'
                    f'background:{colour};color:white">{html.escape(x.heading)}</div>'
                    f'<pre style="margin:0;padding:6px;font-size:11px;line-height:1.35;overflow:auto;'
                    f'max-height:420px;background:#f7f7f7;border:1px solid #ddd">{html.escape(x.text)}</pre></div>')
        cols = "".join(column(x, self.colours[i % len(self.colours)]) for i, x in enumerate(self.listings))
        # columns wrap onto a new row where the page is too narrow for all of them
        return f'<div style="display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start">{cols}</div>'


class SideBySide(Columns):
    """transformers' source (left) beside ours (right)."""

    def __init__(self, theirs: Any, ours: Any, max_lines: Optional[int] = None):
        left, right = Listing.of(theirs, THEIRS_LABEL, max_lines), Listing.of(ours, OURS_LABEL, max_lines)
        super().__init__([left, right], colours=(COLOURS[0], COLOURS[2]))  # transformers blue, ours vermilion
        self.left_title, self.right_title = qualified_name(theirs), qualified_name(ours)
        self.left, self.right = left.text, right.text


def side_by_side(theirs: Any, ours: Any, max_lines: Optional[int] = None) -> SideBySide:
    """transformers' object beside ours, e.g. side_by_side(hf.MixtralRMSNorm.forward, MixtralRMSNorm.forward)."""
    return SideBySide(theirs, ours, max_lines)


def excerpt(source: str, start: str, end: str) -> str:
    """The lines of `source` from the first one containing `start` to the next one containing `end`, dedented."""
    lines = source.splitlines()
    i = next((k for k, line in enumerate(lines) if start in line), None)
    j = next((k for k, line in enumerate(lines) if i is not None and k > i and end in line), None)
    if i is None or j is None:
        raise ValueError(f"excerpt: no line with {start!r} followed by one with {end!r}")
    return textwrap.dedent("\n".join(lines[i:j + 1]))


def columns(*listings: Listing) -> Columns:
    """Any number of listings side by side, e.g. 4.41.2 | 5.23.0 | mixtral_edu."""
    return Columns(listings)
