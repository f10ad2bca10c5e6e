"""Slide decks of the lecture route: executed notebooks -> reveal.js decks that run offline.

    python docs/_ext/decks.py [--out DIR] [NN_name ...]     # bash scripts/slides.sh calls this

For each chapter of the lecture (docs/teaching/route.yaml):

1. the executed notebook: the docs build's execution cache (docs/_build/.jupyter_cache) when it
   matches the notebook's code cells and was made by the current mixtral_edu; otherwise the notebook
   runs here (nbclient, a clean kernel, one thread);
2. the route's slide metadata and speaker notes (docs/_ext/route.py; already in the notebook once the
   route is applied, which changes nothing then);
3. for slides: code cells show their outputs only (the live notebook shows the code), plotly figures
   are refitted to the projector (mixtral_edu.viz.projector_mode.fit_figure) and stay interactive,
   widget views are left out (they need a kernel; their static twin figure is on the slide);
4. nbconvert's slides exporter with our template (deck_templates/mxe_reveal): reveal.js from the
   pinned npm package, plotly.js from the installed plotly, MathJax 3 from the pinned npm package
   when the deck has math, all copied into DIR/vendor/. Nothing is loaded from another host.

DIR (default docs/_build/html/slides) then holds one NN_name.html per chapter, index.html and vendor/.
"""
from __future__ import annotations

import argparse
import copy
import html
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
ROOT = HERE.parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import nbformat  # noqa: E402

import mixtral_site as site  # noqa: E402  (the npm vendoring and plotly.js of the docs site)
import route as rt  # noqa: E402

DEFAULT_OUT = ROOT / "docs" / "_build" / "html" / "slides"
CACHE = ROOT / "docs" / "_build" / ".jupyter_cache"
TEMPLATES = HERE / "deck_templates"
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

REVEAL = {
    "name": "reveal.js",
    "version": "6.0.2",
    "integrity": "sha512-JYIg5D9aoxoaLeb84O+OvAwsKWdIavVgEDScxtYEXFCT6t6TQrhNtSgogcjdCpdLsWglhJn3zyE3fUOwiH5KEg==",
    "license": "MIT (LICENSE)",
    "keep": ["package.json", "LICENSE", "dist/reveal.js", "dist/reveal.css", "dist/theme/white.css",
             "dist/plugin/notes.js"],
    "strip": "",
}

# The deck's own look on top of the projector stylesheet of the views (mixtral_edu.viz.projector_mode).
DECK_CSS = """
.reveal .slides { text-align: left; }
.reveal .slides section { height: 100%; overflow-y: auto; padding: 12px 20px; box-sizing: border-box; }
.reveal .slides h1, .reveal .slides h2, .reveal .slides h3 { text-transform: none; }
.reveal .slides h1 { font-size: 40px; } .reveal .slides h2 { font-size: 32px; } .reveal .slides h3 { font-size: 26px; }
.mxe-deck .jp-RenderedHTMLCommon, .mxe-deck .jp-RenderedMarkdown p, .mxe-deck .jp-RenderedMarkdown li {
  font-size: 20px; line-height: 1.4; }
.mxe-deck .jp-RenderedHTMLCommon table, .mxe-deck .jp-RenderedHTMLCommon th,
.mxe-deck .jp-RenderedHTMLCommon td { font-size: 20px !important; }
.mxe-deck .jp-OutputArea-output pre, .mxe-deck .jp-RenderedText pre { font-size: 20px; line-height: 1.3;
  white-space: pre-wrap; }
.mxe-deck .jp-InputPrompt, .mxe-deck .jp-OutputPrompt { display: none; }
.mxe-deck .jp-OutputArea-output { max-width: 1240px; }
.mxe-deck details { font-size: 20px; margin-top: 12px; }
.mxe-deck details summary { cursor: pointer; color: #0058a0; }
.reveal .controls, .reveal .progress { color: #0058a0; }
.reveal .slide-number { background-color: #3d3d3d; color: #ffffff; font-size: 14px; }
.mxe-deck p a, .mxe-deck li a { text-decoration: underline !important; }   /* links in text: not by colour alone */
"""


@dataclass
class Deck:
    name: str
    path: Path
    slides: int
    minutes: int
    outputs_from: str   # "docs cache" or "run now"


def log_default(message: str) -> None:
    print(message, flush=True)


# ---------------------------------------------------------------- executed notebooks


def _cache_is_current() -> bool:
    """The execution cache was made by the current mixtral_edu (the docs build stamps the package hash)."""
    return site.CODE_STAMP.is_file() and site.CODE_STAMP.read_text().strip() == site.package_hash()


