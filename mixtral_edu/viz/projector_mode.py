"""Projector mode: the same views at a size a room can read from the back.

    viz.projector()              # on from here (a cell ending with it also enlarges the page's text)
    viz.projector(False)         # off again
    with viz.projector():        # on for the views drawn inside the block only
        viz.show(fig)

Off by default, so self-study keeps its look. When on:

* figures shown with :func:`mixtral_edu.viz.show` are refitted (:func:`fit_figure`): larger fonts,
  at most ``FIGURE_HEIGHT`` px tall and ``FIGURE_WIDTH`` px wide, so each fits a 1280 x 720 screen;
* ``side_by_side`` shows only its excerpt (a line range or two marker strings) of both functions;
* ``viz.table`` and the call-chain map (compact, the current box highlighted) use 20 px text.

The look is one stylesheet, :data:`VIEW_CSS`, scoped to the class ``mxe-proj``: a view drawn in
projector mode carries that class and the stylesheet; a slide deck puts the class on its ``<body>``
so the views saved by a self-study run take the same look. :data:`PAGE_CSS` is what the object
returned by ``projector()`` shows when it is displayed: it enlarges JupyterLab's own text and code.
"""
from __future__ import annotations

import copy
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

#: The screen a classroom projector shows (px); every projected view fits inside it.
SCREEN = (1280, 720)
#: Body text, tables and source code in projector mode (px).
TEXT_PX = 20
#: A refitted figure's largest size (px): room for the notebook's margins and a heading above it.
FIGURE_WIDTH, FIGURE_HEIGHT = 1180, 680
#: Source lines a projected side_by_side shows at most per function.
MAX_SOURCE_LINES = 16

_state = {"on": False}

# Scoped to .mxe-proj: a view root drawn in projector mode, or a deck's <body>. `!important`
# beats the inline styles the self-study look is written in.
VIEW_CSS = f"""
.mxe-proj .mxe-table, .mxe-proj.mxe-table {{ font-size: {TEXT_PX}px !important; }}
.mxe-proj .mxe-table th, .mxe-proj .mxe-table td,
.mxe-proj.mxe-table th, .mxe-proj.mxe-table td {{ padding: 4px 14px !important; }}
.mxe-proj .mxe-sbs, .mxe-proj.mxe-sbs {{ max-width: {SCREEN[0] - 40}px; }}
.mxe-proj .mxe-sbs-title {{ font-size: {TEXT_PX}px !important; }}
.mxe-proj .mxe-sbs pre {{ font-size: {TEXT_PX}px !important; line-height: 1.3 !important;
  max-height: none !important; overflow: visible !important; white-space: pre-wrap !important;
  overflow-wrap: anywhere; }}
.mxe-proj .mxe-sbs .mxe-out {{ display: none !important; }}
.mxe-proj .mxe-sbs .mxe-gap {{ display: block !important; }}
.mxe-proj .mxe-callchain, .mxe-proj.mxe-callchain {{ font-size: {TEXT_PX}px !important;
  max-width: {SCREEN[0] - 40}px !important; line-height: 1.25; }}
.mxe-proj .mxe-callchain code {{ font-size: {TEXT_PX}px; }}
.mxe-proj .mxe-cc-box {{ padding: 2px 10px !important; margin: 3px 0 !important; }}
.mxe-proj .mxe-cc-what, .mxe-proj .mxe-cc-fact, .mxe-proj .mxe-cc-down,
.mxe-proj .mxe-cc-extra {{ display: none !important; }}
.mxe-proj .mxe-cc-current > .mxe-cc-what {{ display: inline !important; }}
.mxe-proj .mxe-cc-row {{ margin: 0 !important; }}
.mxe-proj .mxe-plotly-figure {{ max-width: {FIGURE_WIDTH}px; }}
"""

