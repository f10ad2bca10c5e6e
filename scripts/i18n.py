"""Translation catalogs of mixtral-edu, and the Chinese notebooks made from them (run: bash scripts/i18n.sh).

    extract    templates (.pot) into docs/_build/gettext/: the docs pages and the notebooks' markdown
               (Sphinx's gettext builder, nothing executed), the classroom cells the pages leave out
               (speaker notes, questions for the room: notes/NN_*.pot), and mixtral_edu's _("...")
               messages (ast)
    update     extract, then merge into every language's .po: new entries empty, a changed English
               sentence keeps its old translation marked fuzzy (shown in English until re-checked)
    notebooks  notebooks/<lang>/NN_*.ipynb from the English notebooks and the catalogs
    check      counts per catalog; exit 1 if any entry is untranslated or fuzzy, or if a translation
               lost a placeholder, or a catalog location no longer points at its notebook block
    build      notebooks, then check the catalogs can be read (what lab.sh --lang runs)

The translation pass is editing .po files (docs/locale/<lang>/LC_MESSAGES/**.po and
mixtral_edu/locale/<lang>/LC_MESSAGES/mixtral_edu.po), then `check`.
"""
from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOCS_LOCALE = DOCS / "locale"
POT_DIR = DOCS / "_build" / "gettext"
PKG_LOCALE = ROOT / "mixtral_edu" / "locale"
PKG_POT = POT_DIR / "mixtral_edu.pot"
NOTEBOOKS = ROOT / "notebooks"
NOTES_POT_DIR = POT_DIR / "notes"   # the classroom cells (tag remove-cell): not on any docs page
LANGUAGES = ["zh_CN"]
PKG_SOURCES = [ROOT / "mixtral_edu", DOCS / "_ext"]

sys.path.insert(0, str(ROOT))
from mixtral_edu.i18n import placeholders, read_po  # noqa: E402
from mixtral_edu.modeling.files import write_bytes_atomically  # noqa: E402

# Entries of the docs templates that are not prose to translate: API docstrings (code), the
# generated module list and benchmark table (measured numbers, rewritten on every run), the dev page.
SKIP_LOCATIONS = (":docstring of ", "_generated/api_modules.md", "_generated/benchmarks.md", "/_dev/")
SKIP_POTS = ("_dev",)
# Fixed header dates: an update that changes no message rewrites no file.
FIXED_DATE = __import__("datetime").datetime(2026, 1, 1, tzinfo=__import__("datetime").timezone.utc)


