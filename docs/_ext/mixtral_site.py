"""Sphinx extension for the mixtral-edu docs site: chapters, generated pages, offline assets.

What it does, in build order:

* ``config-inited``: links ``docs/notebooks`` to the repository's ``notebooks/``
  (a symlink, so nothing is copied and a chapter executes in the same folder it
  runs in under JupyterLab), and writes the generated includes under
  ``docs/_generated/``: the chapter toctree, the call-chain map, the API module
  list, the benchmark table, and one folded solutions page per chapter
  (``docs/solutions/<chapter>.md``, from ``notebooks/solutions/<chapter>.py``). A file is only rewritten when its text changes,
  so an unchanged rebuild stays incremental.
* ``builder-inited``: makes sure the JavaScript packages the site serves itself
  are in the local vendor cache (``docs/_build/.vendor``), fetching a missing
  one once from the npm registry with ``npm pack`` and checking it against the
  pinned sha512 integrity.
* ``html-page-context``: adds plotly.js only to pages that hold a plotly figure,
  puts a "run this notebook locally / download" box under each chapter's title,
  and links the same page in the other language (the site is built once per
  language, into ``_build/html/<lang>/``; see ``languages`` in conf.py).
* ``build-finished``: copies plotly.js (from the installed ``plotly`` package),
  the vendored npm files and a license note into ``_static/vendor/``.

Two more things keep the chapters right: when any file of ``mixtral_edu``
changes, the execution cache is dropped and every notebook runs again (myst-nb
keys its cache on the cells only, so the site would otherwise show numbers from
older code); and relative links inside a chapter are resolved without following
the ``docs/notebooks`` symlink (see :func:`keep_symlinked_paths`).

Nothing on a built page is loaded from any other host.
"""
from __future__ import annotations

import base64
import fnmatch
import hashlib
import html
import importlib.util
import os
import pkgutil
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.transforms import SphinxTransform
from sphinx.util import logging

from mixtral_edu.i18n import FOLD_LABELS, N_, gettext

logger = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parent.parent
ROOT = DOCS.parent
GENERATED = DOCS / "_generated"
VENDOR_CACHE = DOCS / "_build" / ".vendor"

# Files from npm packages that the site serves from _static/vendor/<slug>-<version>/.
# Versions are pinned with the registry's sha512 integrity of the tarball.
NPM_ASSETS: List[Dict[str, Any]] = [
    {
        # Renders saved ipywidgets state on a static page. ipywidgets 8.1.9's
        # front end (jupyterlab_widgets 3.0.17) is built on base 6.0.12 /
        # controls 5.0.13, which is what html-manager 1.0.15 bundles.
        # embed.js is the standalone bundle: no require.js, and it never loads
        # widget code from a CDN (only the AMD bundle does that, for third-party widgets).
        "name": "@jupyter-widgets/html-manager",
        "version": "1.0.15",
        "integrity": "sha512-5thBIV6ymNgmPVOHvzx+gGy8ZSKmSazhtGw4/c4xJDVzRhG9PTeQsRjF3FUTopvFi//SABeNz1yp47bCrJ3CQA==",
        "license": "BSD-3-Clause (bundled third-party notices: embed.js.LICENSE.txt)",
        "keep": ["package.json", "dist/embed.js", "dist/embed.js.LICENSE.txt", "dist/*.woff2", "dist/*.woff",
                 "dist/*.ttf", "dist/*.eot", "dist/*.svg"],
        "strip": "dist/",
    },
    {
        # Math rendering, only loaded on pages that have math. The whole es5/
        # tree is served so that any component MathJax loads lazily is local too.
        "name": "mathjax",
        "version": "3.2.2",
        "integrity": "sha512-Bt+SSVU8eBG27zChVewOicYs7Xsdt40qm4+UpHyX7k0/O9NliPc+x77k1/FEsPsjKPZGJvtRZM1vO+geW0OhGw==",
        "license": "Apache-2.0 (LICENSE)",
        "keep": ["package.json", "LICENSE", "es5/**"],
        "strip": "",
    },
]

# Diagram boxes on the landing page: key -> (label, what happens there).
# The descriptions are translated (mixtral_edu's catalog) when the page is built in another language.
CALL_CHAIN_STEPS: Dict[str, Sequence[str]] = {
    "generate": ("generate", N_("the decoding loop: prefill once, then one token per step")),
    "prepare_inputs_for_generation": ("prepare_inputs_for_generation",
                                      N_("keeps only uncached tokens, builds position_ids, picks the cache")),
    "causal_lm": ("MixtralForCausalLM.forward", N_("backbone + lm_head (+ loss and aux loss when training)")),
    "model": ("MixtralModel.forward", N_("embeddings, position ids, 4D mask, the layer loop")),
    "decoder_layer": ("MixtralDecoderLayer × L", N_("two residual sub-blocks per layer")),
    "self_attn": ("self_attn", N_("RMSNorm → RoPE → grouped-query attention, reads & extends the KV cache")),
    "block_sparse_moe": ("block_sparse_moe", N_("RMSNorm → router → top-k experts, weighted sum")),
    "norm": ("norm", N_("final RMSNorm")),
    "lm_head": ("lm_head", N_("hidden state → one score per vocabulary token")),
    "outputs": ("logits, past_key_values", N_("what forward returns to the loop")),
    "next_token": (N_("next token"), N_("greedy or sampled (temperature, top-k, top-p), appended; loop again")),
}
CHAPTER_TO_COME = N_("chapter to come")
CALL_CHAIN_LABEL = N_("Call chain of one generation step")
LOOP_BACK = N_("back to {generate} until EOS or max_new_tokens")


