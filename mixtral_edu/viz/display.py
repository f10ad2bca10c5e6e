"""Show plotly figures so they work everywhere a notebook is read.

A plain ``fig.show()`` sends plotly's own mime type
(``application/vnd.plotly.v1+json``). JupyterLab draws it with its plotly
extension, but a static renderer such as the docs site (myst-nb) has no
renderer for it and drops the output. :func:`show` sends one mime bundle with
two representations of the same figure:

* ``application/vnd.plotly.v1+json``: the figure as JSON, drawn natively by
  JupyterLab (and by any viewer that knows plotly);
* ``text/html``: a ``<div>`` plus a small inline script that calls
  ``Plotly.newPlot`` with the global ``Plotly`` object. The docs site loads
  that object from its own ``_static`` folder, so the figure keeps its
  sliders, animation frames, hover and zoom on the page. Where no global
  ``Plotly`` exists (e.g. a plain notebook viewer) the script loads nothing from
  the web: it shows a short note instead.

:func:`show_static_twin` is for figures that stand in for a widget-backed live
view on a page read without a kernel: it shows the figure the same way, below a
visible note saying where the live version runs. It draws only when the notebook
is executed to make such a page (the environment variable MIXTRAL_EDU_STATIC_PAGE=1,
which docs/conf.py sets for the kernels myst-nb starts); in JupyterLab the live
view above it is the figure, and a second, static copy would only repeat it.
"""
from __future__ import annotations

import html
import json
import os
import re
import uuid
from typing import Any, Dict, Optional

from ..i18n import N_, _

PLOTLY_MIME = "application/vnd.plotly.v1+json"

#: Shown beside a static twin of a live (widget-backed) view.
LIVE_NOTE = N_("Live version runs in JupyterLab (bash scripts/lab.sh)")

#: Set to "1" while a notebook is executed for a page without a kernel (the docs site): static twins draw.
STATIC_PAGE_ENV = "MIXTRAL_EDU_STATIC_PAGE"

#: Shown in place of a figure when the page has no global ``Plotly``.
NO_PLOTLY_NOTE = N_("Interactive plotly figure: open this notebook in JupyterLab "
                    "(bash scripts/lab.sh) or on the docs site to see it.")

# The inline script: draws the figure if a global Plotly exists (now, or once
# the page has finished loading its deferred scripts), otherwise reveals the
# note. It never fetches anything.
_SCRIPT = """(function () {
  var gd = document.getElementById(%(div_id)s);
  var fig = %(fig)s;
  var config = %(config)s;
  function draw() {
    if (!gd || gd.getAttribute("data-mxe-drawn")) { return; }
    if (typeof window.Plotly === "undefined") {
      var note = document.getElementById(%(note_id)s);
      if (note) { note.hidden = false; }
      return;
    }
    gd.setAttribute("data-mxe-drawn", "1");
    window.Plotly.newPlot(gd, fig.data || [], fig.layout || {}, config).then(function () {
      if (fig.frames && fig.frames.length) { return window.Plotly.addFrames(gd, fig.frames); }
    });
  }
  if (typeof window.Plotly !== "undefined" || document.readyState !== "loading") { draw(); }
  else { document.addEventListener("DOMContentLoaded", draw); }
})();"""


def _figure_dict(fig: Any) -> Dict[str, Any]:
    """The figure as plain JSON-ready data (numpy arrays encoded the way plotly encodes them)."""
    import plotly.io as pio

    if isinstance(fig, dict):
        import plotly.graph_objects as go

        fig = go.Figure(fig)
    return json.loads(pio.to_json(fig, validate=False))


