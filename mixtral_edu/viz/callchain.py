"""Call-chain map: from generate to lm_head and back, each box linked to the notebook that teaches it.

    fig = callchain_figure()                      # plotly boxes; links end in .ipynb (JupyterLab)
    fig = callchain_figure(link_suffix=".html")   # the same for the docs site
    fig = callchain_figure(trace=tr, step=1)      # boxes also show what that step really did
    callchain_html(...)                           # the same map as a plain HTML block

Links are relative (e.g. "01_generation_loop.ipynb"), so they work from any
notebook in notebooks/: JupyterLab opens the notebook, the docs site the page.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Dict, List, Optional

import plotly.graph_objects as go

from ..i18n import N_, _
from . import palette as pal

NOTEBOOKS = {
    "orientation": "00_orientation", "generate": "01_generation_loop", "prepare": "02_prepare_inputs",
    "causal_lm": "03_causal_lm_forward", "model": "04_model_forward", "layer": "05_decoder_layer",
    "attention": "06_attention", "moe": "07_moe", "lm_head": "08_lm_head_sampling", "training": "09_training",
    "full_size": "10_full_size",
}


@dataclass
class Box:
    """One step of the chain: key (also its NOTEBOOKS entry), label, what it does; x0, y0, x1, y1 in
    0..100 units (y down); group: a box that holds others (its label sits on its top edge)."""
    key: str
    label: str
    what: str
    x0: float
    y0: float
    x1: float
    y1: float
    group: bool = False
    chapter: Optional[str] = None  # NOTEBOOKS key when it differs from `key`


BOXES: List[Box] = [
    Box("generate", "generate", N_("the loop: prefill once, then one token per step"), 8, 3, 86, 10),
    Box("prepare", "prepare_inputs_for_generation", N_("feeds only the uncached ids; position_ids from the mask"),
        8, 14, 86, 21),
    Box("causal_lm", "MixtralForCausalLM.forward", N_("backbone, then lm_head"), 4, 25, 90, 88, group=True),
    Box("model", "MixtralModel.forward", N_("embeddings, position ids, 4D mask, the layer loop"), 8, 31, 86, 73,
        group=True),
    Box("embed", "embed_tokens · position_ids · 4D mask", N_("(B, T) ids → (B, T, C); mask (B, 1, T, S)"),
        12, 37, 82, 43, chapter="model"),
    Box("layer", "MixtralDecoderLayer × L", N_("two residual sub-blocks"), 12, 47, 82, 64, group=True),
    Box("attention", "self_attn", N_("RoPE, grouped-query attention, KV cache"), 15, 54, 47, 62.5),
    Box("moe", "block_sparse_moe", N_("router → top-k of E experts"), 51, 54, 79, 62.5),
    Box("norm", "norm", N_("final RMSNorm"), 12, 67, 82, 71, chapter="model"),
    Box("lm_head", "lm_head", "(B, T, C) → logits (B, T, V)", 8, 77, 86, 84),
    Box("outputs", "logits, past_key_values", N_("what forward hands back to the loop"), 8, 92, 86, 98,
        chapter="causal_lm"),
    Box("next", N_("next token"), N_("argmax or a draw after temperature, top-k, top-p; appended"), 8, 102, 86, 109,
        chapter="lm_head"),
]
# (from, to) boxes joined by an arrow down the middle
ARROWS = [("generate", "prepare"), ("prepare", "causal_lm"), ("embed", "layer"), ("layer", "norm"),
          ("model", "lm_head"), ("causal_lm", "outputs"), ("outputs", "next")]


def link(key: str, suffix: str = ".ipynb") -> str:
    """Relative link to the notebook (suffix ".ipynb") or docs page (".html") of a chain step."""
    return NOTEBOOKS[key] + suffix


def step_facts(trace, step: int = 0, row: int = 0) -> Dict[str, str]:
    """{box key: one line of what this step did}, read from the trace."""
    rec = trace.steps[step]
    facts: Dict[str, str] = {"generate": _("step {index}: {kind}").format(index=rec.index, kind=_(rec.kind))}
    if rec.prepare:
        before, after = rec.prepare.get("input_ids_before"), rec.prepare.get("input_ids_after")
        facts["prepare"] = f"input_ids {tuple(before)} → {tuple(after) if after else None}"
    if rec.input_ids is not None and rec.mask_4d is not None:
        facts["embed"] = _("fed {ids}, mask {mask}, P = {P}").format(
            ids=tuple(rec.input_ids.shape), mask=tuple(rec.mask_4d.shape), P=rec.past_length)
    elif rec.input_ids is not None:
        facts["embed"] = _("fed {ids}, no 4D mask needed, P = {P}").format(ids=tuple(rec.input_ids.shape),
                                                                        P=rec.past_length)
    if rec.layers:
        first = rec.layers[min(rec.layers)]
        facts["layer"] = _("{L} layers; cache {before} → {after} keys each").format(
            L=len(rec.layers), before=first.cache_before, after=first.cache_after)
        if first.topk_indices is not None:
            facts["moe"] = _("layer {l}, token 0 → experts {experts}").format(
                l=first.layer, experts=first.topk_indices[0].tolist())
        if first.q_shape:
            facts["attention"] = f"q {first.q_shape}, k {first.k_shape}"
    if rec.logits_last is not None:
        facts["lm_head"] = _("last-position logits {shape}").format(shape=tuple(rec.logits_last.shape))
    if rec.next_tokens is not None:
        facts["next"] = _("appended {ids}").format(ids=rec.next_tokens.tolist())
    return facts


CHAIN_ALT = N_("The call chain of one generation step as nested boxes: generate, prepare_inputs_for_generation, "
             "MixtralForCausalLM.forward holding MixtralModel.forward (embeddings, the decoder layers with "
             "self_attn then block_sparse_moe, the final norm) and lm_head, then the logits and cache go back to "
             "the loop, which picks the next token.")


def callchain_figure(link_suffix: str = ".ipynb", trace=None, step: int = 0, here: Optional[str] = None) -> go.Figure:
    """The chain as nested boxes; each label is a link to its notebook (`link_suffix`: ".ipynb" in
    JupyterLab, ".html" on the docs site). With a trace, each box also shows what `step` did;
    here: a chapter key (see NOTEBOOKS) whose boxes are drawn highlighted."""
    if here is not None and here not in NOTEBOOKS:
        raise ValueError(f"here={here!r} is not a chapter; use one of {sorted(NOTEBOOKS)}.")
    facts = step_facts(trace, step) if trace is not None else {}
    fig = go.Figure()
    shapes, notes = [], []
    for b in BOXES:
        href = link(b.chapter or b.key, link_suffix)
        current = here is not None and (b.chapter or b.key) == here
        fill = "#fff4dc" if current else ("rgba(0,0,0,0)" if b.group else "white")
        color = pal.OKABE_ITO["orange"] if current else (pal.OKABE_ITO["blue"] if not b.group else pal.DARK_GREY)
        shapes.append(dict(type="rect", x0=b.x0, x1=b.x1, y0=b.y0, y1=b.y1, xref="x", yref="y",
                           line=dict(color=color, width=3.5 if current else (1.5 if b.group else 2)), fillcolor=fill,
                           layer="below"))
        narrow = b.x1 - b.x0 < 40  # label and description on two lines
        text = (f'<a href="{html.escape(href)}" target="_self"><b>{html.escape(_(b.label))}</b></a>'
                + ("<br>" if narrow else "  ") + f'<span style="color:{pal.DARK_GREY}">{html.escape(_(b.what))}</span>')
        if b.group:
            y = b.y0 + 2.2
        elif narrow:
            y = b.y0 + 3.0   # two lines of label + description
        else:
            y = (b.y0 + b.y1) / 2 - (1.2 if b.key in facts else 0)
        notes.append(dict(x=b.x0 + 1.5, y=y, xref="x", yref="y", text=text, showarrow=False, xanchor="left",
                          yanchor="middle", font=dict(size=12), align="left"))
        if b.key in facts:
            notes.append(dict(x=b.x0 + 1.5, y=(y + (3.6 if narrow else 2.6)) if not b.group else b.y0 + 4.6,
                              xref="x", yref="y",
                              text=html.escape(facts[b.key]), showarrow=False, xanchor="left", yanchor="middle",
                              font=dict(size=11, color=pal.TEXT_VERMILLION, family="DejaVu Sans Mono")))
    # arrows down the chain, the layer's attention → moe, and the loop back to generate
    by_key = {b.key: b for b in BOXES}
    for a, b in ARROWS:
        notes.append(dict(x=47, y=by_key[b].y0, ax=47, ay=by_key[a].y1, xref="x", yref="y", axref="x", ayref="y",
                          text="", showarrow=True, arrowhead=2, arrowwidth=1.5, arrowcolor=pal.DARK_GREY))
    att, moe = by_key["attention"], by_key["moe"]
    mid = (att.y0 + att.y1) / 2
    notes.append(dict(x=moe.x0, y=mid, ax=att.x1, ay=mid, xref="x", yref="y", axref="x", ayref="y", text="",
                      showarrow=True, arrowhead=2, arrowwidth=1.5, arrowcolor=pal.DARK_GREY))
    nxt, gen = by_key["next"], by_key["generate"]
    y_next, y_gen = (nxt.y0 + nxt.y1) / 2, (gen.y0 + gen.y1) / 2
    shapes.append(dict(type="path", path=f"M {nxt.x1},{y_next} L 95,{y_next} L 95,{y_gen} L {gen.x1 + 1},{y_gen}",
                       xref="x", yref="y", line=dict(color=pal.OKABE_ITO["vermillion"], width=2, dash="dot")))
    notes.append(dict(x=96.5, y=(y_next + y_gen) / 2, xref="x", yref="y", text=_("loop: next step"), textangle=90,
                      showarrow=False, font=dict(size=11, color=pal.TEXT_VERMILLION)))
    notes.append(dict(x=gen.x1 + 0.5, y=y_gen, ax=95, ay=y_gen, xref="x", yref="y", axref="x", ayref="y",
                      text="", showarrow=True, arrowhead=2, arrowcolor=pal.OKABE_ITO["vermillion"]))
    # the chapters outside the chain
    for x, key, text in ((4, "orientation", _("start here: 00_orientation")),
                         (34, "training", _("loss + router aux loss: 09_training")),
                         (68, "full_size", _("the real 8x7B: 10_full_size"))):
        notes.append(dict(x=x, y=113.5, xref="x", yref="y", xanchor="left", showarrow=False, font=dict(size=12),
                          text=(f'<a href="{html.escape(link(key, link_suffix))}" target="_self">'
                                f'{html.escape(text)}</a>')))
    fig.update_layout(**pal.base_layout(
        _("The call chain of one generation step (click a name to open its notebook)")
        + ("<br><sup>" + _("in red: what step {step} of the trace did").format(step=step) + "</sup>" if facts else ""),
        height=860,
        alt=_(CHAIN_ALT) + (" " + _("The {here} box is highlighted.").format(here=here) if here else "")))
    fig.update_layout(shapes=shapes, annotations=notes, margin=dict(l=20, r=20, t=80, b=20),
                      xaxis=dict(range=[0, 100], visible=False, fixedrange=True),
                      yaxis=dict(range=[116, 0], visible=False, fixedrange=True), hovermode=False)
    return fig


class CallChainMap:
    """The call-chain map as HTML (what :func:`callchain_html` returns): displayed in a notebook,
    exported by :func:`mixtral_edu.viz.export`. ``data`` is the HTML text; ``figure()`` the same
    map as a plotly figure (for PNG and SVG)."""

    def __init__(self, data: str, link_suffix: str, trace, step: int, here: Optional[str]):
        self.data, self.link_suffix, self.trace, self.step, self.here = data, link_suffix, trace, step, here

    def _repr_html_(self) -> str:
        return self.data

    def __repr__(self) -> str:
        where = f", you are here: {self.here}" if self.here else ""
        return f"<call-chain map: generate → ... → lm_head → next token{where}>"

    @property
    def alt(self) -> str:
        return CHAIN_ALT + (f" The {self.here} box is highlighted." if self.here else "")

    def figure(self) -> go.Figure:
        return callchain_figure(self.link_suffix, trace=self.trace, step=self.step, here=self.here)


def callchain_html(link_suffix: str = ".ipynb", trace=None, step: int = 0, here: Optional[str] = None) -> CallChainMap:
    """The same map as an HTML block: nested boxes with links, inline styles only, so it survives
    notebook sanitisers and needs no script. here: a chapter key (see NOTEBOOKS, e.g. "moe") whose
    boxes are highlighted and marked "you are here". In projector mode the map is compact: one line
    per box, only the current box keeps its description."""
    from . import projector_mode as proj
    if here is not None and here not in NOTEBOOKS:
        raise ValueError(f"here={here!r} is not a chapter; use one of {sorted(NOTEBOOKS)}.")
    facts = step_facts(trace, step) if trace is not None else {}
    by_key = {b.key: b for b in BOXES}

    def box(key: str, inner: str = "") -> str:
        b = by_key[key]
        href = html.escape(link(b.chapter or b.key, link_suffix))
        fact = (f'<div class="mxe-cc-fact" style="color:{pal.TEXT_VERMILLION};font-family:monospace;font-size:11px">'
                f'{html.escape(facts[key])}</div>' if key in facts else "")
        border = f"1px dashed {pal.DARK_GREY}" if b.group else f"2px solid {pal.OKABE_ITO['blue']}"
        current = here is not None and (b.chapter or b.key) == here
        if current:  # this chapter's box: a thick orange frame, a pale fill and a tag a screen reader also reads
            border = f"3px solid {pal.OKABE_ITO['orange']}"
        background = "#fff4dc" if current else "white"
        tag = (f' <b class="mxe-here" style="color:{pal.TEXT_VERMILLION}">◀ {_("you are here")}</b>'
               if current and b.key == here else "")
        classes = "mxe-cc-box" + (" mxe-cc-current" if current else "")
        return (f'<div class="{classes}" style="border:{border};border-radius:6px;padding:6px 10px;margin:6px 0;'
                f'background:{background}">'
                f'<a href="{href}"><b><code>{html.escape(_(b.label))}</code></b></a>{tag} '
                f'<span class="mxe-cc-what" style="color:{pal.DARK_GREY}">{html.escape(_(b.what))}</span>{fact}{inner}</div>')

    down = f'<div class="mxe-cc-down" aria-hidden="true" style="text-align:center;color:{pal.DARK_GREY}">↓</div>'
    layer = box("layer", '<div class="mxe-cc-row" style="display:flex;gap:8px;align-items:center">' + box("attention")
                + '<span aria-hidden="true">→</span>' + box("moe") + "</div>")
    model = box("model", box("embed") + down + layer + down + box("norm"))
    chain = (box("generate") + down + box("prepare") + down + box("causal_lm", model + down + box("lm_head"))
             + down + box("outputs") + down + box("next")
             + f'<div style="color:{pal.TEXT_VERMILLION}">↺ {_("back to generate for the next token")}</div>')
    extra = " · ".join(f'<a href="{html.escape(link(k, link_suffix))}">{t}</a>' for k, t in (
        ("orientation", _("start here")), ("training", _("training: loss + aux loss")),
        ("full_size", _("the real 8x7B"))))
    block = (f'<nav class="mxe-callchain" aria-label="{html.escape(_("Call chain of one generation step"))}" '
             f'style="font-size:13px;max-width:820px">{chain}'
             f'<div class="mxe-cc-extra" style="margin-top:6px">{extra}</div></nav>')
    if proj.is_on():
        block = proj.wrap(block)
    # arrows and dots as character references: right on a page of any declared encoding
    return CallChainMap(block.encode("ascii", "xmlcharrefreplace").decode("ascii"), link_suffix, trace, step, here)
