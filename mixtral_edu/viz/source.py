"""Show transformers' code beside ours, read live from the installed packages.

`side_by_side(theirs, ours)` renders both functions' source (via
`inspect.getsource`) in two columns, so a learner can compare them line by
line. Nothing is copied into this project: the left column is whatever
transformers version is installed (the suite pins 4.41.2). To show part of a
function, replace a column's text: `view.left = excerpt(view.left, start, end)`
(or `excerpts(view.left, [(start, end), ...])` for several ranges); `left` and
`right` are what is drawn.

An excerpt names the lines that matter for a lecture, as a line range or two marker strings:

    side_by_side(hf.MixtralRMSNorm.forward, MixtralRMSNorm.forward, excerpt=(2, 7))
    side_by_side(GenerationMixin._sample, generate,
                 theirs_excerpt=("while self._has_unfinished", "this_peer_finished ="),
                 ours_excerpt=("while input_ids.shape[1]", "break"))

Self-study shows the whole functions (the excerpt changes nothing you can see); projector mode
(`mixtral_edu.viz.projector`) shows only the excerpts, at 20 px.

`columns(*listings)` shows any number of `Listing`s: source text with a title, for code read
somewhere else (chapter 11 reads transformers 5.23's in its own environment, through
`mixtral_edu.then_and_now`).
"""
from __future__ import annotations

import ast
import html
import inspect
import textwrap
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import palette as pal
from . import projector_mode as proj

Bound = Union[int, str]
Excerpt = Optional[Tuple[Bound, Bound]]

THEIRS_COLOUR, OURS_COLOUR = pal.OKABE_ITO["blue"], pal.TEXT_VERMILLION
COLOURS = (THEIRS_COLOUR, pal.TEXT_BLUISH_GREEN, OURS_COLOUR, pal.TEXT_REDDISH_PURPLE)  # white header text, >= 4.5:1
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


def excerpt_range(text: str, excerpt: Excerpt) -> Tuple[int, int]:
    """(first, last) 0-based line indices, inclusive, that `excerpt` names in `text`.

    excerpt: None (the first MAX_SOURCE_LINES lines), (start, end) 1-based line numbers, or
    (start, end) strings: the first line containing `start`, to the first line after it containing `end`.
    """
    lines = text.splitlines()
    if excerpt is None:
        return 0, min(len(lines), proj.MAX_SOURCE_LINES) - 1
    if len(excerpt) != 2:
        raise ValueError(f"An excerpt is (start, end), got {excerpt!r}.")
    start, end = excerpt
    if isinstance(start, int) and isinstance(end, int):
        if not 1 <= start <= end <= len(lines):
            raise ValueError(f"Excerpt lines {start}..{end} do not lie in 1..{len(lines)}.")
        return start - 1, end - 1
    if isinstance(start, str) and isinstance(end, str):
        first = next((i for i, line in enumerate(lines) if start in line), None)
        if first is None:
            raise ValueError(f"No line contains the excerpt's start marker {start!r}: pick a string from the source.")
        last = next((i for i in range(first, len(lines)) if end in lines[i]), None)
        if last is None:
            raise ValueError(f"No line from {first + 1} on contains the excerpt's end marker {end!r}.")
        return first, last
    raise TypeError(f"An excerpt is two line numbers or two marker strings, got {excerpt!r}.")


