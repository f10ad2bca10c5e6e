"""Let plain-text docstrings render cleanly as reStructuredText on the API page.

mixtral_edu's docstrings are written to be read in an editor: indented
diagrams and examples right under a sentence, ``B * T`` arithmetic, ``**kwargs``,
names like ``q_``. Read as reStructuredText, these give "unexpected
indentation" errors and half-open emphasis, which ``-W`` turns into a failed
build. This extension, in two steps around napoleon:

1. before napoleon (priority 400): an indented block that follows a plain
   sentence becomes a literal block (``::``), and ``*``, ``|`` and trailing
   ``_`` outside code spans and literal blocks are escaped, and a single-backtick
   `name` becomes an inline literal (it means code here). Google-style
   sections (``Args:`` ...), bullet and field lists, directives and literal
   blocks are left as they are.
2. after napoleon (priority 600): the result is parsed once, the way Sphinx will
   parse it; if docutils still reports a problem, the docstring is shown as
   preformatted text instead (its original lines), and its name is listed in
   the build log. Either way the text is on the page and the build stays strict
   for everything else.
"""
from __future__ import annotations

import re
from typing import Any, Dict, List, Set

from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Returns?|Yields?|Raises|Attributes|Examples?|Notes?|"
    r"Warnings?|Todo|References|See Also|Keyword Args|Keyword Arguments|Other Parameters|Methods|"
    r"Warns|Receives)\s*:\s*$")
LIST_ITEM = re.compile(r"^\s*([*+-]|\d+[.)]|#\.|:[^:]+:)(\s|$)")
CODE_SPAN = re.compile(r"(``.+?``|:[\w:+.-]+:`[^`]+`|`[^`]+`_{0,2})")
EMPHASIS = re.compile(r"(?<![\w*\\])(\*\*?)(?=\S)([^*]+?)(?<=\S)\1(?![\w*])")
TRAILING_UNDERSCORE = re.compile(r"(?<=\w)(_+)(?=[\s.,;:!?)\]'\"]|$)")

_originals: Dict[str, List[str]] = {}
_fallbacks: Set[str] = set()


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _escape_text(text: str) -> str:
    """Escape * | and trailing _ in a piece of prose (no code spans in it)."""
    keep: List[str] = []

    def protect(m: re.Match) -> str:
        keep.append(m.group(0))
        return f"\x00{len(keep) - 1}\x00"

    text = EMPHASIS.sub(protect, text)
    text = text.replace("*", r"\*").replace("|", r"\|")
    text = TRAILING_UNDERSCORE.sub(lambda m: "".join("\\_" for _ in m.group(1)), text)
    return re.sub("\x00(\\d+)\x00", lambda m: keep[int(m.group(1))], text)


def _code(span: str) -> str:
    """`name` (no role, not a link) means code here: make it an inline literal."""
    m = re.fullmatch(r"`([^`\s](?:[^`]*[^`\s])?)`", span)
    return f"``{m.group(1)}``" if m else span


def _escape_line(line: str) -> str:
    body = line.lstrip()
    lead = line[: len(line) - len(body)]
    bullet = ""
    m = re.match(r"^([*+-]\s+)", body)
    if m:
        bullet, body = m.group(1), body[m.end():]
    parts = CODE_SPAN.split(body)
    out = [(_code(part) if i % 2 else _escape_text(part)) for i, part in enumerate(parts)]
    return lead + bullet + "".join(out)


def _block_end(lines: List[str], i: int, base: int) -> int:
    """End (exclusive) of the block starting at i: lines indented deeper than base, or blank."""
    j = i
    while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > base):
        j += 1
    while j > i and not lines[j - 1].strip():
        j -= 1
    return j


def plain_to_rst(lines: List[str]) -> List[str]:
    """The sanitising step (1): literal blocks for indented blocks under prose, escapes elsewhere."""
    out: List[str] = []
    i, n = 0, len(lines)
    prev = None          # previous non-blank line (None at the start or after a literal block)
    prev_ind = 0
    while i < n:
        line = lines[i]
        if not line.strip():
            out.append(line)
            i += 1
            continue
        ind = _indent(line)
        body = line.strip()
        if prev is not None and ind > prev_ind:
            # An indented block under a sentence (with or without a blank line between):
            # an example or a diagram, shown exactly as typed.
            j = _block_end(lines, i, prev_ind)
            k = len(out) - 1
            while k >= 0 and not out[k].strip():
                k -= 1
            if k >= 0 and out[k].rstrip().endswith(":"):
                out[k] = out[k].rstrip() + ":"
                if out[-1].strip():
                    out.append("")
            else:
                if out and out[-1].strip():
                    out.append("")
                out += ["::", ""]
            out += lines[i:j]
            out.append("")
            prev, i = None, j
            continue
        if SECTION.match(line):
            # A Google-style section: napoleon reads its indented body; only escape it.
            j = _block_end(lines, i + 1, ind)
            out.append(line)
            out += [_escape_line(x) if x.strip() else x for x in lines[i + 1:j]]
            prev, prev_ind, i = None, ind, j
            continue
        if body.startswith(".. ") or body.endswith("::"):
            # A directive or an explicit literal block: its body is left alone.
            j = _block_end(lines, i + 1, ind)
            out.append(line if body.startswith(".. ") else _escape_line(line))
            out += lines[i + 1:j]
            prev, prev_ind, i = None, ind, j
            continue
        if LIST_ITEM.match(line):
            # A list item or field: its continuation lines are indented under it.
            j = _block_end(lines, i + 1, ind)
            out += [_escape_line(x) if x.strip() else x for x in lines[i:j]]
            prev, prev_ind, i = None, ind, j
            continue
        out.append(_escape_line(line))
        prev, prev_ind = line, ind
        i += 1
    return out


def before_napoleon(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: List[str]) -> None:
    _originals[name] = list(lines)
    lines[:] = plain_to_rst(lines)


def _problems(app: Sphinx, text: str) -> List[str]:
    """docutils messages (level >= 2) that parsing ``text`` as Sphinx would gives, ignoring unknown roles."""
    from docutils import nodes
    from docutils.core import publish_doctree
    from docutils.utils import Reporter

    try:
        doc = publish_doctree(text, settings_overrides={
            "report_level": Reporter.SEVERE_LEVEL + 1, "halt_level": Reporter.SEVERE_LEVEL + 1,
            "warning_stream": False, "env": app.env, "file_insertion_enabled": False,
            "raw_enabled": False})
    except Exception:  # noqa: BLE001 - the real parse will report what this could not check
        return []
    found = []
    for msg in doc.findall(nodes.system_message):
        text_ = msg.astext()
        if msg["level"] < 2 or "Unknown interpreted text role" in text_ or "Unknown directive type" in text_:
            continue
        found.append(text_)
    return found


def after_napoleon(app: Sphinx, what: str, name: str, obj: Any, options: Any, lines: List[str]) -> None:
    if not lines or not _problems(app, "\n".join(lines)):
        return
    original = _originals.get(name, lines)
    _fallbacks.add(name)
    lines[:] = ["::", ""] + ["    " + line for line in original] + [""]


def report(app: Sphinx, exception) -> None:
    if _fallbacks and exception is None:
        logger.info("[plain_docstrings] shown as preformatted text (not valid reST even after "
                    f"clean-up): {', '.join(sorted(_fallbacks))}")


def setup(app: Sphinx) -> Dict[str, Any]:
    app.connect("autodoc-process-docstring", before_napoleon, priority=400)
    app.connect("autodoc-process-docstring", after_napoleon, priority=600)
    app.connect("build-finished", report)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
