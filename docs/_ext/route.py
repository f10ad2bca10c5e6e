"""The classroom route (docs/teaching/route.yaml): load it, and write it into the chapters as slide metadata.

    python docs/_ext/route.py apply            # write the metadata into notebooks/NN_*.ipynb (idempotent)
    python docs/_ext/route.py check            # exit 1 if a chapter's metadata differs from the route
    python docs/_ext/route.py apply --dir D    # the same on copies in folder D

What `apply` does to a chapter of the lecture route (pure function :func:`apply_route`):

* markdown cells are split so that every ``##`` and ``###`` heading starts a cell (the page reads the same);
* every cell gets ``metadata.slideshow.slide_type``: the title cell and each routed section's heading
  cell ``slide``; a routed section's code cells ``subslide`` and its other cells ``-`` (or the roles
  the route lists), except its exercises (a ``### Exercise`` subsection) and folded solutions; the
  code cell that draws the call-chain map before the first section ``subslide``; everything else ``skip``;
* after the title and after each routed heading, a speaker-notes cell (slide_type ``notes``); after a
  routed section with a question, a question cell (``subslide``) whose answer is folded in
  ``<details>``. Both are marked ``metadata.mxe_route`` (so a second run replaces them) and tagged
  ``remove-cell`` (the docs site does not show them).

Applied twice, the notebook is byte for byte the same. Only markdown cells are added or split, so the
docs build's execution cache (keyed on code cells) still matches.
"""
from __future__ import annotations

import argparse
import copy
import difflib
import re
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROUTE_FILE = ROOT / "docs" / "teaching" / "route.yaml"
NOTEBOOKS = ROOT / "notebooks"
ROLES = ("slide", "subslide", "fragment", "-", "skip", "notes")
MARK = "mxe_route"           # cell metadata key of the cells this script inserts
HIDE_ON_SITE = "remove-cell"  # myst-nb: not shown on the docs site


class RouteError(ValueError):
    """The route and a notebook do not fit together (a heading not found, a wrong role, ...)."""


# ---------------------------------------------------------------- the route file


def load_route(path: Path = ROUTE_FILE) -> Dict[str, Any]:
    """The route, checked: every section has a heading and whole minutes; roles are known ones."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    lecture = data.get("lecture") or {}
    if not lecture.get("chapters"):
        raise RouteError(f"{path}: `lecture.chapters` is empty: list the chapters the lecture presents.")
    for chapter in lecture["chapters"]:
        if not re.match(r"^\d\d_\w+$", str(chapter.get("notebook", ""))):
            raise RouteError(f"{path}: chapter {chapter!r} needs `notebook: NN_name`.")
        for section in chapter.get("sections") or []:
            if not section.get("heading"):
                raise RouteError(f"{path}: a section of {chapter['notebook']} has no `heading`.")
            for key in ("minutes", "short"):
                if key in section and (not isinstance(section[key], int) or section[key] <= 0):
                    raise RouteError(f"{path}: {chapter['notebook']} / {section['heading']}: `{key}` must be a "
                                     f"positive whole number of minutes.")
            if "minutes" not in section:
                raise RouteError(f"{path}: {chapter['notebook']} / {section['heading']}: give its `minutes`.")
            bad = [r for r in section.get("cells") or [] if r not in ROLES]
            if bad:
                raise RouteError(f"{path}: {chapter['notebook']} / {section['heading']}: unknown roles {bad}; "
                                 f"use {list(ROLES)}.")
    return data


def lecture_chapters(route: Dict[str, Any]) -> List[Dict[str, Any]]:
    return list(route["lecture"]["chapters"])


def chapter_of(route: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    return next((c for c in lecture_chapters(route) if c["notebook"] == name), None)


def totals(route: Dict[str, Any]) -> Dict[str, int]:
    """Minutes of the 90- and 45-minute lectures (sections + wrap-up) and of each course lesson."""
    lecture = route["lecture"]
    sections = [s for c in lecture["chapters"] for s in c["sections"]]
    out = {"lecture": sum(s["minutes"] for s in sections) + lecture.get("wrap_up_minutes", 0),
           "short": sum(s.get("short", 0) for s in sections) + lecture.get("wrap_up_short", 0)}
    for i, lesson in enumerate(route.get("course") or [], start=1):
        out[f"lesson {i}"] = sum(c["minutes"] for c in lesson["chapters"]) + lesson.get("buffer", 0)
    return out


# ---------------------------------------------------------------- headings


_NUMBER = re.compile(r"^(\d+(\.\d+)*\s*[·.:)]\s*)")


def normalize(heading: str) -> str:
    """'## 5 · The `cache`,  carried' -> 'the cache, carried' (no #, number, backticks, case, extra space)."""
    text = heading.strip().lstrip("#").strip()
    text = _NUMBER.sub("", text)
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"\s+", " ", text).strip().lower()


