"""Projector mode: off by default, switched by one call or a with-block, and every view at projector scale."""
from __future__ import annotations

import re

import pytest

from mixtral_edu import viz
from mixtral_edu.viz import display, projector_mode as pm

import views


@pytest.fixture(autouse=True)
def off_after():
    yield
    pm._state["on"] = False


def test_off_by_default_and_the_with_block_restores():
    assert not pm.is_on()
    with viz.projector():
        assert pm.is_on()
        with viz.projector(False):
            assert not pm.is_on()
        assert pm.is_on()
    assert not pm.is_on()
    try:
        with viz.projector():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert not pm.is_on()                      # restored whatever happens
    handle = viz.projector()                   # a call: on from here
    assert pm.is_on() and "20 px" in repr(handle)
    assert "--jp-content-font-size1: 20px" in handle._repr_html_()   # displayed, it enlarges the page's text
    viz.projector(False)
    assert not pm.is_on()


@pytest.mark.parametrize("name", ["mask", "cache", "routing", "balance", "attention", "sampling"])
def test_every_figure_fits_the_projector(name):
    fig = views.figures()[name]
    before = fig.to_json()
    fitted = pm.fit_figure(fig)
    assert fig.to_json() == before                                 # the original is untouched
    layout = fitted.layout
    assert layout.height <= pm.FIGURE_HEIGHT and (layout.width or 0) <= pm.FIGURE_WIDTH
    assert layout.font.size >= 16 and layout.title.font.size >= 22
    assert all(a.font.size >= 15 for a in layout.annotations)
    for axis in [k for k in layout.to_plotly_json() if k.startswith("yaxis")]:
        lo, hi = layout[axis].domain
        assert 0 <= lo < hi <= 1
    assert pm.fit_figure(fitted).to_json() == fitted.to_json()     # fitted once, not twice
    assert display.alt_text(fitted) == display.alt_text(fig)      # the text alternative survives


def test_show_fits_figures_only_in_projector_mode():
    fig = views.figures()["cache"]
    assert display.mime_bundle(fig)[display.PLOTLY_MIME]["layout"]["height"] == fig.layout.height
    with viz.projector():
        assert display.mime_bundle(fig)[display.PLOTLY_MIME]["layout"]["height"] <= pm.FIGURE_HEIGHT


def test_side_by_side_excerpt():
    sbs = views.html_views()["side_by_side"]
    self_study = sbs._repr_html_()
    assert "mxe-proj" not in self_study and 'class="mxe-ln mxe-out"' in self_study   # all lines, marked
    for side in ("left", "right"):
        text = sbs.excerpt_text(side)
        assert "variance" in text.splitlines()[0] and "return" in text.splitlines()[-1]
    with viz.projector():
        page = sbs._repr_html_()
        assert page.startswith('<div class="mxe-proj">') and ".mxe-proj .mxe-sbs .mxe-out" in page
        assert "def forward" not in repr(sbs)                      # plain text too: the excerpt only
    with pytest.raises(ValueError, match="start marker"):
        viz.side_by_side(display.show, display.show, excerpt=("no such line", "x"))
    lines = viz.side_by_side(display.show, display.show, excerpt=(2, 3))
    assert lines.excerpt_text("left") == "\n".join(viz.source_of(display.show).splitlines()[1:3])


def test_table_and_callchain_at_projector_scale():
    table = views.html_views()["table"]
    assert "&lt;s&gt;" in table._repr_html_() and 'scope="col"' in table._repr_html_()
    with pytest.raises(ValueError, match="one cell per column"):
        viz.table(["a", "b"], [[1]])
    with viz.projector():
        assert "mxe-proj" in table._repr_html_()
        chain = viz.callchain_html(here="moe").data
    assert "mxe-proj" in chain and "mxe-cc-current" in chain
    assert re.search(r"\.mxe-proj \.mxe-cc-what.*display: none", pm.VIEW_CSS, re.S)


def test_every_figure_has_a_one_sentence_text_alternative():
    for name, fig in views.figures().items():
        alt = display.alt_text(fig)
        assert alt.endswith(".") and len(alt) > 40 and not alt.startswith("Figure:"), (name, alt)
        assert f'aria-label="' in display.figure_html(fig)
