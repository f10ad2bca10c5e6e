"""Attention patterns: per layer and query head, the weights over keys, with the mask drawn on top.

    fig = attention_figure(tr, step=0, row=0, tokenizer=tok)   # layer slider
    attention_explorer(model, tokenizer)                      # live: prompt, step, layer

Query heads are laid out in their GQA groups: the heads that read the same kv
head sit side by side under one coloured band. Which kv head a query head reads
is taken from the model's own `repeat_kv`; the weights are the trace's (eager
attention forms them; an sdpa model must be traced with output_attentions=True).
"""
from __future__ import annotations

from typing import List

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..modeling import masks as M
from ..modeling.attention import repeat_kv
from ..i18n import N_, _
from . import palette as pal
from .masks import reasons_for_step
from .runs import (batch_size_of, check_index, check_member, check_trace, config_values, encode_batch, pick_step,
                   sequence_ids, traced_generate)
from .widgets import visibility_slider

X_TITLE, Y_TITLE = N_("key position"), N_("query position")  # shown through _()
ALT = N_("Attention weights at step {step} ({kind}), batch row {row}: for each of {H} query heads, how strongly each of "
       "{T} query positions attends to each of {S} keys, masked cells painted over; a slider picks one of {layers} layers.")


def kv_head_of_query_heads(num_heads: int, num_kv_heads: int) -> List[int]:
    """[kv head read by query head h for h in range(H)], from the model's repeat_kv (GQA)."""
    kv = torch.arange(num_kv_heads, dtype=torch.float32).view(1, num_kv_heads, 1, 1)   # (1, Hkv, 1, 1)
    return repeat_kv(kv, num_heads // num_kv_heads).view(-1).long().tolist()             # (H,)


def attention_figure(trace, step: int = 0, row: int = 0, layer: int = 0, tokenizer=None,
                     sliding_window="config") -> go.Figure:
    """One panel per query head (T queries down, S keys across) for batch row `row` at `step`;
    a slider picks the layer. Hidden cells are painted over in the mask's colours (why hidden)."""
    check_trace(trace, "attention_figure")
    rec = pick_step(trace, step)
    row = check_index("attention_figure", "row", row, batch_size_of(trace), "batch rows")
    config = trace.model.config
    window = config.sliding_window if sliding_window == "config" else sliding_window
    layers = sorted(i for i, r in rec.layers.items() if r.attn_weights is not None)
    if not layers:
        raise ValueError("This trace holds no attention weights: trace a model with attn_implementation='eager', "
                         "or run with output_attentions=True (sdpa then computes them eagerly).")
    check_member("attention_figure", "layer", layer, layers,
                 "Pick one of them; trace(model, layers=...) decides which layers are recorded.")
    H, Hkv = config.num_attention_heads, config.num_key_value_heads
    kv_of = kv_head_of_query_heads(H, Hkv)
    reasons = reasons_for_step(rec, window)[row, 0].numpy()                    # (T, S)
    T, S = reasons.shape
    P = rec.past_length or 0
    ids = sequence_ids(trace, step)
    labels = (pal.token_labels(ids[row].tolist(), tokenizer, max_chars=6) if ids is not None
              else [str(j) for j in range(S)])
    order = sorted(range(H), key=lambda h: (kv_of[h], h))                     # group heads by kv head
    fig = make_subplots(rows=1, cols=H, horizontal_spacing=0.025, shared_yaxes=True,
                        subplot_titles=[_("query head {h}").format(h=h) for h in order])
    fig.update_annotations(font_size=12)   # the panel titles: they must fit a narrow panel side by side
    hidden = np.where(reasons == M.VISIBLE, np.nan, reasons.astype(float))   # only hidden cells drawn
    names = np.vectorize(lambda r: M.REASONS[int(r)])(reasons)
    groups = []
    for l in layers:
        w = rec.layers[l].attn_weights[row].float().numpy()                    # (H, T, S)
        first = len(fig.data)
        for c, h in enumerate(order, start=1):
            fig.add_trace(go.Heatmap(
                z=w[h], x=list(range(S)), y=list(range(P, P + T)), coloraxis="coloraxis", xgap=1, ygap=1,
                visible=(l == layer), name=_("layer {l} head {h}").format(l=l, h=h),
                hovertemplate=(f"layer {l}, q head {h} (kv head {kv_of[h]})<br>query %{{y}} → key %{{x}}: "
                               "weight %{z:.3f}<extra></extra>")), 1, c)
            fig.add_trace(go.Heatmap(
                z=hidden, x=list(range(S)), y=list(range(P, P + T)), coloraxis="coloraxis2", xgap=1, ygap=1,
                customdata=names, visible=(l == layer), name=_("layer {l} head {h} mask").format(l=l, h=h),
                showscale=False,
                hovertemplate="query %{y} → key %{x}: hidden (%{customdata}), weight 0<extra>mask</extra>"), 1, c)
        groups.append(list(range(first, len(fig.data))))
    span = dict(autorangeoptions=dict(include=[-0.5, S - 0.5]), showgrid=False, zeroline=False)
    fig.update_xaxes(tickvals=list(range(S)), ticktext=labels, tickangle=-60, title_text=_(X_TITLE), **span)
    fig.update_yaxes(tickvals=list(range(S)), ticktext=labels, autorange="reversed", **span)
    fig.update_yaxes(title_text=_(Y_TITLE), row=1, col=1)
    shape = tuple(rec.layers[layers[0]].weights_shape)
    title = (_("Attention weights, step {index} ({kind}), batch row {row}: (B, H, T, S) = {shape}")
             .format(index=rec.index, kind=_(rec.kind), row=row, shape=shape)
             + "<br><sup>" + _("{H} query heads share {Hkv} kv heads (GQA, {G} per kv head); each row sums to 1 "
                               "over the keys it may see; painted cells are masked").format(H=H, Hkv=Hkv, G=H // Hkv)
             + "</sup>")
    # legend entries for the mask colours (a colorbar of three flat bands gets cramped)
    always = []
    for r in (M.FUTURE, M.WINDOW, M.PADDING):
        always.append(len(fig.data))
        name = _("masked: {reason}").format(reason=_(M.REASONS[r]))
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol="square", size=13, color=pal.MASK_COLORS[r],
                                             line=dict(color=pal.DARK_GREY, width=1))), 1, 1)  # grey on white
    height = int(min(900, max(620, 300 + 30 * S)))
    margin = dict(t=140, b=190)
    alt = _(ALT).format(step=rec.index, kind=rec.kind, row=row, H=H, T=T, S=S, layers=len(layers))
    fig.update_layout(**pal.base_layout(title, height=height, alt=alt))
    fig.update_layout(
        coloraxis=dict(colorscale=pal.SEQUENTIAL, cmin=0, cmax=1,
                       colorbar=dict(title=dict(text=_("weight")), len=0.7, y=0.6, thickness=14)),
        coloraxis2=dict(colorscale=pal.discrete_colorscale([pal.MASK_COLORS[i] for i in range(4)]), cmin=-0.5,
                        cmax=3.5, showscale=False),
        legend=dict(x=1.02, y=0.05, yanchor="bottom"),
        shapes=_group_bands(fig, order, kv_of, height - margin["t"] - margin["b"]), margin=margin,
        sliders=[visibility_slider([str(l) for l in layers], [g + always for g in groups], len(fig.data),
                                   _("layer: "), active=layers.index(layer),
                                   y=-120 / (height - margin["t"] - margin["b"]))])
    return fig