def executed(path: Path, trust_cache: bool = False, timeout: int = 180):
    """(notebook with outputs, where the outputs came from)."""
    nb = nbformat.read(path, as_version=4)
    if CACHE.is_dir() and (trust_cache or _cache_is_current()):
        from jupyter_cache import get_cache
        try:
            _, merged = get_cache(str(CACHE)).merge_match_into_notebook(nb)
            return merged, "docs cache"
        except KeyError:
            pass
    from nbclient import NotebookClient
    env = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, "run now"


# ---------------------------------------------------------------- slides from a notebook


def _refit(output) -> None:
    """A plotly output at projector scale: new plotly JSON and the html the deck draws."""
    from mixtral_edu.viz.display import figure_html
    from mixtral_edu.viz.projector_mode import fit_figure
    spec = output["data"][PLOTLY_MIME]
    fig = fit_figure({k: spec[k] for k in ("data", "layout", "frames") if k in spec})
    fitted = json.loads(fig.to_json())
    output["data"][PLOTLY_MIME] = {k: v for k, v in fitted.items() if k in ("data", "layout", "frames")}
    output["data"]["text/html"] = figure_html(fig)


def for_slides(nb, chapter: Dict) -> nbformat.NotebookNode:
    """The executed notebook as the deck shows it (see the module docstring, step 2 and 3)."""
    nb = rt.apply_route(nb, chapter)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.setdefault("transient", {})["remove_source"] = True
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data") or {}
            if WIDGET_MIME in data:
                continue
            if PLOTLY_MIME in data:
                _refit(out)
            kept.append(out)
        cell.outputs = kept
        role = cell.metadata.get("slideshow", {}).get("slide_type")
        if role in ("slide", "subslide") and not kept:
            cell.metadata["slideshow"]["slide_type"] = "-"   # nothing to show: no empty slide
    return nb


def _has_math(nb) -> bool:
    return any(cell.cell_type == "markdown" and cell.metadata.get("slideshow", {}).get("slide_type") != "skip"
               and re.search(r"\$[^$\n]+\$", cell.source) for cell in nb.cells)


def count_slides(page: str) -> int:
    """Slides a reader pages through: each <section> that holds no other <section>."""
    tags = re.findall(r"<(/?)section\b", page)
    count, opened_inner = 0, []
    for closing in tags:
        if not closing:
            opened_inner.append(False)
        else:
            had_child = opened_inner.pop()
            if not had_child:
                count += 1
            if opened_inner:
                opened_inner[-1] = True
    return count


# ---------------------------------------------------------------- assets


def vendor(out: Path) -> Dict[str, str]:
    """Copy reveal.js, plotly.js (and MathJax) into out/vendor; returns their URLs relative to out."""
    vend = out / "vendor"
    vend.mkdir(parents=True, exist_ok=True)
    notes = ["Third-party files the slide decks serve themselves (nothing is loaded from another host).", ""]
    reveal = site.ensure_npm_asset(REVEAL)
    name = f"{site._slug(REVEAL['name'])}-{REVEAL['version']}"
    site._copy_tree_if_changed(reveal, vend / name, REVEAL["integrity"])
    notes.append(f"{name}/: npm package {REVEAL['name']}@{REVEAL['version']} ({REVEAL['integrity']}), "
                 f"license {REVEAL['license']}, fetched from the npm registry with npm pack.")
    source, version = site.plotly_js()
    dest = vend / f"plotly.js-{version}" / "plotly.min.js"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists() or dest.stat().st_size != source.stat().st_size:
        shutil.copyfile(source, dest)
    notes.append(f"plotly.js-{version}/: plotly.js {version}, MIT license (see the file's header), copied from "
                 "the installed Python package plotly.")
    mathjax_spec = next(s for s in site.NPM_ASSETS if s["name"] == "mathjax")
    mj_name = f"{site._slug(mathjax_spec['name'])}-{mathjax_spec['version']}"
    site._copy_tree_if_changed(site.ensure_npm_asset(mathjax_spec), vend / mj_name, mathjax_spec["integrity"])
    notes.append(f"{mj_name}/: npm package mathjax@{mathjax_spec['version']} ({mathjax_spec['integrity']}), "
                 f"license {mathjax_spec['license']}.")
    site._write_if_changed(vend / "README.txt", "\n".join(notes) + "\n")
    return {"reveal": f"vendor/{name}", "plotly": f"vendor/plotly.js-{version}/plotly.min.js",
            "mathjax": f"vendor/{mj_name}/es5/tex-mml-chtml.js"}


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    tmp.replace(path)


