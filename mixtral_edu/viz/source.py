"""Show transformers' code beside ours, read live from the installed packages.

`side_by_side(theirs, ours)` renders both functions' source (via
`inspect.getsource`) in two columns, so a learner can compare them line by
line. Nothing is copied into this project: the left column is whatever
transformers version is installed (the suite pins 4.41.2).
"""
from __future__ import annotations

import ast
import html
import inspect
import textwrap
from typing import Any, List, Optional


def source_of(obj: Any, max_lines: Optional[int] = None) -> str:
    """Dedented source of a function, method or class; optionally only its first max_lines."""
    src = textwrap.dedent(inspect.getsource(obj))
    lines = src.splitlines()
    if max_lines is not None and len(lines) > max_lines:
        lines = lines[:max_lines] + [f"# ... {len(lines) - max_lines} more lines"]
    return "\n".join(lines)


def string_literals(obj: Any, containing: str = "") -> List[str]:
    """The string constants written in obj's source that contain `containing` (e.g. the text of a
    warning it raises). Reads the installed source; nothing is run."""
    tree = ast.parse(source_of(obj))
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and containing in node.value]


def qualified_name(obj: Any) -> str:
    return f"{obj.__module__}.{getattr(obj, '__qualname__', getattr(obj, '__name__', ''))}"


class SideBySide:
    """Two source listings; HTML columns in a notebook, plain text elsewhere."""

    def __init__(self, theirs: Any, ours: Any, max_lines: Optional[int] = None):
        self.left_title, self.right_title = qualified_name(theirs), qualified_name(ours)
        self.left, self.right = source_of(theirs, max_lines), source_of(ours, max_lines)

    def __repr__(self) -> str:
        bar = "=" * 78
        return (f"{bar}\ntransformers: {self.left_title}\n{bar}\n{self.left}\n\n"
                f"{bar}\nmixtral_edu: {self.right_title}\n{bar}\n{self.right}")

    def _repr_html_(self) -> str:
        def column(title: str, body: str, colour: str) -> str:
            return (f'<div style="flex:1;min-width:0"><div style="font:600 12px sans-serif;padding:4px 6px;'
                    f'background:{colour};color:white">{html.escape(title)}</div>'
                    f'<pre style="margin:0;padding:6px;font-size:11px;line-height:1.35;overflow:auto;'
                    f'max-height:420px;background:#f7f7f7;border:1px solid #ddd">{html.escape(body)}</pre></div>')
        return ('<div style="display:flex;gap:8px;align-items:flex-start">'
                + column("transformers (installed): " + self.left_title, self.left, "#0072B2")
                + column("mixtral_edu: " + self.right_title, self.right, "#D55E00") + "</div>")


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