class SideBySide:
    """Two source listings; HTML columns in a notebook, plain text elsewhere.

    `left` and `right` hold the text (you may replace them); the excerpts are resolved when drawn.
    """

    def __init__(self, theirs: Any, ours: Any, max_lines: Optional[int] = None, excerpt: Excerpt = None,
                 theirs_excerpt: Excerpt = None, ours_excerpt: Excerpt = None):
        self.left_title, self.right_title = qualified_name(theirs), qualified_name(ours)
        self.left, self.right = source_of(theirs, max_lines), source_of(ours, max_lines)
        self.left_excerpt = theirs_excerpt if theirs_excerpt is not None else excerpt
        self.right_excerpt = ours_excerpt if ours_excerpt is not None else excerpt
        # check the excerpts now: a wrong marker should fail where it is written
        excerpt_range(self.left, self.left_excerpt)
        excerpt_range(self.right, self.right_excerpt)

    def _kept(self, text: str, excerpt: Excerpt) -> Tuple[List[str], int, int]:
        """All lines, and the inclusive range projector mode shows (at most MAX_SOURCE_LINES)."""
        lines = text.splitlines()
        first, last = excerpt_range(text, excerpt)
        return lines, first, min(last, first + proj.MAX_SOURCE_LINES - 1)

    def excerpt_text(self, side: str) -> str:
        """The lines projector mode shows of one side ('left' = transformers, 'right' = ours)."""
        text, excerpt = (self.left, self.left_excerpt) if side == "left" else (self.right, self.right_excerpt)
        lines, first, last = self._kept(text, excerpt)
        return "\n".join(lines[first:last + 1])

    def __repr__(self) -> str:
        bar = "=" * 78
        left, right = ((self.excerpt_text("left"), self.excerpt_text("right")) if proj.is_on()
                       else (self.left, self.right))
        return (f"{bar}\ntransformers: {self.left_title}\n{bar}\n{left}\n\n"
                f"{bar}\nmixtral_edu: {self.right_title}\n{bar}\n{right}")

    def _listing(self, text: str, excerpt: Excerpt) -> str:
        """The <pre> body: one span per line; lines outside the excerpt are marked (hidden by projector CSS)."""
        lines, first, last = self._kept(text, excerpt)
        out = []
        for i, line in enumerate(lines):
            if i == first and first > 0:
                out.append(f'<span class="mxe-gap" style="display:none">⋯ lines 1–{first} not shown\n</span>')
            cls = "mxe-ln" if first <= i <= last else "mxe-ln mxe-out"
            out.append(f'<span class="{cls}">{html.escape(line)}\n</span>')
        if last < len(lines) - 1:
            out.append(f'<span class="mxe-gap" style="display:none">⋯ {len(lines) - 1 - last} more lines\n</span>')
        return "".join(out)

    def _repr_html_(self) -> str:
        def column(title: str, body: str, colour: str) -> str:
            return (f'<div style="flex:1;min-width:0"><div class="mxe-sbs-title" style="font:600 12px sans-serif;'
                    f'padding:4px 6px;background:{colour};color:white">{html.escape(title)}</div>'
                    f'<pre tabindex="0" style="margin:0;padding:6px;font-size:11px;'
                    f'line-height:1.35;overflow:auto;max-height:420px;background:#f7f7f7;border:1px solid #ddd">'
                    f'{body}</pre></div>')
        block = ('<div class="mxe-sbs" style="display:flex;gap:8px;align-items:flex-start">'
                 + column("transformers (installed): " + self.left_title, self._listing(self.left, self.left_excerpt),
                          THEIRS_COLOUR)
                 + column("mixtral_edu: " + self.right_title, self._listing(self.right, self.right_excerpt),
                          OURS_COLOUR) + "</div>")
        return proj.wrap(block) if proj.is_on() else block


def side_by_side(theirs: Any, ours: Any, max_lines: Optional[int] = None, excerpt: Excerpt = None,
                 theirs_excerpt: Excerpt = None, ours_excerpt: Excerpt = None) -> SideBySide:
    """transformers' object beside ours, e.g. side_by_side(hf.MixtralRMSNorm.forward, MixtralRMSNorm.forward).

    excerpt: the lines a projected slide shows of both, (start, end) as 1-based line numbers or as
    marker strings; theirs_excerpt / ours_excerpt: one side's own. See the module docstring.
    """
    return SideBySide(theirs, ours, max_lines, excerpt, theirs_excerpt, ours_excerpt)


def excerpt(source: str, start: str, end: str) -> str:
    """The lines of `source` from the first one containing `start` to the next one containing `end`, dedented."""
    lines = source.splitlines()
    i = next((k for k, line in enumerate(lines) if start in line), None)
    j = next((k for k, line in enumerate(lines) if i is not None and k > i and end in line), None)
    if i is None or j is None:
        raise ValueError(f"excerpt: no line with {start!r} followed by one with {end!r}")
    return textwrap.dedent("\n".join(lines[i:j + 1]))


# -- any number of listings (chapter 11: 4.41.2 | 5.23.0 | mixtral_edu) --------------------------

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
