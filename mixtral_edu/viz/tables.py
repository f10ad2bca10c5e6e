"""A small table of numbers or tokens, drawn the same way by every notebook.

    viz.table(["domain", "tokens", "loss"], [["arith", 412, "0.231"], ["lang", 388, "1.02"]])

Cell text is escaped (tokens such as ``<s>`` show as text). In projector mode the table is drawn at
20 px; :func:`mixtral_edu.viz.export` writes it as HTML, PNG and SVG.
"""
from __future__ import annotations

import html
from typing import Any, List, Optional, Sequence

from . import projector_mode as proj


class Table:
    """header: column names; rows: lists of cells (any value, shown with str()); caption: one sentence
    saying what the table shows (its text alternative, read by screen readers)."""

    def __init__(self, header: Sequence[Any], rows: Sequence[Sequence[Any]], caption: Optional[str] = None):
        self.header = [str(h) for h in header]
        self.rows: List[List[str]] = [[str(v) for v in row] for row in rows]
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(f"row {i} has {len(row)} cells, the header {len(self.header)}: give one cell per column.")
        self.caption = caption

    @property
    def alt(self) -> str:
        return self.caption or f"Table of {len(self.rows)} rows with columns {', '.join(self.header)}."

    def __repr__(self) -> str:
        widths = [max(len(c) for c in col) for col in zip(self.header, *self.rows)]
        line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
        return "\n".join([line(self.header), line(["-" * w for w in widths])] + [line(r) for r in self.rows])

    def _repr_html_(self) -> str:
        cell = "text-align:left;padding:2px 8px"
        head = "".join(f'<th scope="col" style="{cell}">{html.escape(h)}</th>' for h in self.header)
        body = "".join("<tr>" + "".join(f'<td style="{cell}">{html.escape(v)}</td>' for v in row) + "</tr>"
                       for row in self.rows)
        caption = (f'<caption style="caption-side:bottom;text-align:left;font-size:0.9em">{html.escape(self.caption)}'
                   "</caption>" if self.caption else "")
        block = (f'<table class="mxe-table" style="border-collapse:collapse;font-size:13px">{caption}'
                 f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return proj.wrap(block) if proj.is_on() else block


def table(header: Sequence[Any], rows: Sequence[Sequence[Any]], caption: Optional[str] = None) -> None:
    """Show a small table now, wherever the call sits in a cell: table(header, rows), the one signature every
    notebook uses. To export one, build `Table(header, rows, caption)` and pass it to `viz.export`."""
    from IPython.display import display
    display(Table(header, rows, caption))
