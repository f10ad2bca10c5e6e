"""Expert routing heatmaps: which experts each token was sent to, in every layer.

    fig = routing_figure(tr, row=0, tokenizer=tok)   # top: tokens x (layer, choice); bottom: router probs
    routing_explorer(model, tokenizer)               # live: prompt, new tokens, layer, switch an expert off

Everything drawn is read from the trace's LayerRecords (router_probs,
topk_indices, topk_weights): the router's own softmax and top-k, never redone here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..i18n import N_, _
from . import palette as pal
from .runs import batch_size_of, check_index, check_member, check_trace, encode_batch, traced_generate
from .widgets import visibility_slider

# The subscript is the token's column in the batch, not its position id: with left padding the two differ
# (generate numbers real tokens from 0; a plain forward without position_ids numbers columns).
X_TITLE = N_("token (subscript: its column in the batch)")


ALT = N_("Expert routing of batch row {row}: for each of {N} tokens, the {K} experts out of {E} that each of {L} layers "
       "chose, and one layer's router probabilities with the chosen experts outlined.")


@dataclass
class Routing:
    """The routing of one batch row over a traced run, tokens in sequence order.

    ids: (N,) token ids; positions: (N,) sequence columns; steps: (N,) the step that fed
    each token; per layer l: indices[l] (N, K), weights[l] (N, K), probs[l] (N, E).
    """
    ids: List[int]
    positions: List[int]
    steps: List[int]
    indices: dict
    weights: dict
    probs: dict
    num_experts: int
    top_k: int


def routing_of(trace, row: int = 0, skip_padding: bool = True) -> Routing:
    """Collect one batch row's routing over every step of a trace (prefill tokens, then each decode token).

    A step's records are flattened as n = b * T + t (the MoE block's (N, E) layout).
    skip_padding: leave out pad tokens (attention_mask == 0); the model routes them too.
    """
    config = trace.model.config
    ids, positions, steps = [], [], []
    idx, wts, prb = {}, {}, {}
    for rec in trace.steps:
        if rec.input_ids is None or not rec.layers:
            continue
        T = rec.input_ids.shape[1]
        P = rec.past_length or 0
        keep = list(range(T))
        if skip_padding and rec.attention_mask is not None:
            keep = [t for t in keep if int(rec.attention_mask[row, P + t]) == 1]
        n = [row * T + t for t in keep]
        ids += rec.input_ids[row, keep].tolist()
        positions += [P + t for t in keep]
        steps += [rec.index] * len(keep)
        for layer, lr in sorted(rec.layers.items()):
            if lr.topk_indices is None:
                raise ValueError(f"layer {layer} of step {rec.index} has no routing record.")
            idx.setdefault(layer, []).append(lr.topk_indices[n])
            wts.setdefault(layer, []).append(lr.topk_weights[n].float())
            prb.setdefault(layer, []).append(lr.router_probs[n].float())
    cat = lambda d: {k: torch.cat(v) for k, v in d.items()}  # noqa: E731
    return Routing(ids, positions, steps, cat(idx), cat(wts), cat(prb), config.num_local_experts,
                   config.num_experts_per_tok)


def routing_figure(trace, row: int = 0, tokenizer=None, layer: int = 0, skip_padding: bool = True,
                   max_chars: int = 7) -> go.Figure:
    """Top: every token (across) x every layer's K choices (down), coloured by expert, weights on hover.
    Bottom: one layer's router probabilities (experts x tokens) with the top-k cells outlined,
    chosen with the layer slider (`layer` is shown first)."""
    check_trace(trace, "routing_figure")
    row = check_index("routing_figure", "row", row, batch_size_of(trace), "batch rows")
    r = routing_of(trace, row, skip_padding)
    N, E, K = len(r.ids), r.num_experts, r.top_k
    layers = sorted(r.indices)
    check_member("routing_figure", "layer", layer, layers,
                 "Pick one of them; trace(model, layers=...) decides which layers are recorded.")
    texts = pal.token_texts(r.ids, tokenizer)
    labels = [pal.token_label(x, max_chars) + f"<sub>{p}</sub>" for x, p in zip(texts, r.positions)]
    x = list(range(N))
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.14, row_heights=[0.5, 0.5], shared_xaxes=False,
                        subplot_titles=[_("Chosen experts: layer (down) x token (across), {K} choices per layer")
                                        .format(K=K),
                                        _("Router probabilities of one layer (softmax over experts)")])
    # -- top: (layer, choice) rows
    z, text, custom, ylab = [], [], [], []
    for l in layers:
        for k in range(K):
            z.append(r.indices[l][:, k].tolist())
            text.append([f"{e}" for e in r.indices[l][:, k].tolist()])
            ylab.append(_("layer {l} · #{k}").format(l=l, k=k + 1))
            custom.append([[texts[n], r.positions[n], r.steps[n], l, k + 1,
                            ", ".join(f"e{e} {w:.2f}" for e, w in zip(r.indices[l][n].tolist(),
                                                                        r.weights[l][n].tolist())),
                            f"{r.weights[l][n, k]:.3f}"] for n in range(N)])
    colors = [pal.expert_color(e) for e in range(E)]
    fig.add_trace(go.Heatmap(
        z=z, x=x, y=list(range(len(ylab))), text=text, texttemplate="e%{text}", customdata=custom,
        colorscale=pal.discrete_colorscale(colors), zmin=-0.5, zmax=E - 0.5, xgap=1, ygap=1, name="choices",
        colorbar=dict(title=dict(text=_("expert")), tickvals=list(range(E)), ticktext=[f"e{e}" for e in range(E)],
                      len=0.45, y=0.78, thickness=14),
        hovertemplate=("token %{customdata[0]} (column %{customdata[1]}, step %{customdata[2]})<br>"
                       "layer %{customdata[3]}, choice #%{customdata[4]}: <b>expert %{z}</b>, weight "
                       "%{customdata[6]}<br>top-k (renormalised): %{customdata[5]}<extra></extra>")), 1, 1)
    fig.update_yaxes(tickvals=list(range(len(ylab))), ticktext=ylab, autorange="reversed", row=1, col=1)
    # a line between layers so each layer's K rows read as a group
    lines = [dict(type="line", xref="x domain", yref="y", x0=0, x1=1, y0=i * K - 0.5, y1=i * K - 0.5,
                  line=dict(color="white", width=4)) for i in range(1, len(layers))]

    # -- bottom: per layer, probs (E, N) + outlines on the chosen cells
    groups = []
    for l in layers:
        first = len(fig.data)
        probs = r.probs[l].T.numpy()                                            # (E, N)
        fig.add_trace(go.Heatmap(
            z=probs, x=x, y=list(range(E)), colorscale=pal.SEQUENTIAL, zmin=0, zmax=1, xgap=1, ygap=1,
            customdata=np.array([[texts[n] for n in range(N)]] * E, dtype=object), visible=(l == layer),
            colorbar=dict(title=dict(text=_("router<br>probability")), len=0.4, y=0.2, thickness=14),
            name=f"layer {l} probs",
            hovertemplate="token %{customdata}, expert %{y}: p = %{z:.3f}<extra>layer " + str(l) + "</extra>"),
            2, 1)
        cx = [n for n in range(N) for _ in range(K)]
        cy = r.indices[l].reshape(-1).tolist()
        fig.add_trace(go.Scatter(
            x=cx, y=cy, mode="markers", visible=(l == layer), name=f"layer {l} top-{K}",
            marker=dict(symbol="square-open", size=14, line=dict(width=2.5), color=pal.OKABE_ITO["vermillion"]),
            hoverinfo="skip", showlegend=False), 2, 1)
        groups.append([first, first + 1])
    # explicit ranges: the outline markers would otherwise pad the axes and misalign the panels
    fig.update_yaxes(title_text=_("expert"), tickvals=list(range(E)), ticktext=[f"e{e}" for e in range(E)],
                     range=[E - 0.5, -0.5], row=2, col=1)
    for rr in (1, 2):
        fig.update_xaxes(tickvals=x, ticktext=labels, tickangle=-60, showgrid=False, range=[-0.5, N - 0.5],
                         row=rr, col=1)
    fig.update_xaxes(title_text=_(X_TITLE), row=2, col=1)
    fig.update_yaxes(showgrid=False)
    always = [0]
    n_traces = len(fig.data)
    title = (_("Expert routing, batch row {row}: {N} tokens, {L} layers, top-{K} of {E} experts")
             .format(row=row, N=N, L=len(layers), K=K, E=E)
             + "<br><sup>" + _("bottom: outlined cells = the top-k the router chose; move the slider to change layer")
             + "</sup>")
    alt = _(ALT).format(row=row, N=N, K=K, E=E, L=len(layers))
    fig.update_layout(**pal.base_layout(title, height=int(max(620, 300 + 34 * len(ylab) + 22 * E)), alt=alt))
    fig.update_layout(shapes=lines, margin=dict(b=170), sliders=[visibility_slider(
        [str(l) for l in layers], [always + g for g in groups], n_traces, _("layer: "), active=layers.index(layer),
        y=-0.2)])
    return fig


# -- live ---------------------------------------------------------------------------------------------

def routing_explorer(model, tokenizer, prompt: str = "the small cat sees", max_new_tokens: int = 4):
    """Live routing view: edit the prompt, the number of generated tokens, the layer, and switch one
    expert off in every layer (mixtral_edu.disable_expert); each change re-runs generate.
    Returns a LiveView (`.figure` is the figure on screen)."""
    from ..observe.capture import disable_expert, hooks
    from .widgets import dropdown, make_live_view, slider, text_box
    E, L = model.config.num_local_experts, model.config.num_hidden_layers
    controls = {"prompt": text_box(_("prompt"), prompt),
                "new_tokens": slider(_("new tokens"), max_new_tokens, 1, 16),
                "layer": slider(_("layer (bottom panel)"), 0, 0, L - 1),
                "off": dropdown(_("switch off expert"),
                                [(_("none"), -1)] + [(_("e{e} (all layers)").format(e=e), e) for e in range(E)],
                                value=-1)}

    def render(prompt, new_tokens, layer, off):
        ids, mask = encode_batch(tokenizer, [prompt])
        spec = disable_expert(None, off) if off >= 0 else {}
        with hooks(model, spec):
            tr, _ = traced_generate(model, ids, mask, max_new_tokens=new_tokens)
        return routing_figure(tr, row=0, tokenizer=tokenizer, layer=layer)

    return make_live_view(controls, render, _("Expert routing: each change runs the model again"))