# JupyterLab's own text and code at projector size (its CSS variables), and any table or text
# output of a notebook too (also the small tables a notebook writes with inline styles).
PAGE_CSS = f"""
:root {{
  --jp-content-font-size1: {TEXT_PX}px; --jp-content-font-size2: 1.3em; --jp-content-font-size3: 1.6em;
  --jp-content-font-size4: 1.9em; --jp-content-font-size5: 2.2em;
  --jp-code-font-size: {TEXT_PX}px; --jp-ui-font-size1: 16px;
}}
.jp-RenderedHTMLCommon table, .jp-RenderedHTMLCommon table th, .jp-RenderedHTMLCommon table td
  {{ font-size: {TEXT_PX}px !important; }}
.jp-RenderedText pre, .jp-OutputArea-output pre {{ font-size: {TEXT_PX}px; }}
"""

NOTE = f"Projector mode on: text {TEXT_PX} px, every figure and table fits {SCREEN[0]} x {SCREEN[1]}."


def a11y_script() -> str:
    """The script that names widget sliders by their visible labels (static/mxe-a11y.js; the docs site
    serves the same file). Shown by projector(), it works on the JupyterLab page."""
    from pathlib import Path
    return "<script>" + (Path(__file__).parent / "static" / "mxe-a11y.js").read_text(encoding="utf-8") + "</script>"


def style_tag(css: str = VIEW_CSS) -> str:
    return "<style>" + " ".join(css.split()) + "</style>"


class projector:  # noqa: N801 - used like a function: viz.projector()
    """Switch projector mode on (or off with ``projector(False)``).

    Called, it stays on (the previous state is kept for a later ``with`` exit); as a context manager
    it is on inside the block and the previous state comes back after it, whatever happens.
    Displayed (a cell ending with ``viz.projector()``), it also enlarges JupyterLab's own text.
    """

    def __init__(self, on: bool = True):
        self.previous = _state["on"]
        self.on = bool(on)
        _state["on"] = self.on

    def __enter__(self) -> "projector":
        return self

    def __exit__(self, *exc) -> None:
        _state["on"] = self.previous

    def __repr__(self) -> str:
        return NOTE if self.on else "Projector mode off."

    def _repr_html_(self) -> str:
        if not self.on:
            return '<p class="mxe-live-note">Projector mode off (the page keeps its enlarged text until reloaded).</p>'
        return (style_tag(PAGE_CSS + VIEW_CSS) + a11y_script()
                + f'<p class="mxe-live-note mxe-proj" style="font-size:{TEXT_PX}px">{NOTE}</p>')


def is_on() -> bool:
    """True while projector mode is on."""
    return _state["on"]


def wrap(html_block: str) -> str:
    """A view's HTML as projector mode shows it: marked with the class and carrying the stylesheet."""
    return f'<div class="mxe-proj">{style_tag()}{html_block}</div>'


# ---------------------------------------------------------------- figures

_SUP = re.compile(r"<sup>(.*?)</sup>", re.S)


SLIDER_DROP = 24  # px a slider below the plot moves down (the larger tick labels above it need them)
TITLE_CHARS = 92  # a title line longer than this is wrapped (22 px text in a 1180 px figure)


def _wrap(part: str) -> str:
    """Wrap one line of a title at TITLE_CHARS characters (lines holding markup are left as they are)."""
    if len(part) <= TITLE_CHARS or "<" in part:
        return part
    import textwrap
    return "<br>".join(textwrap.wrap(part, TITLE_CHARS))


def _scaled(size: Optional[float], default: float, factor: float, low: float, high: float) -> float:
    return float(min(high, max(low, (size or default) * factor)))