def _slug(name: str) -> str:
    return name.replace("@", "").replace("/", "-")


def _write_if_changed(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


# ---------------------------------------------------------------- chapters


def link_notebooks() -> None:
    """Make docs/notebooks a symlink to ../notebooks (created once, gitignored)."""
    link = DOCS / "notebooks"
    target = Path("..") / "notebooks"
    if link.is_symlink():
        if os.readlink(link) == str(target):
            return
        link.unlink()
    elif link.exists():
        raise ExtensionError(f"{link} exists and is not the symlink to ../notebooks; remove it")
    (ROOT / "notebooks").mkdir(exist_ok=True)
    os.symlink(target, link, target_is_directory=True)


def chapter_docnames() -> List[str]:
    """Docnames of the walkthrough chapters (notebooks/NN_topic.ipynb), in name order."""
    folder = ROOT / "notebooks"
    return sorted(f"notebooks/{p.stem}" for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def chapters_include(chapters: Sequence[str]) -> str:
    if not chapters:
        return ("The chapters are being written: each one is a notebook in `notebooks/`, "
                "and appears here as soon as it exists.\n")
    lines = ["```{toctree}", ":caption: Walkthrough", ":maxdepth: 1", ""]
    lines += list(chapters)
    lines += ["```", ""]
    return "\n".join(lines)


def resolve_call_chain(mapping: Dict[str, Any], chapters: Sequence[str]) -> Dict[str, Optional[str]]:
    """Step key -> chapter docname or None.

    A mapping value is either a docname ("notebooks/03_causal_lm") or a list of
    keywords; with keywords the first chapter whose topic (file name after
    ``NN_``) contains one of them is taken. A docname that does not exist gives None.
    """
    out: Dict[str, Optional[str]] = {}
    for key in CALL_CHAIN_STEPS:
        value = mapping.get(key)
        found = None
        if isinstance(value, str):
            found = value if value in chapters else None
        elif value:
            for chapter in chapters:
                topic = chapter.split("/", 1)[1].split("_", 1)[-1].lower()
                if any(word.lower() in topic for word in value):
                    found = chapter
                    break
        out[key] = found
    return out


def call_chain_html(links: Dict[str, Optional[str]], language: str = "en") -> str:
    """The landing page's box diagram: nested boxes, each naming one step, linked to its chapter."""

    def _(message: str) -> str:
        return gettext(message, language)

    soon = html.escape(_(CHAPTER_TO_COME))

    def box(key: str, cls: str = "") -> str:
        label, what = CALL_CHAIN_STEPS[key]
        inner = (f'<span class="mxe-box-name"><code>{html.escape(_(label))}</code></span> '
                 f'<span class="mxe-box-what">{html.escape(_(what))}</span> ')
        target = links.get(key)
        classes = f"mxe-box {cls}".strip()
        if target:
            return f'<a class="{classes} mxe-linked" href="{html.escape(target)}.html">{inner}</a>'
        return (f'<div class="{classes} mxe-unlinked" title="{soon}">{inner}'
                f'<span class="mxe-box-soon">({soon})</span></div>')

    def header(key: str) -> str:
        label, what = CALL_CHAIN_STEPS[key]
        text = (f'<code>{html.escape(_(label))}</code> <span class="mxe-box-what">{html.escape(_(what))}</span>')
        target = links.get(key)
        if target:
            return f'<a class="mxe-group-title mxe-linked" href="{html.escape(target)}.html">{text}</a>'
        return f'<div class="mxe-group-title mxe-unlinked" title="{soon}">{text}</div>'

    arrow = '<div class="mxe-arrow" aria-hidden="true">↓</div>'
    parts = [
        f'<nav class="mxe-chain" aria-label="{html.escape(_(CALL_CHAIN_LABEL))}">',
        box("generate", "mxe-loop"),
        arrow,
        box("prepare_inputs_for_generation"),
        arrow,
        '<div class="mxe-group mxe-group-lm">', header("causal_lm"),
        '<div class="mxe-group mxe-group-model">', header("model"),
        '<div class="mxe-group mxe-group-layer">', header("decoder_layer"),
        '<div class="mxe-row">', box("self_attn"), '<div class="mxe-arrow-right" aria-hidden="true">→</div>',
        box("block_sparse_moe"), "</div>",
        "</div>",  # layer
        arrow,
        box("norm"),
        "</div>",  # model
        arrow,
        box("lm_head"),
        "</div>",  # causal lm
        arrow,
        box("outputs"),
        arrow,
        box("next_token", "mxe-loop"),
        '<div class="mxe-loop-back">↺ ' + html.escape(_(LOOP_BACK)).format(generate="<code>generate</code>")
        + "</div>",
        "</nav>",
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- API page


def api_modules(preferred: Sequence[str]) -> List[str]:
    """Modules of mixtral_edu that exist now: the preferred order first, then any others by name.

    A module is listed when its file exists; if it then fails to import, autodoc
    warns and the -W build fails, which is what a broken module should do.
    """
    pkg = importlib.util.find_spec("mixtral_edu")
    if pkg is None or not pkg.submodule_search_locations:
        raise ExtensionError("mixtral_edu is not importable: run bash scripts/setup.sh")
    found: List[str] = []
    for info in pkgutil.iter_modules(pkg.submodule_search_locations):
        if info.name.startswith("_"):
            continue
        found.append(info.name)
        if info.ispkg:
            sub_spec = importlib.util.find_spec(f"mixtral_edu.{info.name}")
            for sub in pkgutil.iter_modules(sub_spec.submodule_search_locations or []):
                if not sub.name.startswith("_"):
                    found.append(f"{info.name}.{sub.name}")
    order = {name: i for i, name in enumerate(preferred)}

    def key(name: str):
        top = name.split(".")[0]
        return (order.get(top, len(order)), top, name.count("."), name)

    return sorted(found, key=key)


def api_include(modules: Sequence[str]) -> str:
    lines: List[str] = []
    for name in modules:
        full = f"mixtral_edu.{name}"
        level = "##" if "." not in name else "###"
        # autodoc writes reStructuredText, so the directive runs inside eval-rst.
        lines += [f"{level} {full}", "", "```{eval-rst}", f".. automodule:: {full}", "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- benchmarks


def benchmarks_include() -> str:
    results = ROOT / "benchmarks" / "results.md"
    if not results.is_file():
        return ("Benchmarks have not been run yet: this page shows their table once "
                "`benchmarks/results.md` exists.\n")
    out: List[str] = []
    fence = None
    for line in results.read_text(encoding="utf-8").splitlines():
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None and stripped.startswith(fence):
            fence = None
        elif fence is None and re.match(r"#{1,5} ", line):
            line = "#" + line  # one level down: the page already has its own title
        out.append(line)
    return "\n".join(out) + "\n"


def tiny_model_include() -> str:
    """The shipped model's card, headings one level down, its curves image copied next to it."""
    card_dir = ROOT / "mixtral_edu" / "tiny" / "model"
    card = card_dir / "README.md"
    if not card.is_file():
        return "The tiny model has not been trained yet: `python -m mixtral_edu.tiny.train --out DIR`.\n"
    curves = card_dir / "training_curves.png"
    if curves.is_file():
        target = GENERATED / "tiny_model_training_curves.png"
        if not target.is_file() or target.read_bytes() != curves.read_bytes():
            GENERATED.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(curves, target)
    out: List[str] = []
    for line in card.read_text(encoding="utf-8").splitlines():
        if re.match(r"#{1,5} ", line):
            line = "#" + line
        out.append(line.replace("](training_curves.png)", "](/_generated/tiny_model_training_curves.png)"))
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- troubleshooting

BAD_INPUTS = ROOT / "tests" / "bad_inputs.py"  # the table test_bad_inputs.py runs


def _load_bad_inputs():
    spec = importlib.util.spec_from_file_location("mixtral_edu_bad_inputs", BAD_INPUTS)
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    return table


def _fence(text: str, lang: str) -> str:
    """A code fence long enough for any backticks inside `text`."""
    ticks = "`" * max(3, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"{ticks}{lang}\n{text}\n{ticks}"


def troubleshooting_include() -> str:
    """The body of "When something goes wrong": every row of the bad-input table, run now, with the
    message it gives. A row whose check fails stops the build (the page would show a wrong answer)."""
    table = _load_bad_inputs()
    ns, cleanup = table.namespace()
    try:
        outcomes = [(case, table.run(case, ns)) for case in table.CASES]
    finally:
        cleanup()
    failing = [f"{c.area}: {c.problem}: {table.check(c, o)}" for c, o in outcomes if table.check(c, o)]
    if failing:
        raise ExtensionError("tests/bad_inputs.py rows fail their checks:\n" + "\n".join(failing))
    root = ns["_root"]

    def tidy(message: str) -> str:  # temporary paths and memory addresses change from build to build
        message = re.sub(re.escape(root) + r"/f\d+", "my_model", message).replace(root, "~")
        return re.sub(r" at 0x[0-9a-f]+", "", message)

    out = [f"{len(outcomes)} mistakes, each with the code that makes it and the message you get (produced "
           "when this page was built). The table is `tests/bad_inputs.py`; the test suite checks every row.", "",
           "## Deliberately stricter than transformers", "",
           "Here mixtral_edu refuses something transformers 4.41.2 accepts; the message says so.", ""]
    def heading(problem: str) -> str:  # "a list ..." -> "A list ...", but "top_p = 0" and "int32 ..." stay
        first = problem.split(" ", 1)[0]
        return problem[0].upper() + problem[1:] if first.isalpha() else problem

    for i, (case, _) in enumerate(outcomes):
        if case.stricter:
            out.append(f"- {{ref}}`{heading(case.problem)} <trouble-{i}>` (`{case.code.splitlines()[-1]}`): "
                       f"{case.stricter}.")
    for area, title in table.AREAS.items():
        out += ["", f"## {title}", ""]
        for i, (case, outcome) in enumerate(outcomes):
            if case.area != area:
                continue
            if outcome.kind == "raised":
                what = f"raises `{outcome.type_name}`:"
            elif outcome.kind == "warned":
                what = f"runs, with a `{outcome.type_name}`:"
            else:
                what = "returns NOT YET (a checker never raises):"
            out += [f"(trouble-{i})=", f"### {heading(case.problem)}", "", _fence(case.code, "python"), "", what, "",
                    ":::{container} mxe-trouble", _fence(tidy(outcome.message), "text"), ":::", ""]
            if case.stricter:
                out += [f"Stricter than transformers: {case.stricter}.", ""]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- solutions, folded

SOLUTIONS_INTRO = ("Try each exercise in the notebook first: its check says PASS or NOT YET with a hint. "
                   "Each reference solution below is folded; open one only to compare with your own.")
SOLUTIONS_EMPTY = "This chapter has no exercises with a reference solution yet."
_EXERCISE_HEADING = re.compile(r"^### (Exercise (\d\d\.\d+) .*)$", re.M)


def exercise_headings(notebook: Path) -> Dict[str, str]:
    """Exercise key ("01.2") -> its heading in the student notebook ("Exercise 01.2 · ★★☆ · 15 min · predict")."""
    import json
    cells = json.loads(notebook.read_text(encoding="utf-8")).get("cells", [])
    text = "\n".join("".join(c.get("source", "")) for c in cells if c.get("cell_type") == "markdown")
    return {m.group(2): m.group(1).strip() for m in _EXERCISE_HEADING.finditer(text)}


def solution_functions(path: Path) -> Dict[str, str]:
    """Function name -> its source, for each top-level function of a solutions module (read, not imported)."""
    import ast
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    return {n.name: ast.get_source_segment(text, n) for n in tree.body if isinstance(n, ast.FunctionDef)}


def chapter_exercises(stem: str) -> List[tuple]:
    """(key, function name) of a chapter, in notebook order, from the checker modules' EXERCISES registries."""
    prefix = stem.split("_", 1)[0] + "."
    import importlib
    package = importlib.import_module("mixtral_edu.exercises")
    rows = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        registry = getattr(importlib.import_module(f"mixtral_edu.exercises.{info.name}"), "EXERCISES", {})
        rows += [(key, name) for key, (name, _check) in registry.items() if key.startswith(prefix)]
    return sorted(rows, key=lambda r: tuple(int(x) for x in r[0].split(".")))


def _highlighted(code: str) -> str:
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    return highlight(code, PythonLexer(), HtmlFormatter(cssclass="highlight"))


def solutions_page(stem: str, title: str, exercises: Sequence[tuple], functions: Dict[str, str],
                   headings: Dict[str, str]) -> str:
    """One chapter's solutions page (MyST): one folded <details> per exercise, in notebook order.

    Functions of the solutions module that no exercise names (helpers) are folded at the end.
    """
    lines = [f"# Solutions · {title}", "", SOLUTIONS_INTRO, "",
             f"Chapter: [{title}](../notebooks/{stem}.ipynb) · source: `notebooks/solutions/{stem}.py`", ""]
    shown = set()
    blocks = []
    for key, name in exercises:
        if name not in functions:
            continue
        shown.add(name)
        blocks.append((headings.get(key, f"Exercise {key}"), name, functions[name]))
    for name, code in functions.items():
        if name not in shown and not name.startswith("_"):
            blocks.append((f"Helper: {name}", name, code))
    if not blocks:
        return "\n".join(lines + [SOLUTIONS_EMPTY, ""])
    lines += ["```{raw} html", '<div class="mxe-solutions">']
    for summary, name, code in blocks:
        lines.append(f'<details class="mxe-solution" id="solution-{html.escape(name)}">'
                     f"<summary>{html.escape(summary)} · <code>{html.escape(name)}</code></summary>")
        lines += _highlighted(code).splitlines()
        lines.append("</details>")
    lines += ["</div>", "```", ""]
    return "\n".join(lines)


def write_solution_pages(chapters: Sequence[str]) -> List[str]:
    """docs/solutions/<stem>.md for each chapter with a solutions module; returns their docnames."""
    out = []
    folder = DOCS / "solutions"
    for chapter in chapters:
        stem = chapter.split("/", 1)[1]
        source = ROOT / "notebooks" / "solutions" / f"{stem}.py"
        if not source.is_file():
            continue
        number, _, topic = stem.partition("_")
        title = f"{number} · {topic.replace('_', ' ')}"
        page = solutions_page(stem, title, chapter_exercises(stem), solution_functions(source),
                              exercise_headings(ROOT / "notebooks" / f"{stem}.ipynb"))
        _write_if_changed(folder / f"{stem}.md", page)
        out.append(f"solutions/{stem}")
    return out


def solutions_include(pages: Sequence[str]) -> str:
    if not pages:
        return ""
    return "\n".join(["```{toctree}", ":caption: Solutions (folded)", ":maxdepth: 1", "", *pages, "```", ""])


TERMS = DOCS / "locale" / "zh_CN" / "terms.tsv"


def read_terms(path: Path = TERMS) -> List[Dict[str, str]]:
    """The terminology table: one row per concept (english, chinese, source, hf)."""
    if not path.is_file():
        return []
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    header, body = rows[0], rows[1:]
    return [dict(zip(header, row + [""] * (len(header) - len(row)))) for row in body]


def terms_html(terms: Sequence[Dict[str, str]]) -> str:
    """The bilingual terminology table of the glossary page (raw HTML: it is not a catalog entry)."""
    star = '<sup title="the walkthrough\'s own term">*</sup>'
    rows = []
    for t in terms:
        hf = " ".join(f"<code>{html.escape(h.strip())}</code>" for h in t["hf"].split(",") if h.strip())
        mark = star if t["source"] == "walkthrough" else ""
        rows.append(f'<tr><td>{html.escape(t["english"])}</td>'
                    f'<td lang="zh-CN">{html.escape(t["chinese"])}{mark}</td><td>{hf}</td></tr>')
    return ('<table class="table mxe-terms"><thead><tr><th>English</th><th lang="zh-CN">中文</th>'
            "<th>Hugging Face</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>\n"
            '<p class="mxe-terms-note"><sup>*</sup> the Chinese walkthrough\'s own term · '
            '<span lang="zh-CN">中文讲解原文所用的术语</span></p>\n')


def write_generated(app: Sphinx, config) -> None:
    link_notebooks()
    chapters = chapter_docnames()
    _write_if_changed(GENERATED / "chapters.md", chapters_include(chapters))
    links = resolve_call_chain(config.mxe_call_chain, chapters)
    # written for the language being built (both builds share docs/_generated; they run one after the other)
    _write_if_changed(GENERATED / "callchain.html", call_chain_html(links, config.language or "en"))
    _write_if_changed(GENERATED / "api_modules.md", api_include(api_modules(config.mxe_api_modules)))
    _write_if_changed(GENERATED / "benchmarks.md", benchmarks_include())
    _write_if_changed(GENERATED / "tiny_model.md", tiny_model_include())
    _write_if_changed(GENERATED / "troubleshooting.md", troubleshooting_include())


    _write_if_changed(GENERATED / "solutions.md", solutions_include(write_solution_pages(chapters)))
    terms = read_terms()
    _write_if_changed(GENERATED / "terms.html", terms_html(terms))
    # Chinese search splits text with jieba; our terms are words to it too (Sphinx's zh "dict" option)
    words = DOCS / "_build" / "jieba_terms.txt"
    _write_if_changed(words, "".join(f"{t['chinese'].replace(' ', '')} 100000\n" for t in terms
                                     if any("\u4e00" <= ch <= "\u9fff" for ch in t["chinese"])))
    config.html_search_options = dict(config.html_search_options or {}, dict=str(words))


# ---------------------------------------------------------------- vendored assets


def _integrity(path: Path) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode()


def _wanted(member: str, keep: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(member, pattern) for pattern in keep)


def ensure_npm_asset(spec: Dict[str, Any]) -> Path:
    """The folder holding this package's kept files, fetched with ``npm pack`` if not cached yet."""
    dest = VENDOR_CACHE / f"{_slug(spec['name'])}-{spec['version']}"
    stamp = dest / ".integrity"
    if stamp.is_file() and stamp.read_text().strip() == spec["integrity"]:
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise ExtensionError("npm is needed once to fetch the site's JavaScript assets "
                             "(apt-get install -y npm); scripts/docs.sh installs it")
    logger.info(f"[mixtral_site] fetching {spec['name']}@{spec['version']} with npm pack")
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(
            [npm, "pack", f"{spec['name']}@{spec['version']}", "--pack-destination", tmp,
             "--prefer-offline", "--silent", "--json"],
            capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise ExtensionError(f"npm pack {spec['name']}@{spec['version']} failed:\n{proc.stderr[-2000:]}")
        tarballs = list(Path(tmp).glob("*.tgz"))
        if len(tarballs) != 1:
            raise ExtensionError(f"npm pack left {tarballs} in {tmp}")
        got = _integrity(tarballs[0])
        if got != spec["integrity"]:
            raise ExtensionError(f"{spec['name']}@{spec['version']}: integrity {got} != pinned {spec['integrity']}")
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        with tarfile.open(tarballs[0]) as tar:
            for member in tar.getmembers():
                if not member.isfile():
                    continue
                rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
                if not _wanted(rel, spec["keep"]):
                    continue
                if spec["strip"] and rel.startswith(spec["strip"]):
                    rel = rel[len(spec["strip"]):]
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
    stamp.write_text(spec["integrity"] + "\n")
    return dest


def plotly_js() -> tuple[Path, str]:
    import plotly
    import plotly.offline

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return path, plotly.offline.get_plotlyjs_version()


def static_paths() -> Dict[str, str]:
    """URLs (relative to _static) of the served scripts."""
    _, plotly_version = plotly_js()
    widgets, mathjax = NPM_ASSETS
    return {
        "plotly": f"vendor/plotly.js-{plotly_version}/plotly.min.js",
        "widgets": f"vendor/{_slug(widgets['name'])}-{widgets['version']}/embed.js",
        "mathjax": f"vendor/{_slug(mathjax['name'])}-{mathjax['version']}/es5/tex-mml-chtml.js",
    }


def fetch_assets(app: Sphinx) -> None:
    if app.builder.format != "html":
        return
    for spec in NPM_ASSETS:
        ensure_npm_asset(spec)


def _copy_tree_if_changed(src: Path, dst: Path, stamp_text: str) -> None:
    stamp = dst / ".integrity"
    if stamp.is_file() and stamp.read_text() == stamp_text:
        return
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".integrity"))
    stamp.write_text(stamp_text)


def copy_assets(app: Sphinx, exception: Optional[Exception]) -> None:
    if exception is not None or app.builder.format != "html":
        return
    vendor = Path(app.outdir) / "_static" / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    notes = ["Third-party files this site serves itself (nothing is loaded from another host).", "",
             "fontawesome/: Font Awesome webfonts, shipped by pydata-sphinx-theme (the book theme's base).",]
    source, version = plotly_js()
    dest = vendor / f"plotly.js-{version}" / "plotly.min.js"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, dest)
    notes.append(f"plotly.js-{version}/: plotly.js {version}, MIT license (see the file's header), "
                 f"copied from the installed Python package plotly (plotly/package_data/plotly.min.js).")
    for spec in NPM_ASSETS:
        cached = ensure_npm_asset(spec)
        name = f"{_slug(spec['name'])}-{spec['version']}"
        _copy_tree_if_changed(cached, vendor / name, spec["integrity"])
        notes.append(f"{name}/: npm package {spec['name']}@{spec['version']} ({spec['integrity']}), "
                     f"license {spec['license']}, fetched from the npm registry with npm pack.")
    _write_if_changed(vendor / "README.txt", "\n".join(notes) + "\n")


# ---------------------------------------------------------------- per-page additions

RUN_LOCALLY_TITLE = N_("Run this notebook locally")
RUN_LOCALLY_TEXT = N_("Every number on this page was computed by the notebook below. To run it yourself "
                      "(CPU only, offline): {command} opens it in JupyterLab.")
DOWNLOAD = N_("Download {name}")
OTHER_LANGUAGE_TITLE = N_("This page in {language}")
LANGUAGE_NAMES = {"en": N_("English"), "zh_CN": N_("Chinese")}  # in the reader's language (a link's title)


def run_locally_box(href: str, name: str, language: str) -> str:
    command = "bash scripts/lab.sh" + ("" if language == "en" else f" --lang {language}")
    text = html.escape(gettext(RUN_LOCALLY_TEXT, language)).format(command=f"<code>{html.escape(command)}</code>")
    download = html.escape(gettext(DOWNLOAD, language).format(name=name))
    return ('<div class="admonition tip mxe-run-locally">'
            f'<p class="admonition-title">{html.escape(gettext(RUN_LOCALLY_TITLE, language))}</p>'
            f'<p>{text} <a class="reference download" href="{html.escape(href)}" download="{html.escape(name)}">'
            f"{download}</a></p></div>")


def other_languages(pagename: str, language: str, languages: Dict[str, str]) -> List[Dict[str, str]]:
    """Links to this very page in the other languages' builds (siblings: html/en/, html/zh_CN/)."""
    up = "../" * (pagename.count("/") + 1)
    return [{"code": code, "bcp47": code.replace("_", "-"),  # zh_CN is the folder; lang="zh-CN" is the tag
             "label": label, "href": f"{up}{code}/{pagename}.html",
             "title": gettext(OTHER_LANGUAGE_TITLE, language).format(
                 language=gettext(LANGUAGE_NAMES.get(code, label), language))}
            for code, label in languages.items() if code != language]


_FOLD = re.compile(r"<summary>\s*(" + "|".join(FOLD_LABELS) + r")(\s+\d+)?\s*</summary>")   # "Hint 2": number kept

SOLUTIONS_LINK = '<a class="reference internal" href="{href}">Reference solutions of the exercises (folded)</a>'


def page_context(app: Sphinx, pagename: str, templatename: str, context: Dict[str, Any], doctree) -> None:
    language = app.config.language or "en"
    context["mxe_other_languages"] = other_languages(pagename, language, app.config.mxe_languages)
    body = context.get("body") or ""
    if language != "en":  # <details> blocks are raw html, which catalogs do not reach: their labels
        body = context["body"] = _FOLD.sub(lambda m: f"<summary>{html.escape(gettext(m.group(1), language))}"
                                           f"{m.group(2) or ''}</summary>", body)
    if 'class="mxe-plotly"' in body:
        app.add_js_file(static_paths()["plotly"])
    if "application/vnd.jupyter.widget-view+json" in body:
        app.add_js_file("mxe-widgets-mathjax.js")
    source = app.env.doc2path(pagename, False) if pagename in app.env.all_docs else None
    if source is not None and str(source).endswith(".ipynb"):
        pathto = context["pathto"]
        href = f"{pathto('_sources', 1)}/{pagename}.ipynb"
        name = pagename.rsplit("/", 1)[-1] + ".ipynb"
        box = run_locally_box(href, name, language)
        stem = pagename.rsplit("/", 1)[-1]
        if f"solutions/{stem}" in app.env.all_docs:
            box = box.replace("</p></div>", " · " + SOLUTIONS_LINK.format(
                href=html.escape(pathto(f"solutions/{stem}"))) + "</p></div>")
        match = re.search(r"</h1>", body)
        at = match.end() if match else 0
        context["body"] = body[:at] + box + body[at:]


# ---------------------------------------------------------------- plotly mime type

PLOTLY_MIME = "application/vnd.plotly.v1+json"


def quiet_plotly_mime() -> None:
    """Let myst-nb skip plotly's JSON mime type without a warning.

    A figure shown with ``mixtral_edu.viz.show`` (or plotly's own ``fig.show()``
    in an executed notebook) carries plotly JSON *and* text/html; the html
    builder shows the html (see ``nb_mime_priority_overrides`` in conf.py). During
    parsing myst-nb still visits every mime type of a bundle and warns on ones it
    has no renderer for, which ``-W`` would turn into a failure. Only the plotly
    type is let through quietly; any other unknown type still warns.
    """
    from myst_nb.core.render import NbElementRenderer

    if getattr(NbElementRenderer, "_mxe_quiet_plotly", False):
        return
    block, inline = NbElementRenderer.render_unhandled, NbElementRenderer.render_unhandled_inline

    def render_unhandled(self, data):
        return [] if data.mime_type == PLOTLY_MIME else block(self, data)

    def render_unhandled_inline(self, data):
        return [] if data.mime_type == PLOTLY_MIME else inline(self, data)

    NbElementRenderer.render_unhandled = render_unhandled
    NbElementRenderer.render_unhandled_inline = render_unhandled_inline
    NbElementRenderer._mxe_quiet_plotly = True


# ---------------------------------------------------------------- paths through docs/notebooks


def keep_symlinked_paths() -> None:
    """Resolve a page's relative links without following the docs/notebooks symlink.

    Sphinx 9's ``BuildEnvironment.relfn2path`` calls ``Path.resolve()``, which turns
    ``docs/notebooks/01_x.ipynb`` into ``notebooks/01_x.ipynb``: outside the source
    folder, so a link from one chapter to the next (``[next](02_y.ipynb)``) or an
    image beside a notebook would not be found. The same computation with a
    purely lexical normalisation keeps the path inside ``docs/``.
    """
    from sphinx.environment import BuildEnvironment
    from sphinx.util.osutil import _relative_path

    if getattr(BuildEnvironment, "_mxe_lexical_paths", False):
        return

    def relfn2path(self, filename, docname=None):
        file_name = Path(filename)
        if file_name.parts[:1] in {("/",), ("\\",)}:
            abs_fn = Path(os.path.normpath(self.srcdir.joinpath(*file_name.parts[1:])))
        else:
            docname = docname or self.docname
            if not docname:
                raise KeyError("docname")
            doc_dir = self.doc2path(docname, base=False).parent
            abs_fn = Path(os.path.normpath(self.srcdir.joinpath(doc_dir, file_name)))
        rel_fn = _relative_path(abs_fn, self.srcdir)
        return rel_fn.as_posix(), os.fspath(abs_fn)

    relfn2path.__doc__ = BuildEnvironment.relfn2path.__doc__
    BuildEnvironment.relfn2path = relfn2path
    BuildEnvironment._mxe_lexical_paths = True


# ---------------------------------------------------------------- stale notebook outputs

def package_hash() -> str:
    """Hash of every file of the mixtral_edu package (code and shipped data; not its translation
    catalogs: the site's notebooks run in English, so a new translation re-executes nothing)."""
    pkg = ROOT / "mixtral_edu"
    digest = hashlib.sha256()
    for path in sorted(pkg.rglob("*")):
        if path.relative_to(pkg).parts[0] == "locale":
            continue
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(path.relative_to(pkg).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def _stamps(app: Sphinx) -> tuple:
    """(execution cache folder, its stamp, this build's stamp): the package hash each last saw.

    The cache is shared by the languages' builds, each build (env) is its own: after a code
    change the first build empties the cache and re-runs the notebooks, the second re-reads
    its notebook pages from the refilled cache without running anything.
    """
    cache = Path(app.config.nb_execution_cache_path or Path(app.outdir).parent / ".jupyter_cache")
    return cache, cache.parent / (cache.name + ".mixtral_edu.sha256"), Path(app.doctreedir) / "mixtral_edu.sha256"


def _read_stamp(path: Path) -> Optional[str]:
    return path.read_text().strip() if path.is_file() else None


def check_code_changed(app: Sphinx, config) -> None:
    """myst-nb's cache keys a notebook's outputs on its cells only: when mixtral_edu
    changes, every notebook must run again or the site would show old numbers.
    Drop the execution cache, and (below) mark every notebook page outdated."""
    app._mxe_code_hash = package_hash()
    cache, cache_stamp, env_stamp = _stamps(app)
    app._mxe_code_changed = _read_stamp(env_stamp) != app._mxe_code_hash
    if _read_stamp(cache_stamp) != app._mxe_code_hash and cache.exists():
        logger.info("[mixtral_site] mixtral_edu changed since the last build: notebooks run again")
        shutil.rmtree(cache)


def outdated_notebooks(app: Sphinx, env, added, changed, removed) -> List[str]:
    if not getattr(app, "_mxe_code_changed", False):
        return []
    return sorted(d for d in env.found_docs
                  if d not in added and str(env.doc2path(d, False)).endswith(".ipynb"))


def stamp_code(app: Sphinx, exception: Optional[Exception]) -> None:
    if exception is None and getattr(app, "_mxe_code_hash", None):
        for stamp in _stamps(app)[1:]:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(app._mxe_code_hash + "\n")


_CHAPTER_LINK = re.compile(r"""(href=)(["'])(\d\d_[A-Za-z0-9_]+)\.ipynb(#[^"']*)?\2""")


def chapter_links_to_pages(app: Sphinx, exception: Optional[Exception]) -> None:
    """Point a notebook output's links between chapters (``01_x.ipynb``, right in JupyterLab) at the pages.

    Links written in markdown cells are resolved by Sphinx; these come from HTML outputs (the
    call-chain map), which Sphinx does not read. A link is rewritten only if its page exists.
    """
    if exception is not None or app.builder.format != "html":
        return
    folder = Path(app.outdir) / "notebooks"
    for page in folder.glob("*.html"):
        text = page.read_text(encoding="utf-8")

        def swap(m: "re.Match[str]") -> str:
            if not (folder / f"{m.group(3)}.html").exists():
                return m.group(0)
            return f"{m.group(1)}{m.group(2)}{m.group(3)}.html{m.group(4) or ''}{m.group(2)}"

        new_text = _CHAPTER_LINK.sub(swap, text)
        if new_text != text:
            page.write_text(new_text, encoding="utf-8")


# ---------------------------------------------------------------- what the catalogs leave out

# Generated includes that are not prose to translate: measured numbers rewritten by every benchmark
# run, and module names. (The model card include is prose: it is translated.)
UNTRANSLATED_INCLUDES = ("_generated/benchmarks.md", "_generated/api_modules.md")


class Untranslated(SphinxTransform):
    """Mark what the translation catalogs must not hold: math, API docstrings (code), and the
    untranslated includes (found through the source of a node or of its ancestors).

    Runs before Sphinx's i18n transform (priority 20), so neither `gettext` extraction nor a
    translated build looks at these nodes: they show in English in every language.
    """

    default_priority = 10

    def apply(self, **kwargs: Any) -> None:
        from docutils import nodes

        skip = tuple(str(DOCS / name) for name in UNTRANSLATED_INCLUDES)
        for node in self.document.findall(nodes.TextElement):
            sources, up = [], node
            while up is not None:  # a table cell's paragraph has no source: its table does
                sources.append(up.source or "")
                up = up.parent
            if (isinstance(node, nodes.math_block) or any("docstring of " in s or s.endswith(skip)
                                                            for s in sources)):
                node["translatable"] = False


def chinese_search(app: Sphinx) -> None:
    """Sphinx 9.0's Chinese search ships the English stemmer for Latin words but names it
    ``ChineseStemmer`` in language_data.js (``window.Stemmer = ChineseStemmer``), a JavaScript
    error on every page and a search that never runs. Register the same language with the
    stemmer code inlined under its own name."""
    from sphinx.search import _MINIFIED_JS_PATH
    from sphinx.search.zh import SearchChinese

    code = "\n".join([(_MINIFIED_JS_PATH / "base-stemmer.js").read_text(encoding="utf-8"),
                      (_MINIFIED_JS_PATH / SearchChinese.js_stemmer_rawcode).read_text(encoding="utf-8"),
                      "window.Stemmer = EnglishStemmer;"])
    if "ChineseStemmer" in code or "var EnglishStemmer" not in code:
        raise ExtensionError("Sphinx's Chinese search stemmer changed: re-check chinese_search()")
    fixed = type("SearchChinese", (SearchChinese,), {"js_stemmer_rawcode": None, "js_stemmer_code": code})
    app.add_search_language(fixed)


def setup(app: Sphinx) -> Dict[str, Any]:
    app.add_transform(Untranslated)
    chinese_search(app)
    quiet_plotly_mime()
    keep_symlinked_paths()
    app.connect("config-inited", check_code_changed)
    app.connect("env-get-outdated", outdated_notebooks)
    app.connect("build-finished", stamp_code)
    app.add_config_value("mxe_call_chain", {}, "env")
    app.add_config_value("mxe_api_modules", [], "env")
    app.add_config_value("mxe_languages", {"en": "English"}, "html")
    app.connect("config-inited", write_generated)
    app.connect("builder-inited", fetch_assets)
    app.connect("html-page-context", page_context)
    app.connect("build-finished", copy_assets)
    app.connect("build-finished", chapter_links_to_pages)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
