"""Export any view for a teacher's own slides: one call writes standalone HTML, PNG and SVG.

    viz.export(viz.routing_figure(tr, tokenizer=tok), "slides/routing")
    # -> {"html": slides/routing.html, "png": slides/routing.png, "svg": slides/routing.svg}

A view is a plotly figure (every ``*_figure``), a live view (its figure on screen), ``viz.Table``,
``side_by_side`` or the call-chain map. Everything is written offline:

* HTML: one file with plotly.js inlined (opens with no network), the text alternative as its
  title and as the figure's accessible name;
* PNG and SVG of a figure: drawn by kaleido in the machine's Chromium (``BROWSER_PATH``, else
  ``chromium`` on the PATH) from the plotly.js installed with plotly, MathJax off (no CDN);
  the SVG carries the text alternative as ``<title>``/``<desc>``, the PNG as its ``Description``;
* a table or a source comparison is drawn as SVG text (real, selectable text) and its PNG is a
  screenshot of that SVG by the same Chromium; the call-chain map's PNG and SVG are its figure twin.

In projector mode figures and listings are exported at projector scale (see ``viz.projector``).
Many exports in a row are faster inside ``with viz.export_session():`` (one browser for all).
"""
from __future__ import annotations

import contextlib
import html
import os
import shutil
import struct
import subprocess
import tempfile
import zlib
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from . import projector_mode as proj
from ..modeling.files import write_bytes_atomically
from .display import alt_text, figure_html

FORMATS = ("html", "png", "svg")
_session = {"open": False}


def browser_path() -> str:
    """The Chromium that renders PNG and SVG: $BROWSER_PATH, else chromium / chromium-browser on the PATH."""
    found = os.environ.get("BROWSER_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found or not Path(found).exists():
        raise RuntimeError("PNG and SVG export needs Chromium: install Debian's `chromium` "
                           "(scripts/test.sh does) or set BROWSER_PATH to a Chrome/Chromium binary.")
    return found


def _kaleido_options() -> Dict[str, Any]:
    import plotly
    local = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    # mathjax=False: kaleido would otherwise put MathJax from a CDN on its page
    return {"mathjax": False, "plotlyjs": str(local), "path": browser_path()}


@contextlib.contextmanager
def export_session() -> Iterator[None]:
    """Keep one kaleido browser open for the exports inside the block (each export otherwise starts one)."""
    import kaleido
    kaleido.start_sync_server(silence_warnings=True, **_kaleido_options())
    _session["open"] = True
    try:
        yield
    finally:
        _session["open"] = False
        kaleido.stop_sync_server(silence_warnings=True)


# ---------------------------------------------------------------- what a view is


def _figure_of(view: Any):
    """The plotly figure behind a view, or None for an HTML-only view."""
    import plotly.graph_objects as go
    if isinstance(view, go.Figure):
        return view
    if isinstance(view, dict) and "data" in view:
        return go.Figure(view)
    fig = getattr(view, "figure", None)
    if isinstance(fig, go.Figure):          # a LiveView: the figure on screen
        return fig
    if callable(fig):                       # the call-chain map: its figure twin
        return fig()
    return None


def _alt_of(view: Any, fig) -> str:
    alt = getattr(view, "alt", None)
    if isinstance(alt, str) and alt:
        return alt
    return alt_text(fig) if fig is not None else "A view of mixtral-edu."


# ---------------------------------------------------------------- writers


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(str(path), data)


def _page(body: str, alt: str, plotly_js: bool) -> str:
    script = ""
    if plotly_js:
        import plotly
        js = (Path(plotly.__file__).parent / "package_data" / "plotly.min.js").read_text(encoding="utf-8")
        script = f'<script type="text/javascript">{js}</script>'
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(alt)}</title>{script}"
            "<style>body{font-family:DejaVu Sans,Arial,sans-serif;margin:16px;color:#222;background:white}"
            ".mxe-alt{color:#555;font-size:0.9em;max-width:60em}</style></head><body>"
            f"<main>{body}<p class=\"mxe-alt\">{html.escape(alt)}</p></main></body></html>\n")


