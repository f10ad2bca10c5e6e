"""viz.export: every view, one call, three standalone offline files (HTML, PNG, SVG).

PNG and SVG are drawn in Debian's Chromium (kaleido for figures): the test also proves kaleido
needs no network here (its page would otherwise load MathJax from a CDN; export turns that off).
"""
from __future__ import annotations

import html
import re
import struct

import pytest

from mixtral_edu import viz
from mixtral_edu.viz import projector_mode as pm

import views

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def all_views():
    return {**views.figures(), **views.html_views()}


@pytest.fixture(scope="module")
def session():
    with viz.export_session():
        yield


def _png_text(blob: bytes) -> dict:
    """tEXt chunks of a PNG."""
    out, at = {}, 8
    while at < len(blob):
        size, kind = struct.unpack(">I4s", blob[at:at + 8])
        if kind == b"tEXt":
            key, value = blob[at + 8:at + 8 + size].split(b"\0", 1)
            out[key.decode()] = value.decode("latin-1")
        at += 12 + size
    return out


def test_every_view_exports_to_html_png_svg(all_views, session, tmp_path):
    for name, view in all_views.items():
        with pm.projector(name in ("routing", "side_by_side")):   # both looks are exported
            files = viz.export(view, tmp_path / name)
        assert set(files) == {"html", "png", "svg"}, name
        page = files["html"].read_text(encoding="utf-8")
        assert page.startswith("<!DOCTYPE html>")
        assert not re.search(r"<(script|link)[^>]+(src|href)=", page), f"{name}: the page loads a file"
        assert "Plotly.newPlot" in page or name in ("table", "side_by_side", "callchain_map"), name
        png = files["png"].read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000, name
        width, height = struct.unpack(">II", png[16:24])
        assert width >= 400 and height >= 100, (name, width, height)
        svg = files["svg"].read_text(encoding="utf-8")
        assert svg.lstrip().startswith("<svg") and "<title>" in svg and "http://www.w3.org/2000/svg" in svg, name
        alt = _png_text(png).get("Description")
        assert alt and html.escape(alt) in page and html.escape(alt) in svg, name   # the same text alternative
        assert len(re.findall(r"<text", svg)) >= 3, f"{name}: no text in the SVG"


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        viz.export(views.figures()["mask"], tmp_path / "x", formats=("pdf",))