def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _level(line: str) -> int:
    m = re.match(r"^(#{1,6})\s", line)
    return len(m.group(1)) if m else 0


def split_at_headings(nb) -> None:
    """Split markdown cells in place so that each level-2 or level-3 heading starts its own cell."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            out.append(cell)
            continue
        lines = _source(cell).split("\n")
        starts = [i for i, line in enumerate(lines) if _level(line) in (2, 3) and i > 0]
        if not starts:
            out.append(cell)
            continue
        bounds = [0] + starts + [len(lines)]
        for k in range(len(bounds) - 1):
            text = "\n".join(lines[bounds[k]:bounds[k + 1]]).strip("\n")
            if not text.strip():
                continue
            part = copy.deepcopy(cell)
            part.source = text
            if k > 0:
                part.metadata = {}
                if "id" in cell:
                    part.id = f"{cell.id}-h{k}"[:64]
            out.append(part)
    nb.cells = out


def sections_of(nb) -> List[Tuple[str, int, int]]:
    """[(heading line, first cell, end cell)] for each level-2 heading (the heading starts its cell)."""
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            first = _source(cell).split("\n", 1)[0]
            if _level(first) == 2:
                found.append((first, i))
    return [(h, i, found[k + 1][1] if k + 1 < len(found) else len(nb.cells)) for k, (h, i) in enumerate(found)]


# ---------------------------------------------------------------- applying


def _notes_text(minutes: Optional[int], item: Dict[str, Any]) -> str:
    parts = ["**Speaker notes**" + (f" ({minutes} min)" if minutes else "") + ". " + item.get("say", "").strip()]
    if item.get("move"):
        parts.append(f"**Move:** {item['move'].strip()}")
    if item.get("ask"):
        parts.append(f"**Ask:** {item['ask'].strip()}  \n**Expect:** {item.get('answer', '').strip()}")
    return "\n\n".join(p for p in parts if p.strip())


def _inserted(kind: str, key: str, text: str, role: str):
    cell = nbformat.v4.new_markdown_cell(text)
    cell.id = f"route-{kind}-{key}"[:64]
    cell.metadata = {MARK: kind, "slideshow": {"slide_type": role}, "tags": [HIDE_ON_SITE]}
    return cell


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", normalize(text)).strip("-")[:40]


def strip_route(nb) -> None:
    """Remove what apply_route added: its inserted cells and every cell's slide metadata."""
    nb.cells = [c for c in nb.cells if MARK not in c.metadata]
    for cell in nb.cells:
        cell.metadata.pop("slideshow", None)