def _atomic_write(path: Path, data: bytes) -> bool:
    """Write if the bytes differ (whole or not at all); True if written."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(str(path), data)
    return True


# ---------------------------------------------------------------- extract


def _translatable(msgid: str) -> bool:
    """Prose, not a bare identifier, number or code span: something a reader needs in their language."""
    text = re.sub(r"`[^`]*`", "", msgid)              # code spans stay as they are
    text = re.sub(r"https?://\S+", "", text)
    return bool(re.search(r"[A-Za-z]{2,}", text))


def extract_docs() -> List[Path]:
    """Sphinx's gettext builder (notebooks not executed), then leave out what is not prose."""
    from babel.messages.pofile import read_po as babel_read, write_po

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    cmd = [sys.executable, "-m", "sphinx", "-b", "gettext", "-q", "-E", "-D", "nb_execution_mode=off",
           "-d", str(DOCS / "_build" / "doctrees" / "gettext"), str(DOCS), str(POT_DIR)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"sphinx gettext failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    pots = []
    for pot in sorted(POT_DIR.rglob("*.pot")):
        if pot == PKG_POT or NOTES_POT_DIR in pot.parents:  # made by extract_package / extract_notes
            continue
        rel = pot.relative_to(POT_DIR).with_suffix("").as_posix()
        if rel.startswith(SKIP_POTS):
            pot.unlink()
            continue
        with open(pot, "rb") as f:
            catalog = babel_read(f)
        for message in list(catalog):
            if not message.id:
                continue
            keep = [loc for loc in message.locations if loc[0].endswith((".md", ".ipynb", ".rst"))
                    and not any(s in loc[0] for s in SKIP_LOCATIONS)]
            if not keep or not _translatable(message.id):
                del catalog[message.id]
            else:
                message.locations = keep
        if not [m for m in catalog if m.id]:
            pot.unlink()
            continue
        buf = io.BytesIO()
        write_po(buf, catalog, width=0)
        _atomic_write(pot, buf.getvalue())
        pots.append(pot)
    return pots


class _Messages(ast.NodeVisitor):
    """The literal messages of _("...") and N_("...") calls in one file, and the misuses found."""

    def __init__(self, path: Path):
        self.path, self.found, self.problems = path, [], []

    SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef,
              ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)

    @classmethod
    def _own_scope(cls, node):
        """The nodes of a function's own scope (nested functions and comprehensions left out)."""
        for child in ast.iter_child_nodes(node):
            yield child
            if not isinstance(child, cls.SCOPES):
                yield from cls._own_scope(child)

    def visit_FunctionDef(self, node):
        # a function that assigns `_` (e.g. `tr, _ = f()`) makes `_` local: calling _() there fails
        nodes = list(self._own_scope(node))
        assigned = [n for n in nodes if isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Store)]
        called = [n for n in nodes if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_"]
        if assigned and called:
            self.problems.append(f"{self.path}:{called[0].lineno}: {node.name} assigns `_` "
                                 f"(line {assigned[0].lineno}) and calls _(): rename the throwaway")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Call(self, node):
        if isinstance(node.func, ast.Name) and node.func.id in ("_", "N_"):
            arg = node.args[0] if node.args else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                self.found.append((arg.value, node.lineno))
            elif node.func.id == "N_" or isinstance(arg, ast.JoinedStr):
                self.problems.append(f"{self.path}:{node.lineno}: {node.func.id}() needs one plain string literal "
                                     "(an f-string cannot be looked up: use _(\"... {name}\").format(name=...))")
        self.generic_visit(node)


def package_messages() -> Tuple[Dict[str, List[Tuple[str, int]]], List[str]]:
    """{message: [(file, line)]} of every _()/N_() literal in mixtral_edu and docs/_ext, and problems found."""
    messages: Dict[str, List[Tuple[str, int]]] = {}
    problems: List[str] = []
    for folder in PKG_SOURCES:
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            rel = path.relative_to(ROOT).as_posix()
            visitor = _Messages(Path(rel))
            visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=rel))
            problems += visitor.problems
            for text, line in visitor.found:
                messages.setdefault(text, []).append((rel, line))
    return messages, problems


def extract_package() -> Path:
    messages, problems = package_messages()
    if problems:
        sys.exit("messages that cannot be translated:\n" + "\n".join(problems))
    catalog = _template()
    for text, locations in sorted(messages.items(), key=lambda kv: kv[1][0]):
        flags = ("python-brace-format",) if placeholders(text) else ()
        catalog.add(text, locations=locations, flags=flags)
    _write_template(catalog, PKG_POT)
    return PKG_POT


def _template():
    """An empty template catalog of this project (fixed date: an unchanged extract rewrites nothing)."""
    from babel.messages.catalog import Catalog

    return Catalog(project="mixtral-edu", version="0.1.0", copyright_holder="the mixtral-edu authors",
                   creation_date=FIXED_DATE)


def _write_template(catalog, pot: Path) -> None:
    from babel.messages.pofile import write_po

    buf = io.BytesIO()
    write_po(buf, catalog, width=0)
    _atomic_write(pot, buf.getvalue())


def extract_notes() -> List[Path]:
    """notes/NN_*.pot: the markdown of each notebook's classroom cells (speaker notes, questions for the
    room), which carry the tag remove-cell and so never reach a docs page or Sphinx's templates."""
    shutil.rmtree(NOTES_POT_DIR, ignore_errors=True)  # written afresh: a removed notebook leaves none behind
    parser = _markdown_parser()
    pots = []
    for path in english_notebooks():
        catalog = _template()
        for index, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] != "markdown" or "remove-cell" not in cell.get("metadata", {}).get("tags", []):
                continue
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for first, _end, text in _blocks(parser, source):
                msgid = _normal(text)
                if _translatable(msgid):  # numbered like myst-nb's locations: cell c, line l
                    catalog.add(msgid, locations=[(f"../../notebooks/{path.name}", (index + 1) * 10000 + first + 2)])
        if not [m for m in catalog if m.id]:
            continue
        pot = NOTES_POT_DIR / f"{path.stem}.pot"
        _write_template(catalog, pot)
        pots.append(pot)
    return pots


def extract() -> List[Path]:
    pots = extract_docs() + extract_notes() + [extract_package()]
    print(f"extracted {len(pots)} templates into {POT_DIR.relative_to(ROOT)}")
    return pots


# ---------------------------------------------------------------- update


