"""Show transformers' code beside ours, read live from the installed packages.

`side_by_side(theirs, ours)` renders both functions' source (via
`inspect.getsource`) in two columns, so a learner can compare them line by
line. Nothing is copied into this project: the left column is whatever
transformers version is installed (the suite pins 4.41.2). To show part of a
function, replace a column's text: `view.left = excerpt(view.left, start, end)`
(or `excerpts(view.left, [(start, end), ...])` for several ranges); `left` and
`right` are what is drawn.

`columns(*listings)` shows any number of `Listing`s: source text with a
title, for code read somewhere else (chapter 11 reads transformers 5.23's in
its own environment, through `mixtral_edu.then_and_now`).
"""
from __future__ import annotations

import ast
import html
import inspect
import textwrap
from typing import Any, List, Optional, Sequence, Tuple, Union

from .palette import OKABE_ITO

COLOURS = tuple(OKABE_ITO[name] for name in ("blue", "bluish_green", "vermillion", "reddish_purple"))
THEIRS_LABEL = "transformers (installed): "
OURS_LABEL = "mixtral_edu: "
SKIPPED = "# ..."
NO_EXCERPT = "excerpt: no line with {start!r} followed by one with {end!r}"


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
    """transformers' source (left) beside ours (right). `left` and `right` are the two columns' text, the
    text that is drawn: assign an excerpt to one and the view shows the excerpt."""

    def __init__(self, theirs: Any, ours: Any, max_lines: Optional[int] = None):
        left, right = Listing.of(theirs, THEIRS_LABEL, max_lines), Listing.of(ours, OURS_LABEL, max_lines)
        super().__init__([left, right], colours=(OKABE_ITO["blue"], OKABE_ITO["vermillion"]))
        self.left_title, self.right_title = qualified_name(theirs), qualified_name(ours)

    @property
    def left(self) -> str:
        return self.listings[0].text

    @left.setter
    def left(self, text: str) -> None:
        self.listings[0].text = text

    @property
    def right(self) -> str:
        return self.listings[1].text

    @right.setter
    def right(self, text: str) -> None:
        self.listings[1].text = text


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


def excerpts(source: str, ranges: Union[Tuple[str, str], Sequence[Tuple[str, str]]]) -> str:
    """Several excerpts of `source` in order (each as :func:`excerpt` finds it, searching on after the last),
    dedented together so their indentation still lines up; a stretch skipped between two shows as "# ..."."""
    if len(ranges) == 2 and all(isinstance(r, str) for r in ranges):
        ranges = [ranges]
    lines, out, after = textwrap.dedent(source).splitlines(), [], 0
    for start, end in ranges:
        i = next((k for k in range(after, len(lines)) if start in lines[k]), None)
        j = next((k for k in range(i + 1, len(lines)) if end in lines[k]), None) if i is not None else None
        if i is None or j is None:
            raise ValueError(NO_EXCERPT.format(start=start, end=end))
        if out and i > after:                      # the gap, marked at the indentation of its first line
            indent = lines[after][:len(lines[after]) - len(lines[after].lstrip())]
            out.append(indent + SKIPPED)
        out += lines[i:j + 1]
        after = j + 1
    return textwrap.dedent("\n".join(out))


def columns(*listings: Listing) -> Columns:
    """Any number of listings side by side, e.g. 4.41.2 | 5.23.0 | mixtral_edu."""
    return Columns(listings)