def _json_for_script(obj: Any) -> str:
    """JSON that is safe inside an inline ``<script>`` element."""
    text = json.dumps(obj, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def alt_text(fig: Any) -> str:
    """The figure's text alternative: one sentence saying what it shows.

    Every view of this package writes it into ``layout.meta["alt"]``; for any other figure it is
    made from the title (tags removed).
    """
    fig_dict = fig if isinstance(fig, dict) else None
    layout = (fig_dict.get("layout") if fig_dict is not None else fig.layout.to_plotly_json()) or {}
    meta = layout.get("meta")
    if isinstance(meta, dict) and meta.get("alt"):
        return str(meta["alt"])
    title = layout.get("title") or {}
    text = title.get("text") if isinstance(title, dict) else str(title)
    text = re.sub(r"<br\s*/?>", " ", text or "")
    text = html.unescape(re.sub(r"<[^>]+>", "", text)).strip()
    return f"Figure: {text}." if text else "Figure without a title."


def figure_html(fig: Any, div_id: Optional[str] = None, config: Optional[Dict[str, Any]] = None) -> str:
    """The ``text/html`` representation used by :func:`show` (a div, a hidden note, an inline script).

    The figure's text alternative (:func:`alt_text`) is its accessible name.

    Args:
        fig: a ``plotly.graph_objects.Figure`` (or a figure dict).
        div_id: id of the figure's ``<div>``; a fresh unique id if not given.
        config: plotly config; preset: responsive, no plotly logo, no "share to cloud" button.
    """
    fig_dict = _figure_dict(fig)
    div_id = div_id or "mxe-fig-" + uuid.uuid4().hex[:12]
    note_id = div_id + "-note"
    # No button that talks to a server: the page stays offline.
    cfg = {"responsive": True, "displaylogo": False, "showSendToCloud": False, "showLink": False}
    cfg.update(config or {})
    height = (fig_dict.get("layout") or {}).get("height") or 450
    script = _SCRIPT % {
        "div_id": json.dumps(div_id),
        "note_id": json.dumps(note_id),
        "fig": _json_for_script(fig_dict),
        "config": _json_for_script(cfg),
    }
    return (
        f'<div class="mxe-plotly-figure" role="figure" aria-label="{html.escape(alt_text(fig_dict))}">'
        f'<div id="{div_id}" class="mxe-plotly" style="width:100%;min-height:{int(height)}px;"></div>'
        f'<p id="{note_id}" class="mxe-plotly-note" hidden>{html.escape(_(NO_PLOTLY_NOTE))}</p>'
        f'<script type="text/javascript">{script}</script>'
        f"</div>"
    )


def mime_bundle(fig: Any, config: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The mime bundle :func:`show` displays: plotly JSON, html and a plain-text fallback
    (the figure's text alternative). In projector mode the figure is refitted first."""
    from . import projector_mode as projector

    if projector.is_on():
        fig = projector.fit_figure(fig)
    fig_dict = _figure_dict(fig)
    plain = f"<plotly figure: {alt_text(fig_dict)}>"
    plotly_json = {"data": fig_dict.get("data", []), "layout": fig_dict.get("layout", {})}
    if fig_dict.get("frames"):
        plotly_json["frames"] = fig_dict["frames"]
    if config:
        plotly_json["config"] = config
    return {
        PLOTLY_MIME: plotly_json,
        "text/html": figure_html(fig_dict, config=config),
        "text/plain": plain,
    }


def show(fig: Any, config: Optional[Dict[str, Any]] = None) -> None:
    """Display a plotly figure in a notebook so that JupyterLab and the docs site both draw it.

    Args:
        fig: a ``plotly.graph_objects.Figure`` (or a figure dict).
        config: optional plotly config (e.g. ``{"scrollZoom": True}``).
    """
    from IPython.display import display

    display(mime_bundle(fig, config=config), raw=True)


def note_bundle(text: str) -> Dict[str, str]:
    """A short visible note as a mime bundle (html for pages, markdown and plain text elsewhere)."""
    return {
        "text/html": f'<p class="mxe-live-note">{html.escape(text)}</p>',
        "text/markdown": f"*{text}*",
        "text/plain": text,
    }


def show_static_twin(fig: Any, note: Optional[str] = None, config: Optional[Dict[str, Any]] = None) -> None:
    """Display the static plotly twin of a live (widget-backed) view, with a visible note, on a page made
    without a kernel (``MIXTRAL_EDU_STATIC_PAGE=1``); anywhere else (JupyterLab) it shows nothing, since the
    live view is on screen already.

    The note always says ``"Live version runs in JupyterLab (bash scripts/lab.sh)"``;
    ``note`` (if given) is put in front of it, e.g. what the live version adds.

    Args:
        fig: the plotly figure that stands in for the live view.
        note: extra text shown before the standard sentence.
        config: optional plotly config.
    """
    from IPython.display import display

    if os.environ.get(STATIC_PAGE_ENV) != "1":
        return

    text = _(LIVE_NOTE) + "."
    if note:
        text = note.rstrip() + (" " if note.rstrip().endswith((".", "!", "?", ":")) else ". ") + text
    display(note_bundle(text), raw=True)
    show(fig, config=config)