def po_path(pot: Path, language: str) -> Path:
    if pot == PKG_POT:
        return PKG_LOCALE / language / "LC_MESSAGES" / "mixtral_edu.po"
    return DOCS_LOCALE / language / "LC_MESSAGES" / pot.relative_to(POT_DIR).with_suffix(".po")


def merge(pot: Path, po: Path, language: str) -> bool:
    """Merge a template into a catalog (babel: new entries empty, close matches fuzzy); True if written."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po as babel_read, write_po

    with open(pot, "rb") as f:
        template = babel_read(f)
    if po.is_file():
        with open(po, "rb") as f:
            catalog = babel_read(f, locale=language)
    else:
        catalog = Catalog(locale=language, project="mixtral-edu", version="0.1.0",
                          copyright_holder="the mixtral-edu authors", language_team=f"{language} <mixtral-edu>",
                          creation_date=FIXED_DATE, revision_date=FIXED_DATE)
    catalog.update(template, no_fuzzy_matching=False, update_creation_date=False)
    for message in catalog:
        # no translator comments are kept: the only ones ever written were "#| msgid" lines that a
        # catalog tool wrapped without their "|" and that came back as stray words ("# the")
        message.user_comments = []
    catalog.fuzzy = False  # the header: a fuzzy entry is one message whose English changed
    buf = io.BytesIO()
    # obsolete entries are dropped; a fuzzy one keeps the English it was translated from (#| msgid)
    write_po(buf, catalog, width=0, ignore_obsolete=True, include_previous=True)
    return _atomic_write(po, buf.getvalue())


def update(languages: Iterable[str]) -> None:
    pots = extract()
    for language in languages:
        wanted = {po_path(pot, language) for pot in pots}
        for pot in pots:
            if merge(pot, po_path(pot, language), language):
                print(f"updated {po_path(pot, language).relative_to(ROOT)}")
        for stale in (DOCS_LOCALE / language / "LC_MESSAGES").rglob("*.po"):
            if stale not in wanted:  # its page is gone
                stale.unlink()
                print(f"removed {stale.relative_to(ROOT)} (no such page any more)")


# ---------------------------------------------------------------- check


def catalogs(language: str) -> List[Path]:
    docs = sorted((DOCS_LOCALE / language / "LC_MESSAGES").rglob("*.po"))
    return docs + [PKG_LOCALE / language / "LC_MESSAGES" / "mixtral_edu.po"]


def stats(language: str) -> Dict[str, Dict]:
    """Per catalog (path relative to the repo): total, translated, fuzzy, untranslated, and problems."""
    out = {}
    for po in catalogs(language):
        rel = po.relative_to(ROOT).as_posix()
        if not po.is_file():
            out[rel] = {"total": 0, "translated": 0, "fuzzy": 0, "untranslated": 0,
                        "problems": [f"{rel} is missing: bash scripts/i18n.sh update"]}
            continue
        entries = [e for e in read_po(po) if e["msgid"] and not e["obsolete"]]
        fuzzy = [e for e in entries if e["fuzzy"]]
        untranslated = [e for e in entries if not e["msgstr"] and not e["fuzzy"]]
        problems = [f"{rel}:{e['line']}: the translation of {e['msgid'][:60]!r} has placeholders "
                    f"{placeholders(e['msgstr'])}, the English {placeholders(e['msgid'])}"
                    for e in entries if e["msgstr"] and "{" in e["msgid"] + e["msgstr"]
                    and po.name == "mixtral_edu.po" and placeholders(e["msgstr"]) != placeholders(e["msgid"])]
        out[rel] = {"total": len(entries), "fuzzy": len(fuzzy), "untranslated": len(untranslated),
                    "translated": len(entries) - len(fuzzy) - len(untranslated), "problems": problems,
                    "todo": [e["msgid"][:70] for e in fuzzy + untranslated]}
    return out


def check(languages: Iterable[str], verbose: bool = False) -> bool:
    ok = True
    for language in languages:
        table = stats(language)
        total = {k: sum(v[k] for v in table.values()) for k in ("total", "translated", "fuzzy", "untranslated")}
        print(f"{language}: {total['translated']}/{total['total']} entries translated, "
              f"{total['fuzzy']} fuzzy, {total['untranslated']} untranslated")
        for rel, row in table.items():
            flag = "" if row["translated"] == row["total"] and not row["problems"] else "  <-"
            print(f"  {row['translated']:5d}/{row['total']:<5d} fuzzy {row['fuzzy']:3d}  {rel}{flag}")
            if verbose:
                for msg in row.get("todo", []):
                    print(f"        todo: {msg}")
            for problem in row["problems"]:
                print(f"  problem: {problem}")
        problems = [p for row in table.values() for p in row["problems"]] + location_problems(language)
        for problem in location_problems(language):
            print(f"  problem: {problem}")
        ok = ok and not problems and total["translated"] == total["total"]
    return ok


# ---------------------------------------------------------------- notebooks


def _markdown_parser():
    """The markdown-it parser MyST uses for the docs (same extensions as conf.py), for token line maps."""
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser
    from markdown_it.renderer import RendererHTML

    config = MdParserConfig(enable_extensions={"dollarmath", "amsmath", "colon_fence", "deflist"},
                            heading_anchors=3)
    return create_md_parser(config, RendererHTML)


def _blocks(parser, source: str) -> List[Tuple[int, int, str]]:
    """(first line, end line, text) of every block whose text is a catalog message, in order.

    The text is what Sphinx puts in a msgid: the block's inline markdown, line breaks as spaces.
    """
    out = []
    for token in parser.parse(source):
        if token.type == "inline" and token.map:
            out.append((token.map[0], token.map[1], token.content))
    return out


def _normal(text: str) -> str:
    return text.replace("\n", " ").strip()


def translate_markdown(parser, source: str, translations: Dict[str, str]) -> Tuple[str, int, int]:
    """The cell's markdown with each translated block's text replaced; (new source, translated, blocks)."""
    lines = source.split("\n")
    done, total = 0, 0
    edits: Dict[int, Tuple[int, str]] = {}         # first line -> (end line, new text of those lines)
    for first, end, text in _blocks(parser, source):
        total += 1
        new = translations.get(_normal(text))
        if not new:
            continue
        breaks = text.count("  \n")   # hard line breaks: the msgid has "   " where each one was
        if breaks and new.count("   ") == breaks:
            new = new.replace("   ", "  \n")
        region = "\n".join(lines[first:end]) if first not in edits else edits[first][1]
        start = region.find(text.split("\n")[0])
        tail = text.split("\n")[-1]
        stop = region.rfind(tail) + len(tail) if tail else start + len(text)
        if start < 0 or stop < start:
            continue                                  # the block is not written as its text: leave it
        region = region[:start] + new + region[stop:]
        edits[first] = (max(end, edits.get(first, (end, ""))[0]), region)
        done += 1
    for first in sorted(edits, reverse=True):
        end, region = edits[first]
        lines[first:end] = region.split("\n")
    return "\n".join(lines), done, total


def notebook_translations(stem: str, language: str) -> Dict[str, str]:
    """{English block: translation} from the notebook's page catalog and its classroom-cells catalog."""
    out: Dict[str, str] = {}
    for folder in ("notes", "notebooks"):  # a block on the page wins over the same words in a note
        po = DOCS_LOCALE / language / "LC_MESSAGES" / folder / f"{stem}.po"
        if po.is_file():
            out.update({e["msgid"]: e["msgstr"] for e in read_po(po)
                        if e["msgid"] and e["msgstr"] and not e["fuzzy"] and not e["obsolete"]})
    return out


