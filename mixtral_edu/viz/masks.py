"""Mask explorer: the 2D padding mask, the 4D additive mask per batch row, and why each cell is hidden.

    fig = mask_figure(tr)                 # every step of a traced generate, with a step slider
    fig = mask_figure(tr, step=0)         # one step
    mask_explorer(model, tokenizer)       # live: past length, sliding window, pads per row

The colours come from `mixtral_edu.modeling.masks.mask_reasons`, checked cell by cell
against the 4D mask the model really used (read from the trace); they are
never worked out here.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..modeling import masks as M
from ..i18n import N_, _
from . import palette as pal
from .runs import (Source, check_index, check_trace, config_of, config_values, encode, left_pad, pad_id_of, pick_step,
                   sequence_ids)

X_TITLE, Y_TITLE = N_("key position"), N_("query position")  # shown through _()
ALT_STEP = N_("Attention masks of one step: the 2D padding mask of {B} batch rows, then for each row which of the {S} "
            "keys each query may see, coloured by why a key is hidden.")
ALT_STEPS = N_("Attention masks of {steps} steps: the 2D padding mask of {B} batch rows, then for each row which of the "
             "{S} keys each query may see, coloured by why a key is hidden; a slider picks the step.")
_NAMES = [M.REASONS[i] for i in range(4)]


def reasons_for_step(rec, sliding_window: Optional[int]) -> torch.Tensor:
    """(B, 1, T, S) int8 reason codes for a StepRecord, asserted equal to the mask the model used.

    Hidden cells (reason != VISIBLE) must be exactly the non-zero cells of the
    recorded 4D mask. When the model built no 4D mask (None), every cell must
    be visible, except for sdpa, whose kernel applies the causal rule itself.
    """
    B, T = rec.input_ids.shape if rec.input_ids is not None else rec.position_ids.shape
    reasons = M.mask_reasons(rec.attention_mask, B, T, rec.past_length or 0, sliding_window)
    hidden = reasons != M.VISIBLE
    if rec.mask_4d is not None:
        if tuple(rec.mask_4d.shape) != tuple(reasons.shape) or not torch.equal(hidden, rec.mask_4d != 0):
            raise AssertionError(
                f"mask_reasons (sliding_window={sliding_window}) disagrees with the 4D mask the model used "
                f"{tuple(rec.mask_4d.shape)}: pass the sliding window the model ran with.")
    return reasons


def _axis_labels(ids: Optional[torch.Tensor], b: int, S: int, tokenizer) -> List[str]:
    if ids is None or ids.shape[1] != S:
        return [str(j) for j in range(S)]
    return pal.token_labels(ids[b].tolist(), tokenizer, max_chars=5)


def _describe(rec) -> str:
    P, T = rec.past_length or 0, (rec.position_ids.shape[1] if rec.position_ids is not None else 0)
    if P == 0:
        return _("prefill: empty cache")
    return _("decode: one new token") if T == 1 else _("chunked prefill")


def _step_traces(rec, reasons: torch.Tensor, ids: Optional[torch.Tensor], tokenizer) -> List[tuple]:
    """[(trace, row, col)] for one step: the 2D mask on top, one 4D panel per batch row below."""
    B, _, T, S = reasons.shape
    P = rec.past_length or 0
    out = []
    if rec.attention_mask is not None:
        am = rec.attention_mask.long()
        z = np.where(am.numpy() == 1, M.VISIBLE, M.PADDING)
        out.append((go.Heatmap(
            z=z, x=list(range(S)), y=list(range(B)), coloraxis="coloraxis", xgap=1, ygap=1,
            text=am.numpy().astype(str), texttemplate="%{text}", name="2D mask",
            hovertemplate="row %{y}, column %{x}: attention_mask = %{text}<extra>2D mask</extra>"), 1, 1))
    pos = rec.position_ids
    for b in range(B):
        keys = _axis_labels(ids, b, S, tokenizer)
        z = reasons[b, 0].numpy()
        added = (rec.mask_4d[b, 0].float().numpy() if rec.mask_4d is not None else np.zeros((T, S)))
        pos_b = pos[min(b, pos.shape[0] - 1)].tolist() if pos is not None else [P + t for t in range(T)]
        custom = np.empty((T, S, 5), dtype=object)
        for t in range(T):
            for s in range(S):
                custom[t, s] = (_NAMES[z[t, s]], keys[s], keys[P + t] if P + t < S else "",
                                f"{added[t, s]:.3g}", pos_b[t])
        out.append((go.Heatmap(
            z=z, x=list(range(S)), y=[P + t for t in range(T)], coloraxis="coloraxis", xgap=1, ygap=1,
            customdata=custom, name=f"row {b}",
            hovertemplate=(f"row {b}<br>query %{{y}} (%{{customdata[2]}}), position id %{{customdata[4]}}"
                           "<br>key %{x} (%{customdata[1]})<br><b>%{customdata[0]}</b>"
                           "<br>adds %{customdata[3]} to the score<extra></extra>")), 2, b + 1))
    return out


def mask_figure(source: Source, step: Optional[int] = None, ids: Optional[torch.Tensor] = None,
                tokenizer=None, sliding_window="config", config=None) -> go.Figure:
    """The masks of one step (or of every step, with a slider), coloured by why each cell is hidden.

    source: a Trace (of generate or of forward calls) or one StepRecord.
    step: which step; None draws every step of a Trace with a step slider.
    ids: (B, S) ids of all keys, for labels (default: read from the trace's steps).
    tokenizer: turns ids into token text for the axes (None: positions only).
    sliding_window: the window the model ran with ("config": the traced model's).
    Returns a figure: top, the 2D attention_mask (B, S) as fed; below, per batch row,
    the 4D additive mask (b, 0, T, S), queries down, keys across.
    """
    if sliding_window == "config":
        sliding_window = config_of(source, config).sliding_window
    if hasattr(source, "steps"):
        check_trace(source, "mask_figure")
    if step is None and hasattr(source, "steps"):
        indices = list(range(len(source.steps)))
    else:
        indices = [0 if step is None else step]
        if hasattr(source, "steps"):
            indices = [check_index("mask_figure", "step", indices[0], len(source.steps), "steps")]
    recs = [pick_step(source, i) for i in indices]
    all_reasons = [reasons_for_step(r, sliding_window) for r in recs]    # checked against the model's masks
    B = all_reasons[0].shape[0]
    s_max = max((r.past_length or 0) + r.position_ids.shape[1] for r in recs)  # panels span all keys
    fig = make_subplots(rows=2, cols=B, specs=[[{"colspan": B}] + [None] * (B - 1), [{}] * B],
                        row_heights=[0.18, 0.82], vertical_spacing=0.16, horizontal_spacing=0.07,
                        subplot_titles=[_("2D attention_mask (B, S) as fed: 1 = real token, 0 = pad")]
                        + [_("4D mask, batch row {b}").format(b=b) for b in range(B)])
    groups, layouts = [], []
    for i, rec, reasons in zip(indices, recs, all_reasons):
        key_ids = ids if ids is not None else (sequence_ids(source, i) if hasattr(source, "steps") else None)
        first = len(fig.data)
        for tr, r, c in _step_traces(rec, reasons, key_ids, tokenizer):
            tr.visible = (i == indices[-1]) if len(indices) > 1 else True
            fig.add_trace(tr, row=r, col=c)
        groups.append(list(range(first, len(fig.data))))
        panels = [t for t in fig.data[first:] if t.name.startswith("row ")]
        layouts.append({"title.text": _title(rec, i, sliding_window), "shapes": _cached_rows(rec, panels)})
    fig.update_layout(shapes=layouts[-1]["shapes"])
    alt = _(ALT_STEPS if len(indices) > 1 else ALT_STEP).format(steps=len(recs), B=B, S=s_max)
    fig.update_layout(**pal.base_layout(layouts[-1]["title.text"], alt=alt,
                                        height=int(min(1000, max(600, 330 + 26 * s_max)))))
    fig.update_layout(coloraxis=dict(
        colorscale=pal.discrete_colorscale([pal.MASK_COLORS[i] for i in range(4)]), cmin=-0.5, cmax=3.5,
        colorbar=dict(title=dict(text=_("why hidden")), tickvals=[0, 1, 2, 3], ticktext=[_(n) for n in _NAMES],
                      len=0.7, y=0.4)))
    _label_axes(fig, recs[-1], B, ids if ids is not None else
                (sequence_ids(source, indices[-1]) if hasattr(source, "steps") else None), tokenizer)
    if len(indices) > 1:
        labels = ["{} ({})".format(i, _(pick_step(source, i).kind)) for i in indices]
        fig.update_layout(sliders=[_slider(labels, groups, len(fig.data), layouts)],
                          margin=dict(b=190))
    return fig


def _slider(labels, groups, n, layouts) -> dict:
    from .widgets import visibility_slider
    return visibility_slider(labels, groups, n, _("step: "), layouts, active=len(labels) - 1, y=-0.2)


def _cached_rows(rec, panels) -> List[dict]:
    """Grey bands over the query rows of earlier steps: their keys and values come from the cache."""
    P = rec.past_length or 0
    if P == 0:
        return []
    S = P + rec.position_ids.shape[1]
    return [dict(type="rect", xref=t.xaxis, yref=t.yaxis, x0=-0.5, x1=S - 0.5, y0=-0.5, y1=P - 0.5,
                 fillcolor=pal.LIGHT_GREY, line=dict(width=0), layer="below",
                 label=dict(text=_("queries 0..{last}: computed in earlier steps,<br>not again (their k, v are cached)")
                            .format(last=P - 1),
                            font=dict(size=11, color=pal.DARK_GREY)))
            for t in panels]


def _title(rec, i: int, sliding_window) -> str:
    P = rec.past_length or 0
    T = rec.position_ids.shape[1] if rec.position_ids is not None else 0
    shape = (_("None (the model built no 4D mask)") if rec.mask_4d is None
             else f"{tuple(rec.mask_4d.shape)}")
    window = _("off") if sliding_window is None else f"W={sliding_window}"
    head = _("Forward call") if rec.kind == "forward" else _("Step {i}").format(i=i)
    top = _("{head} ({what}): 4D mask (B, 1, T, S) = {shape}").format(head=head, what=_describe(rec), shape=shape)
    sub = _("past length P={P}, new tokens T={T}, keys S={S}, sliding window {window}; "
            "queries down, keys across").format(P=P, T=T, S=P + T, window=window)
    return f"{top}<br><sup>{sub}</sup>"


def _label_axes(fig: go.Figure, rec, B: int, ids, tokenizer) -> None:
    """Axis titles and tick labels (token text on both axes, each batch row its own).

    Both axes of a 4D panel always span all S keys of the last step, so a decode
    step shows its single query row where it sits, below the rows computed before.
    """
    S = (rec.attention_mask.shape[1] if rec.attention_mask is not None
         else (rec.past_length or 0) + rec.position_ids.shape[1])
    span = dict(autorangeoptions=dict(include=[-0.5, S - 0.5]), showgrid=False, zeroline=False)
    fig.update_xaxes(title_text=_(X_TITLE), tickangle=-60, row=2, **span)
    fig.update_yaxes(autorange="reversed", row=2, **span)
    fig.update_yaxes(title_text=_(Y_TITLE), row=2, col=1)
    fig.update_yaxes(autorange="reversed", showgrid=False, tickvals=list(range(B)),
                     ticktext=[_("row {b}").format(b=b) for b in range(B)],
                     row=1, col=1)
    fig.update_xaxes(title_text=_("column of input_ids"), row=1, col=1, dtick=1)
    for b in range(B):
        labels = _axis_labels(ids, b, S, tokenizer)
        fig.update_xaxes(tickvals=list(range(S)), ticktext=labels, row=2, col=b + 1)
        fig.update_yaxes(tickvals=list(range(S)), ticktext=labels, row=2, col=b + 1)


# -- live ---------------------------------------------------------------------------------------------

def run_mask_case(model, ids: Sequence[int], pads: Sequence[int], past_length: int,
                  sliding_window: Optional[int], pad_id: int):
    """Run the model on a left-padded batch, with `past_length` tokens already in the cache.

    The first past_length columns go through the model first (filling the cache),
    then the rest is fed with that cache and traced, as generate's
    prepare_inputs_for_generation would feed it. Returns (trace of the second
    call, full input_ids (B, S)).
    """
    from ..observe.tracer import trace
    input_ids, mask = left_pad(ids, pads, pad_id)
    P = max(0, min(int(past_length), input_ids.shape[1] - 1))
    with torch.no_grad(), config_values(model, sliding_window=sliding_window):
        cache = None
        if P > 0:
            first = model.prepare_inputs_for_generation(input_ids[:, :P], attention_mask=mask[:, :P], use_cache=True)
            cache = model(**first, return_dict=True).past_key_values
        inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=cache, attention_mask=mask,
                                                     use_cache=True)
        with trace(model) as tr:
            model(**inputs, return_dict=True)
    return tr, input_ids


def mask_explorer(model, tokenizer=None, prompt: str = "the small cat sees a red ball .",
                  ids: Optional[Sequence[int]] = None, pads: Sequence[int] = (2, 0), past_length: int = 0,
                  sliding_window: int = 4):
    """Live mask view: sliders for past length P, the sliding window (0 = off) and each row's pads.

    Every change re-runs the model (see run_mask_case) and redraws mask_figure of
    the traced call. ids: token ids to use instead of encoding `prompt` (no tokenizer
    needed). Returns a LiveView (an ipywidgets.VBox; `.figure` is the drawn figure).
    """
    from .widgets import make_live_view, slider
    if ids is None:
        if tokenizer is None:
            raise ValueError("Give a tokenizer to encode the prompt, or token ids with ids=[...].")
        ids = encode(tokenizer, prompt)
    ids = list(ids)
    n = len(ids)
    pad_id = pad_id_of(model, tokenizer)
    own = model.config.sliding_window
    controls = {"past_length": slider(_("past length P (tokens already cached)"), past_length, 0, n - 1),
                "sliding_window": slider(_("sliding window W (0 = off; model's: {own})").format(own=own),
                                         sliding_window, 0, n)}
    for b, p in enumerate(pads):
        controls[f"pad{b}"] = slider(_("pads in row {b}").format(b=b), p, 0, n - 1, width="300px")

    def render(past_length, sliding_window, **pad_values):
        row_pads = [pad_values[f"pad{b}"] for b in range(len(pads))]
        window = sliding_window or None
        tr, full = run_mask_case(model, ids, row_pads, past_length, window, pad_id)
        return mask_figure(tr, step=0, ids=full, tokenizer=tokenizer, sliding_window=window)

    return make_live_view(controls, render, _("Attention masks: move a slider, the model runs again"))