def _paper_map(domains: List[Tuple[float, float]], area_old: float, area_new: float) -> Callable[[float], float]:
    """Map an old paper y (0..1 = the plot area) to the new one when the plot area shrinks from
    area_old to area_new px: the gaps between stacked subplots (where their axis titles and the next
    subplot's title sit) keep their size in px, the subplots shrink. Outside 0..1 px are kept too."""
    spans: List[List[float]] = []
    for lo, hi in sorted(domains):
        if spans and lo <= spans[-1][1] + 1e-9:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    if not spans:
        spans = [[0.0, 1.0]]
    plots = sum(hi - lo for lo, hi in spans) * area_old
    gaps = area_old - plots
    scale, gap_scale = (area_new - gaps) / plots if plots else 1.0, 1.0
    if scale < 0.35:                      # not enough room: the gaps shrink too
        scale = 0.35
        gap_scale = max(0.0, (area_new - plots * scale) / gaps) if gaps else 1.0
    knots_old, knots_new, at_old, at_new = [0.0], [0.0], 0.0, 0.0
    for lo, hi in spans:
        at_new += (lo - at_old) * area_old * gap_scale
        knots_old.append(lo), knots_new.append(at_new)
        at_new += (hi - lo) * area_old * scale
        knots_old.append(hi), knots_new.append(at_new)
        at_old = hi
    at_new += (1 - at_old) * area_old * gap_scale
    knots_old.append(1.0), knots_new.append(at_new)
    total = at_new or 1.0

    def f(y: float) -> float:
        if y <= 0:
            return y * area_old / area_new
        if y >= 1:
            return 1 + (y - 1) * area_old / area_new
        for i in range(1, len(knots_old)):
            if y <= knots_old[i]:
                a, b = knots_old[i - 1], knots_old[i]
                t = 0.0 if b == a else (y - a) / (b - a)
                return (knots_new[i - 1] + t * (knots_new[i] - knots_new[i - 1])) / total
        return 1.0
    return f


def _colorbars(d: Dict[str, Any]) -> List[Dict[str, Any]]:
    layout = d["layout"]
    bars = [v["colorbar"] for k, v in layout.items() if k.startswith("coloraxis") and isinstance(v, dict)
            and isinstance(v.get("colorbar"), dict)]
    bars += [t["colorbar"] for t in d.get("data") or [] if isinstance(t.get("colorbar"), dict)]
    bars += [t["marker"]["colorbar"] for t in d.get("data") or []
             if isinstance(t.get("marker"), dict) and isinstance(t["marker"].get("colorbar"), dict)]
    return bars