def setup_cell(language: str) -> dict:
    """The first cell of a generated notebook: views and checkers in its language, the English folder as cwd."""
    source = (f"# Generated from ../{{name}} by `bash scripts/i18n.sh notebooks`: edit the English notebook\n"
              f"# or the catalog (docs/locale/{language}/), not this file.\n"
              "import os\n"
              "import mixtral_edu\n"
              f"mixtral_edu.set_language({language!r})  # figures, widgets and exercise feedback\n"
              "os.chdir(\"..\")  # run where the English notebook runs, so its relative paths hold")
    return {"cell_type": "code", "execution_count": None, "id": "mxe-language-setup",
            "metadata": {"tags": ["mxe-language-setup"], "mixtral_edu": {"language": language}},
            "outputs": [], "source": source}


def fold_labels(text: str, language: str) -> str:
    from mixtral_edu.i18n import FOLD_LABELS, gettext

    # a label may carry a number ("Hint 1", "Hint 2"): the word is translated, the number kept
    pattern = re.compile(r"<summary>\s*(" + "|".join(FOLD_LABELS) + r")(\s+\d+)?\s*</summary>")
    return pattern.sub(lambda m: f"<summary>{gettext(m.group(1), language)}{m.group(2) or ''}</summary>", text)


def make_notebook(path: Path, language: str, parser=None) -> Tuple[dict, int, int]:
    """The translated notebook (as JSON data), blocks translated, blocks in all."""
    parser = parser or _markdown_parser()
    nb = json.loads(path.read_text(encoding="utf-8"))
    translations = notebook_translations(path.stem, language)
    done = total = 0
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue                                  # code is never translated: copied as it is
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        new, d, t = translate_markdown(parser, source, translations)
        new = fold_labels(new, language)
        done, total = done + d, total + t
        if new != source:
            cell["source"] = new.splitlines(keepends=True)
    setup = setup_cell(language)
    setup["source"] = setup["source"].replace("{name}", path.name).splitlines(keepends=True)
    nb["cells"].insert(0, setup)
    nb.setdefault("metadata", {})["mixtral_edu"] = {"language": language, "source": f"../{path.name}"}
    return nb, done, total


