"""Sphinx extension for the classroom edition: the guide's timing tables, the decks, a link to each deck.

* ``config-inited``: writes docs/_generated/route_lecture.md, route_short.md and course.md from
  docs/teaching/route.yaml (the teacher's guide includes them), so the guide's minutes are the route's.
* ``html-page-context``: a chapter of the lecture gets a "Slides" line under its run-locally box,
  linking its deck (slides/NN_name.html).
* ``build-finished``: builds the decks into <outdir>/slides (docs/_ext/decks.py) from the notebooks
  this build has just executed (the execution cache), so the site and its decks always agree.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from sphinx.application import Sphinx
from sphinx.util import logging

import route as rt
from mixtral_site import GENERATED, _write_if_changed

logger = logging.getLogger(__name__)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip()


def _heading(chapter: str, text: str) -> str:
    """A link to a section of a chapter (myst turns '.ipynb#anchor' into the page's anchor)."""
    return f"[{_cell(text)}](../notebooks/{chapter}.ipynb)"


def lecture_table(route: Dict[str, Any], short: bool) -> str:
    """The timing table of the 90- (or 45-) minute lecture; the 90-minute one is followed by what to
    move, ask and expect in each section."""
    key = "short" if short else "minutes"
    lecture = route["lecture"]
    lines = ["| starts at | chapter | section | min |", "|---:|---|---|---:|"]
    clock, notes = 0, []
    for chapter in lecture["chapters"]:
        for section in chapter["sections"]:
            if key not in section:
                continue
            lines.append(f"| {clock} | {chapter['notebook']} | {_heading(chapter['notebook'], section['heading'])} | "
                         f"{section[key]} |")
            clock += section[key]
            parts = []
            if section.get("move"):
                parts.append(f"*Move:* {_cell(section['move'])}")
            if section.get("ask"):
                parts.append(f"*Ask:* {_cell(section['ask'])} *Expect:* {_cell(section.get('answer', ''))}")
            if parts:
                notes.append(f"- **{chapter['notebook'][:2]} · {_cell(section['heading'])}.** " + " ".join(parts))
    wrap = lecture.get("wrap_up_short" if short else "wrap_up_minutes", 0)
    lines.append(f"| {clock} | | questions and wrap-up | {wrap} |")
    lines.append(f"| | | **total** | **{clock + wrap}** |")
    text = "\n".join(lines) + "\n"
    if not short:
        text += "\n**What to move and what to ask, section by section:**\n\n" + "\n".join(notes) + "\n"
    return text


def exercise_titles(chapter: str) -> List[str]:
    """The chapter's exercise headings ('### Exercise ...'), in order."""
    import nbformat
    path = rt.NOTEBOOKS / f"{chapter}.ipynb"
    if not path.is_file():
        return []
    out = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.split("\n"):
                if re.match(r"^###\s+Exercise", line):
                    out.append(line.lstrip("#").strip())
    return out


def course_tables(route: Dict[str, Any]) -> str:
    chapters = {p.stem[:2]: p.stem for p in rt.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")}
    parts = []
    for lesson in route.get("course") or []:
        minutes = sum(c["minutes"] for c in lesson["chapters"]) + lesson.get("buffer", 0)
        parts += [f"### {lesson['title']} ({minutes} min)", "", "| chapter | min |", "|---|---:|"]
        for c in lesson["chapters"]:
            parts.append(f"| [{c['notebook']}](../notebooks/{c['notebook']}.ipynb) | {c['minutes']} |")
        parts.append(f"| questions, buffer | {lesson.get('buffer', 0)} |")
        parts += ["", "Exercises to set before the next lesson:", ""]
        for ident in lesson.get("exercises") or []:
            num, k = ident.split(".")
            name = chapters.get(num)
            titles = exercise_titles(name) if name else []
            title = titles[int(k) - 1] if name and 0 < int(k) <= len(titles) else None
            if title is None:
                logger.warning(f"[classroom] course exercise {ident}: chapter {num} has no exercise {k}",
                               type="classroom")
                continue
            parts.append(f"- {ident}: [{_cell(title)}](../notebooks/{name}.ipynb)")
        parts.append("")
    after = route.get("after_course") or []
    if after:
        parts += ["### After the course", "", "For the students who want more, on their own or in a fourth lesson:", ""]
        parts += [f"- [{c['notebook']}](../notebooks/{c['notebook']}.ipynb): {_cell(c.get('why', ''))}" for c in after]
        parts.append("")
    return "\n".join(parts) + "\n"


def write_tables(app: Sphinx, config) -> None:
    route = rt.load_route()
    _write_if_changed(GENERATED / "route_lecture.md", lecture_table(route, short=False))
    _write_if_changed(GENERATED / "route_short.md", lecture_table(route, short=True))
    _write_if_changed(GENERATED / "course.md", course_tables(route))


DECK_LINK = ('<p class="mxe-deck-link"><a href="{href}">Slides of this chapter</a> for the {minutes}-minute '
             'lecture ({sections} sections, {m} min; see the teacher\'s guide).</p>')


def page_context(app: Sphinx, pagename: str, templatename: str, context: Dict[str, Any], doctree) -> None:
    if not pagename.startswith("notebooks/"):
        return
    route = rt.load_route()
    chapter = rt.chapter_of(route, pagename.split("/", 1)[1])
    if chapter is None:
        return
    body = context.get("body") or ""
    href = context["pathto"](f"slides/{chapter['notebook']}.html", 1)
    link = DECK_LINK.format(href=html.escape(href), minutes=rt.totals(route)["lecture"],
                            sections=len(chapter["sections"]), m=sum(s["minutes"] for s in chapter["sections"]))
    anchor = body.find('<div class="admonition tip mxe-run-locally">')
    at = body.find("</div>", anchor) + len("</div>") if anchor >= 0 else (body.find("</h1>") + 5)
    context["body"] = body[:at] + link + body[at:]


def build_decks(app: Sphinx, exception: Optional[Exception]) -> None:
    if exception is not None or app.builder.format != "html":
        return
    import decks
    decks.build_decks(Path(app.outdir) / "slides", trust_cache=True,
                      log=lambda message: logger.info(message))


def setup(app: Sphinx) -> Dict[str, Any]:
    app.connect("config-inited", write_tables)
    app.connect("html-page-context", page_context)
    app.connect("build-finished", build_decks)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