def export_deck(nb, title: str, urls: Dict[str, str]) -> str:
    from nbconvert.exporters import SlidesExporter
    from mixtral_edu.viz.projector_mode import VIEW_CSS
    # the reveal_* settings replace nbconvert's defaults, a reveal.js 4 on a CDN among them
    exporter = SlidesExporter(template_name="mxe_reveal", extra_template_basedirs=[str(TEMPLATES)],
                              reveal_url_prefix=urls["reveal"], reveal_theme="white", reveal_transition="none",
                              reveal_number="c/t", reveal_width="1280", reveal_height="720", reveal_scroll=False)
    nb.metadata["title"] = title
    resources = {
        "mxe": {"plotly": urls["plotly"], "mathjax": urls["mathjax"] if _has_math(nb) else "",
                "css": " ".join((VIEW_CSS + DECK_CSS).split())},
    }
    page, _ = exporter.from_notebook_node(nb, resources=resources)
    return relink(page)


_ANCHOR = re.compile(r'<a class="anchor-link" href="#[^"]*">[^<]*</a>')
_CHAPTER = re.compile(r"""href=(["'])(\d\d_[A-Za-z0-9_]+)\.ipynb(#[^"']*)?\1""")


def relink(page: str) -> str:
    """Links between chapters (NN_name.ipynb, right in JupyterLab) point at the site's pages
    (the decks live in the site's slides/ folder); heading anchors, hidden on slides, go."""
    page = _ANCHOR.sub("", page)
    return _CHAPTER.sub(lambda m: f"href={m.group(1)}../notebooks/{m.group(2)}.html{m.group(1)}", page)


def index_page(decks: List[Deck], route: Dict) -> str:
    t = rt.totals(route)
    rows = "".join(
        f'<tr><td><a href="{html.escape(d.path.name)}">{html.escape(d.name)}</a></td>'
        f"<td>{d.slides}</td><td>{d.minutes}</td></tr>" for d in decks)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>mixtral-edu slide decks</title>"
            "<style>body{font-family:DejaVu Sans,Arial,sans-serif;font-size:20px;margin:2em;color:#222}"
            "td,th{padding:4px 16px;text-align:left}a{color:#0058a0}</style></head><body><main>"
            f"<h1>Slide decks: {html.escape(route['lecture']['title'])}</h1>"
            f"<p>The {t['lecture']}-minute lecture route, one deck per chapter, in order. Keys: arrows or space to "
            "move, S for the speaker notes, F for full screen, Esc for the overview.</p>"
            "<table><thead><tr><th scope=\"col\">deck</th><th scope=\"col\">slides</th>"
            "<th scope=\"col\">minutes</th></tr></thead>"
            f"<tbody>{rows}</tbody></table></main></body></html>\n")


def build_decks(out: Path = DEFAULT_OUT, names: Optional[Sequence[str]] = None, trust_cache: bool = False,
                log: Callable[[str], None] = log_default) -> List[Deck]:
    """Build the decks of the lecture chapters (all, or `names`) into `out`; returns what was built."""
    route = rt.load_route()
    chapters = [c for c in rt.lecture_chapters(route) if names is None or c["notebook"] in names]
    if names:
        unknown = sorted(set(names) - {c["notebook"] for c in chapters})
        if unknown:
            raise SystemExit(f"not chapters of the lecture route: {unknown} (see docs/teaching/route.yaml)")
    out.mkdir(parents=True, exist_ok=True)
    urls = vendor(out)
    decks = []
    for chapter in chapters:
        start = time.monotonic()
        path = rt.NOTEBOOKS / f"{chapter['notebook']}.ipynb"
        nb, source = executed(path, trust_cache=trust_cache)
        title = nbformat.read(path, as_version=4).cells[0].source.split("\n", 1)[0].lstrip("# ").strip()
        page = export_deck(for_slides(nb, chapter), title, urls)
        target = out / f"{chapter['notebook']}.html"
        _atomic_text(target, page)
        deck = Deck(chapter["notebook"], target, count_slides(page),
                    sum(s["minutes"] for s in chapter["sections"]), source)
        decks.append(deck)
        log(f"[slides] {target.name}: {deck.slides} slides, {deck.minutes} min, outputs from the {source} "
            f"({time.monotonic() - start:.1f} s)")
    if names is None:
        _atomic_text(out / "index.html", index_page(decks, route))
    return decks


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the lecture route's slide decks (offline).")
    parser.add_argument("names", nargs="*", help="chapters (NN_name); default: every chapter of the lecture")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    decks = build_decks(args.out, args.names or None)
    total = sum(d.slides for d in decks)
    print(f"[slides] {len(decks)} decks, {total} slides in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