def english_notebooks() -> List[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def notebooks(languages: Iterable[str], out_root: Optional[Path] = None) -> Dict[str, Tuple[int, int]]:
    """Write notebooks/<lang>/NN_*.ipynb (only files whose content changed); {name: (translated, blocks)}."""
    parser = _markdown_parser()
    report = {}
    for language in languages:
        out = (out_root or NOTEBOOKS) / language
        wanted = set()
        for path in english_notebooks():
            nb, done, total = make_notebook(path, language, parser)
            target = out / path.name
            wanted.add(target)
            text = json.dumps(nb, ensure_ascii=False, indent=1) + "\n"
            _atomic_write(target, text.encode("utf-8"))
            report[f"{language}/{path.name}"] = (done, total)
        for stale in out.glob("*.ipynb"):
            if stale not in wanted:
                stale.unlink()
    return report


def location_problems(language: str) -> List[str]:
    """Every notebook catalog entry must point at a block of its notebook whose text is the msgid.

    A location `notebooks/NN_x.ipynb:L` is cell L // 10000 - 1, line L % 10000 - 1 of that cell
    (myst-nb numbers cell c's lines from (c + 1) * 10000, Sphinx adds one).
    """
    parser = _markdown_parser()
    problems = []
    for po in sorted((DOCS_LOCALE / language / "LC_MESSAGES" / "notebooks").glob("*.po")):
        nb_path = NOTEBOOKS / (po.stem + ".ipynb")
        if not nb_path.is_file():
            problems.append(f"{po.relative_to(ROOT)}: no notebook {nb_path.name}")
            continue
        cells = json.loads(nb_path.read_text(encoding="utf-8"))["cells"]
        blocks: Dict[int, List[Tuple[int, int, str]]] = {}
        for entry in read_po(po):
            if not entry["msgid"] or entry["obsolete"]:
                continue
            for loc in entry["locations"]:
                name, _sep, number = loc.rpartition(":")
                if not name.endswith(nb_path.name) or not number.isdigit():
                    continue
                cell, line = int(number) // 10000 - 1, int(number) % 10000 - 2
                if not 0 <= cell < len(cells) or cells[cell]["cell_type"] != "markdown":
                    problems.append(f"{po.name}: {loc} is not a markdown cell")
                    continue
                if cell not in blocks:
                    src = cells[cell]["source"]
                    blocks[cell] = _blocks(parser, "".join(src) if isinstance(src, list) else src)
                # a table's cells all carry the table's first line: its rows come after it
                texts = [_normal(t) for first, end, t in blocks[cell] if end > line]
                if entry["msgid"] not in texts:
                    problems.append(f"{po.name}: {loc} does not hold {entry['msgid'][:60]!r}")
    return problems


# ---------------------------------------------------------------- command line


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("command", choices=["extract", "update", "notebooks", "check", "build"])
    parser.add_argument("--lang", action="append", help="language (default: all: %s)" % ", ".join(LANGUAGES))
    parser.add_argument("-v", "--verbose", action="store_true", help="check: list the entries still to do")
    args = parser.parse_args(argv)
    languages = args.lang or LANGUAGES
    if args.command == "extract":
        extract()
    elif args.command == "update":
        update(languages)
    elif args.command in ("notebooks", "build"):
        for name, (done, total) in notebooks(languages).items():
            print(f"notebooks/{name}: {done}/{total} markdown blocks translated")
        if args.command == "build":
            for language in languages:
                for po in catalogs(language):
                    read_po(po)  # raises on a malformed catalog
    elif args.command == "check":
        return 0 if check(languages, args.verbose) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