def fit_figure(fig: Any, width: int = FIGURE_WIDTH, height: int = FIGURE_HEIGHT):
    """A copy of a plotly figure at projector scale: fonts x4/3 (at least 15 px, titles 22 px), at
    most `width` x `height` px. Stacked subplots keep the px between them (their axis titles and the
    next subplot's title need them); sliders, colorbars, legends keep their place. The original is not
    changed; a figure fitted already is returned as it is."""
    import plotly.graph_objects as go

    d = fig.to_dict() if hasattr(fig, "to_dict") else copy.deepcopy(dict(fig))
    layout = d.setdefault("layout", {})
    if isinstance(layout.get("meta"), dict) and layout["meta"].get("projector"):
        return go.Figure(d, skip_invalid=False)
    old_h = layout.get("height") or 450
    margin = dict(layout.get("margin") or {})
    t0, b0 = margin.get("t", 100), margin.get("b", 80)
    base = (layout.get("font") or {}).get("size") or 12
    factor = 4 / 3
    layout["font"] = dict(layout.get("font") or {}, size=_scaled(base, 12, factor, 16, 20))
    def projected(text: str) -> str:
        # a <sup> subtitle would be drawn at 70 %: keep it a full line at the body size; wrap long lines
        text = _SUP.sub(lambda m: f'<span style="font-size:{layout["font"]["size"]:.0f}px">{m.group(1)}</span>', text)
        return "<br>".join(_wrap(part) for part in text.split("<br>"))

    title = layout.get("title")
    title_text = ""
    if isinstance(title, dict) and title.get("text"):
        title_text = projected(title["text"])
        # anchored to the figure's top: the top margin below it stays free for a legend or labels
        layout["title"] = dict(title, text=title_text, font=dict(title.get("font") or {}, size=22),
                               yref="container", y=1, yanchor="top", pad=dict(t=12 + 16 * title_text.count("<br>")))
    for note in layout.get("annotations") or []:
        note["font"] = dict(note.get("font") or {}, size=_scaled((note.get("font") or {}).get("size"), base,
                                                                 1.2, 15, 19))
    for shape in layout.get("shapes") or []:
        label = shape.get("label")
        if isinstance(label, dict) and label.get("text"):
            label["font"] = dict(label.get("font") or {}, size=_scaled((label.get("font") or {}).get("size"), base,
                                                                       factor, 15, 19))
    new_t = max(int(t0 * 1.15) + 14 * (1 + title_text.count("<br>")), 40 + 34 * (1 + title_text.count("<br>")))
    new_b = int(b0 * 1.15) + (SLIDER_DROP if layout.get("sliders") else 0)
    new_h = int(min(height, max(420, old_h)))
    area_old = max(old_h - t0 - b0, 1)
    area_new = max(new_h - new_t - new_b, 200)
    if new_h - new_t - new_b < 200:  # the margins leave too little: the bottom one gives way
        new_b = max(40, new_h - new_t - 200)
        area_new = new_h - new_t - new_b
    domains = [tuple(v["domain"]) for k, v in layout.items() if k.startswith("yaxis") and isinstance(v, dict)
               and isinstance(v.get("domain"), (list, tuple)) and len(v["domain"]) == 2]
    f = _paper_map(domains, area_old, area_new)
    for k, v in layout.items():
        if k.startswith("yaxis") and isinstance(v, dict) and isinstance(v.get("domain"), (list, tuple)):
            v["domain"] = [f(v["domain"][0]), f(v["domain"][1])]
    for note in layout.get("annotations") or []:
        if note.get("yref") == "paper" and isinstance(note.get("y"), (int, float)):
            note["y"] = f(note["y"])
    for shape in layout.get("shapes") or []:
        if shape.get("yref") == "paper":
            for key in ("y0", "y1"):
                if isinstance(shape.get(key), (int, float)):
                    shape[key] = f(shape[key])
    for bar in _colorbars(d):
        y, length = bar.get("y", 0.5), bar.get("len", 1)
        if bar.get("lenmode", "fraction") == "fraction" and bar.get("yanchor", "middle") == "middle":
            bar["y"] = f(y)
            bar["len"] = max(0.1, f(min(1, y + length / 2)) - f(max(0, y - length / 2)))
    for slider in layout.get("sliders") or []:   # the titles a slider step puts up get the same treatment
        for step in slider.get("steps") or []:
            for arg in step.get("args") or []:
                if isinstance(arg, dict) and isinstance(arg.get("title.text"), str):
                    arg["title.text"] = projected(arg["title.text"])
    for key in ("sliders", "updatemenus"):
        for item in layout.get(key) or []:
            if isinstance(item.get("y"), (int, float)):
                # below the plot, larger tick labels need more room: a slider moves further down
                item["y"] = f(item["y"]) - (SLIDER_DROP / area_new if item["y"] < 0 else 0)
            item["font"] = dict(item.get("font") or {}, size=16)
            if key == "sliders":
                current = dict(item.get("currentvalue") or {})
                current["font"] = dict(current.get("font") or {}, size=18)
                item["currentvalue"] = current
    legend = layout.get("legend")
    if isinstance(legend, dict):
        if isinstance(legend.get("y"), (int, float)):
            legend["y"] = f(legend["y"])
        if (legend.get("font") or {}).get("size"):
            legend["font"]["size"] = _scaled(legend["font"]["size"], base, factor, 16, 20)
    layout["hoverlabel"] = dict(layout.get("hoverlabel") or {}, font=dict(size=16))
    layout["height"] = new_h
    if layout.get("width"):
        layout["width"] = min(int(layout["width"]), width)
    layout["margin"] = dict(margin, t=new_t, b=new_b)
    for trace in d.get("data") or []:
        font = trace.get("textfont")
        if isinstance(font, dict) and font.get("size"):
            font["size"] = _scaled(font["size"], base, factor, 14, 20)
    meta = dict(layout.get("meta") or {}) if isinstance(layout.get("meta"), dict) else {}
    meta["projector"] = True
    layout["meta"] = meta
    return go.Figure(d, skip_invalid=False)


def layout_meta(fig: Any) -> Dict[str, Any]:
    """The figure's layout.meta as a dict (empty if none)."""
    layout = fig.get("layout", {}) if isinstance(fig, dict) else fig.layout.to_plotly_json()
    meta = layout.get("meta")
    return dict(meta) if isinstance(meta, dict) else {}