def _group_bands(fig: go.Figure, order: List[int], kv_of: List[int], plot_height: int) -> List[dict]:
    """A coloured band above each GQA group of panels, labelled with the kv head they share. It sits a fixed
    number of pixels above the panels, clear of their "query head h" titles whatever the figure's height."""
    above = lambda px: 1 + px / plot_height  # noqa: E731  (paper units: 1 is the top of the panels)
    shapes = []
    for kv in sorted(set(kv_of)):
        cols = [c for c, h in enumerate(order, start=1) if kv_of[h] == kv]
        x0 = fig.get_subplot(1, cols[0]).xaxis.domain[0]
        x1 = fig.get_subplot(1, cols[-1]).xaxis.domain[1]
        heads = ", ".join(str(order[c - 1]) for c in cols)
        shapes.append(dict(type="rect", xref="paper", yref="paper", x0=x0, x1=x1, y0=above(30), y1=above(50),
                           fillcolor=pal.EXPERT_COLORS[kv % len(pal.EXPERT_COLORS)], line=dict(width=0),
                           opacity=0.85, label=dict(text=_("kv head {kv}: query heads {heads}").format(kv=kv, heads=heads),
                                                    font=dict(size=11, color="black"))))
    return shapes


# -- live ---------------------------------------------------------------------------------------------

def attention_explorer(model, tokenizer, prompt: str = "the small cat sees", max_new_tokens: int = 3):
    """Live attention view: edit the prompt (re-runs generate), pick the step, layer and batch row.
    Works on sdpa models too: they are run with output_attentions=True, which computes the weights
    eagerly. Returns a LiveView (`.figure` is the figure on screen)."""
    from .widgets import make_live_view, slider, text_box
    L = model.config.num_hidden_layers
    runs = {}

    def run(prompt, new):
        if (prompt, new) not in runs:
            runs.clear()
            ids, mask = encode_batch(tokenizer, [prompt])
            with config_values(model, output_attentions=True):
                runs[(prompt, new)] = traced_generate(model, ids, mask, max_new_tokens=new, eos_token_id=None)[0]
        return runs[(prompt, new)]

    controls = {"prompt": text_box(_("prompt"), prompt),
                "step": slider(_("step (0 = prefill)"), 0, 0, max_new_tokens - 1),
                "layer": slider(_("layer"), 0, 0, L - 1)}

    def render(prompt, step, layer):
        tr = run(prompt, max_new_tokens)
        return attention_figure(tr, step=min(step, len(tr.steps) - 1), layer=layer, tokenizer=tokenizer)

    return make_live_view(controls, render, _("Attention patterns: each prompt edit runs the model again"))