def _png_with_description(png: bytes, text: str) -> bytes:
    """The PNG with a tEXt chunk 'Description' (its text alternative) right after the header chunk."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    ihdr_len = struct.unpack(">I", png[8:12])[0]
    cut = 8 + 12 + ihdr_len
    payload = b"Description\x00" + text.encode("latin-1", "replace")
    chunk = struct.pack(">I", len(payload)) + b"tEXt" + payload
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
    return png[:cut] + chunk + png[cut:]


def _svg_with_title(svg: str, alt: str) -> str:
    """role="img" with <title> and <desc>: how an SVG states its text alternative."""
    head_end = svg.index(">", svg.index("<svg")) + 1
    tag = svg[:head_end]
    if "role=" not in tag:
        tag = tag[:-1] + ' role="img" aria-label="' + html.escape(alt) + '">'
    return tag + f"<title>{html.escape(alt)}</title><desc>{html.escape(alt)}</desc>" + svg[head_end:]


def _kaleido_images(fig, stem: Path, formats: Sequence[str], width: int, height: int) -> Dict[str, bytes]:
    import kaleido
    out: Dict[str, bytes] = {}
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [{"fig": fig, "path": str(Path(tmp) / f"{stem.name}.{f}"),
                 "opts": {"format": f, "width": width, "height": height, "scale": 2 if f == "png" else 1}}
                for f in formats]
        if _session["open"]:
            errors = kaleido.write_fig_from_object_sync(jobs)
        else:
            errors = kaleido.write_fig_from_object_sync(jobs, kopts=_kaleido_options())
        if errors:
            raise RuntimeError(f"kaleido could not draw {stem.name}: {errors}")
        for f in formats:
            out[f] = (Path(tmp) / f"{stem.name}.{f}").read_bytes()
    return out


def _screenshot(svg_text: str, width: int, height: int) -> bytes:
    """A PNG of an SVG at twice its size, by headless Chromium (nothing fetched: the SVG is self-contained)."""
    with tempfile.TemporaryDirectory() as tmp:
        src, png = Path(tmp) / "view.svg", Path(tmp) / "view.png"
        src.write_text(svg_text, encoding="utf-8")
        cmd = [browser_path(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--hide-scrollbars", "--force-device-scale-factor=2", f"--window-size={width},{height}",
               f"--user-data-dir={Path(tmp) / 'profile'}", f"--screenshot={png}", src.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if not png.is_file():
            raise RuntimeError(f"Chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-800:]}")
        return png.read_bytes()


# ---------------------------------------------------------------- text views as SVG


def _text_svg(blocks: List[Tuple[str, str, List[str]]], alt: str, px: int, mono: bool) -> Tuple[str, int, int]:
    """Columns of text as SVG: blocks = [(title, title colour, lines)] side by side. Returns (svg, w, h)."""
    char_w, line_h, pad = px * 0.6, int(px * 1.35), 10
    widths = [int(max([len(t) for t in lines] + [len(title) * 0.95]) * char_w) + 2 * pad for title, _, lines in blocks]
    height = pad * 2 + line_h * (1 + max(len(lines) for _, _, lines in blocks)) + 8
    width = sum(widths) + 12 * (len(blocks) - 1)
    family = "DejaVu Sans Mono, monospace" if mono else "DejaVu Sans, Arial, sans-serif"
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}">', f'<rect width="{width}" height="{height}" fill="white"/>']
    x = 0
    for (title, colour, lines), w in zip(blocks, widths):
        parts.append(f'<rect x="{x}" y="0" width="{w}" height="{line_h + 8}" fill="{colour}"/>')
        parts.append(f'<text x="{x + pad}" y="{line_h}" font-family="DejaVu Sans, Arial, sans-serif" '
                     f'font-size="{px}" font-weight="600" fill="white">{html.escape(title)}</text>')
        parts.append(f'<rect x="{x}" y="{line_h + 8}" width="{w}" height="{height - line_h - 8}" fill="#f7f7f7" '
                     'stroke="#dddddd"/>')
        for i, line in enumerate(lines):
            y = line_h + 8 + pad + line_h * (i + 1) - int(px * 0.3)
            parts.append(f'<text x="{x + pad}" y="{y}" font-family="{family}" font-size="{px}" fill="#222222" '
                         f'xml:space="preserve">{html.escape(line)}</text>')
        x += w + 12
    parts.append("</svg>")
    return _svg_with_title("".join(parts), alt), width, height


def _table_svg(view, alt: str, px: int) -> Tuple[str, int, int]:
    widths = [max(len(c) for c in col) for col in zip(view.header, *view.rows)]
    line = lambda cells: "   ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return _text_svg([(line(view.header), "#0072B2", [line(r) for r in view.rows])], alt, px, mono=True)


def _listing_svg(view, alt: str, px: int) -> Tuple[str, int, int]:
    from .source import OURS_COLOUR, THEIRS_COLOUR
    if proj.is_on():
        left, right = view.excerpt_text("left").splitlines(), view.excerpt_text("right").splitlines()
    else:
        left, right = view.left.splitlines(), view.right.splitlines()
    return _text_svg([("transformers: " + view.left_title, THEIRS_COLOUR, left),
                      ("mixtral_edu: " + view.right_title, OURS_COLOUR, right)], alt, px, mono=True)


# ---------------------------------------------------------------- the call


def export(view: Any, path: os.PathLike, formats: Sequence[str] = FORMATS, width: Optional[int] = None,
           height: Optional[int] = None) -> Dict[str, Path]:
    """Write `view` as standalone offline files: path + ".html", ".png", ".svg" (those in `formats`).

    Args:
        view: a plotly figure, a live view, ``viz.Table(...)``, ``side_by_side(...)`` or ``callchain_html(...)``.
        path: the files' path without suffix (a suffix given is dropped), e.g. "slides/routing".
        formats: any of "html", "png", "svg".
        width, height: image size in px (default: the figure's height and 1200 wide; projector
            mode: fitted to 1280 x 720).
    Returns:
        {format: the file written}.
    """
    from .callchain import CallChainMap
    from .source import SideBySide
    from .tables import Table
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ValueError(f"unknown export format(s) {bad}: choose from {list(FORMATS)}.")
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix.lstrip(".") in FORMATS else stem
    fig = _figure_of(view)
    if fig is not None and proj.is_on():
        fig = proj.fit_figure(fig)
    alt = _alt_of(view, fig)
    written: Dict[str, Path] = {}
    is_text = isinstance(view, (Table, SideBySide))
    if "html" in formats:
        if is_text:
            page = _page(view._repr_html_(), alt, plotly_js=False)
        elif isinstance(view, CallChainMap):
            page = _page(view.data, alt, plotly_js=False)   # its HTML: links, no script needed
        else:
            page = _page(figure_html(fig), alt, plotly_js=True)
        target = stem.with_suffix(".html")
        _atomic_write(target, page.encode("utf-8"))
        written["html"] = target
    images = [f for f in formats if f in ("png", "svg")]
    if images:
        if is_text:
            px = proj.TEXT_PX if proj.is_on() else 14
            svg, w, h = (_table_svg if isinstance(view, Table) else _listing_svg)(view, alt, px)
            data = {"svg": svg.encode("utf-8")}
            if "png" in images:
                data["png"] = _screenshot(svg, w, h)
        else:
            if fig is None:
                raise TypeError(f"Cannot export a {type(view).__name__}: give a figure, a live view, a table, "
                                "side_by_side or the call-chain map.")
            layout_h = fig.layout.height or 450
            w = width or (proj.FIGURE_WIDTH if proj.is_on() else (fig.layout.width or 1200))
            h = height or int(layout_h)
            data = _kaleido_images(fig, stem, images, int(w), int(h))
            if "svg" in data:
                data["svg"] = _svg_with_title(data["svg"].decode("utf-8"), alt).encode("utf-8")
        for f in images:
            blob = data[f]
            if f == "png":
                blob = _png_with_description(blob, alt)
            target = stem.with_suffix("." + f)
            _atomic_write(target, blob)
            written[f] = target
    return written