def apply_route(nb, chapter: Optional[Dict[str, Any]]):
    """A copy of `nb` carrying the route's slide metadata for `chapter` (a route.yaml chapter entry).

    chapter None (a chapter the lecture does not present): the copy has no slide metadata at all.
    Raises RouteError naming every heading the notebook lacks.
    """
    nb = copy.deepcopy(nb)
    strip_route(nb)
    if chapter is None:
        return nb
    split_at_headings(nb)
    found = sections_of(nb)
    by_name = {normalize(h): (h, a, b) for h, a, b in found}
    missing = [s["heading"] for s in chapter.get("sections") or [] if normalize(s["heading"]) not in by_name]
    if missing:
        known = [h for h, _, _ in found]
        hints = "; ".join(f"{m!r} (nearest: {difflib.get_close_matches(m, known, 2, 0.4)})" for m in missing)
        raise RouteError(f"{chapter['notebook']}: no section headed {hints}. Fix docs/teaching/route.yaml.")
    roles = ["skip"] * len(nb.cells)
    inserts: Dict[int, List[Any]] = {}     # cell index -> cells to insert after it
    title = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
                  and _level(_source(c).split("\n", 1)[0]) == 1), None)
    first_section = found[0][1] if found else len(nb.cells)
    for i in range(first_section):   # before the sections: the call-chain map ("you are here") is shown
        if nb.cells[i].cell_type == "code" and "callchain_html(" in _source(nb.cells[i]):
            roles[i] = "subslide"
    if title is not None:
        roles[title] = "slide"
        inserts.setdefault(title, []).append(_inserted("notes", "title", _notes_text(None, chapter), "notes"))
    for section in chapter.get("sections") or []:
        heading, start, end = by_name[normalize(section["heading"])]
        roles[start] = "slide"
        rest = list(range(start + 1, end))
        wanted = section.get("cells")
        if wanted is not None and len(wanted) != len(rest):
            raise RouteError(f"{chapter['notebook']} / {section['heading']}: `cells` lists {len(wanted)} roles, "
                             f"the section has {len(rest)} cells after its heading.")
        in_exercise = False
        for k, i in enumerate(rest):
            cell = nb.cells[i]
            first = _source(cell).split("\n", 1)[0] if cell.cell_type == "markdown" else ""
            if _level(first) == 3:   # an exercise is for later: its cells stay off the slides
                in_exercise = normalize(first).startswith("exercise")
            if wanted is not None:
                roles[i] = wanted[k]
            elif in_exercise or _source(cell).lstrip().startswith("<details><summary>Solution"):
                roles[i] = "skip"
            else:
                roles[i] = "subslide" if cell.cell_type == "code" else "-"
        key = _slug(section["heading"])
        inserts.setdefault(start, []).append(
            _inserted("notes", key, _notes_text(section["minutes"], section), "notes"))
        if section.get("ask"):
            text = (f"**Question for the room.** {section['ask'].strip()}\n\n"
                    f"<details><summary>Answer</summary>\n\n{section.get('answer', '').strip()}\n\n</details>")
            inserts.setdefault(end - 1, []).append(_inserted("question", key, text, "subslide"))
    cells = []
    for i, cell in enumerate(nb.cells):
        cell.metadata["slideshow"] = {"slide_type": roles[i]}
        cells.append(cell)
        cells.extend(inserts.get(i, []))
    nb.cells = cells
    return nb


def apply_file(path: Path, route: Dict[str, Any], write: bool = True) -> bool:
    """Apply the route to one notebook file; returns True if its text changed (written when write)."""
    old = path.read_text(encoding="utf-8")
    nb = nbformat.reads(old, as_version=4)
    new = nbformat.writes(apply_route(nb, chapter_of(route, path.stem))) + "\n"
    if new != old and write:
        tmp = path.with_name(f".{path.name}.route-tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
    return new != old


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["apply", "check"])
    parser.add_argument("names", nargs="*", help="chapters (NN_name); default: every notebook in the folder")
    parser.add_argument("--dir", type=Path, default=NOTEBOOKS, help="folder of the notebooks (default notebooks/)")
    parser.add_argument("--route", type=Path, default=ROUTE_FILE)
    args = parser.parse_args(argv)
    route = load_route(args.route)
    paths = ([args.dir / f"{n}.ipynb" for n in args.names] if args.names
             else sorted(args.dir.glob("[0-9][0-9]_*.ipynb")))
    changed = [p for p in paths if apply_file(p, route, write=args.command == "apply")]
    for p in changed:
        print(("updated " if args.command == "apply" else "differs from the route: ") + str(p))
    return 1 if (args.command == "check" and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
