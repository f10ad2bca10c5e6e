"""KV-cache growth: step through a generation and watch the cache fill.

    fig = cache_figure(tr)                 # tr: a trace of model.generate(...)
    cache_explorer(model, tokenizer)       # live: step, sliding window, new tokens

Per step, read from the trace: which slice of the sequence was fed and with
which position_ids, each layer's cache length before -> after, the bytes the
cache holds (cached tokens x the recorded key shape), and the first step at
which the sliding window hides a key. Beside it, the bytes Mixtral 8x7B would
hold for the same tokens (`mixtral_edu.full_size.sizes.kv_cache_bytes`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..modeling import masks as M
from ..full_size import sizes
from ..full_size.presets import get_preset
from ..i18n import N_, _
from . import palette as pal
from .masks import reasons_for_step
from .runs import (batch_size_of, check_index, check_trace, config_values, encode, left_pad, pad_id_of, sequence_ids,
                   traced_generate)

FED, CACHED, LATER = 1, 0, 2
# the colours of the "what each step fed" panel, by palette name (the notebooks' prose names them)
CELL_COLOURS = {CACHED: "sky_blue", FED: "vermillion"}
PAD_POSITIONS = N_(" (pads: {p}, a filler)")
NO_WINDOW = N_("no sliding window")
WINDOW_HIDES = N_("sliding window W={W} (notebook 06) hides keys from step {step} on (they stay in the cache)")
WINDOW_HIDES_NOTHING = N_("sliding window W={W} (notebook 06): no key is far enough back to be hidden")
ALT = N_("The KV cache over {n} generation steps of batch row {row}: which tokens each step fed and which it read from "
       "the cache, every layer's cache length before and after, and the bytes the cache holds beside what {full_size} "
       "would hold; a slider picks the step.")


@dataclass
class CacheStep:
    """One generation step as the cache saw it (all read from the trace).

    fed: (start, stop) columns of the sequence fed; position_ids: per batch row, the
    ids of the fed tokens; before / after: {layer: cache length}; bytes_after: bytes
    of keys and values held after the step; window_hides: the mask hid a key because
    of the sliding window in this step.
    """
    index: int
    kind: str
    fed: tuple
    position_ids: List[List[int]]
    before: Dict[int, int]
    after: Dict[int, int]
    bytes_after: int
    window_hides: bool


def cache_steps(trace, sliding_window="config") -> List[CacheStep]:
    """The CacheStep of every traced step (a trace of generate with use_cache=True)."""
    config = trace.model.config
    window = config.sliding_window if sliding_window == "config" else sliding_window
    itemsize = next(trace.model.parameters()).element_size()  # keys are stored in the model's dtype
    out = []
    for rec in trace.steps:
        if not rec.layers or any(r.cache_after is None for r in rec.layers.values()):
            raise ValueError(f"step {rec.index} has no cache lengths: trace generate with use_cache=True.")
        T = rec.input_ids.shape[1]
        P = rec.past_length or 0
        per_layer_bytes = {}
        for i, r in rec.layers.items():
            B, Hkv, _, D = r.k_shape  # (B, Hkv, T, D): one new key per token; values have the same shape
            per_layer_bytes[i] = 2 * B * Hkv * r.cache_after * D * itemsize
        reasons = reasons_for_step(rec, window)
        pos = rec.position_ids if rec.position_ids is not None else torch.arange(P, P + T)[None]
        out.append(CacheStep(rec.index, rec.kind, (P, P + T), pos.tolist(),
                             {i: r.cache_before for i, r in sorted(rec.layers.items())},
                             {i: r.cache_after for i, r in sorted(rec.layers.items())},
                             sum(per_layer_bytes.values()), bool((reasons == M.WINDOW).any())))
    return out


def cache_figure(trace, row: int = 0, tokenizer=None, full_size: str = "mixtral-8x7b",
                 dtype: torch.dtype = torch.bfloat16, step: Optional[int] = None,
                 sliding_window="config") -> go.Figure:
    """Four panels over the steps of a traced generate, with a step slider.

    row: the batch row whose tokens and position ids are shown. full_size: the preset
    compared with (its KV cache for the same batch and tokens, in `dtype`). step: the
    step selected at first (default: the last). sliding_window: the window the model
    ran with ("config": the traced model's).
    """
    check_trace(trace, "cache_figure")
    row = check_index("cache_figure", "row", row, batch_size_of(trace), "batch rows")
    steps = cache_steps(trace, sliding_window)
    n = len(steps)
    step = n - 1 if step is None else check_index("cache_figure", "step", step, n, "steps")
    config = trace.model.config
    big = get_preset(full_size)
    ids = sequence_ids(trace, n - 1)
    S = steps[-1].fed[1]
    B = trace.steps[0].input_ids.shape[0]
    labels = (pal.token_labels(ids[row].tolist(), tokenizer, max_chars=5) if ids is not None
              else [str(j) for j in range(S)])
    window_step = next((s.index for s in steps if s.window_hides), None)
    # the pads' position ids in the prefill: one filler value (generate's prepare_inputs sets 1), said in the title
    first_mask = trace.steps[0].attention_mask
    pad_ids = ([p for p, m in zip(steps[0].position_ids[min(row, len(steps[0].position_ids) - 1)],
                                  first_mask[row, :steps[0].fed[1]].tolist()) if m == 0]
               if first_mask is not None else [])
    fed_title = _("What each step fed (row {row}); cell text = position id").format(row=row)
    if pad_ids and len(set(pad_ids)) == 1:
        fed_title += _(PAD_POSITIONS).format(p=pad_ids[0])

    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.16, vertical_spacing=0.28,
                        column_widths=[0.6, 0.4], subplot_titles=[
                            fed_title,
                            _("Cache length per layer: before → after"),
                            _("KV cache bytes, this model ({dtype})").format(dtype=_dtype_name(trace)),
                            _("Same tokens on {model} ({dtype}): {size}/token").format(
                                model=full_size, dtype=_name(dtype),
                                size=sizes.format_bytes(sizes.kv_cache_bytes_per_token(big, dtype)))])
    # (1, 1) fed slices: one row per step
    z = np.full((n, S), LATER)
    text = np.full((n, S), "", dtype=object)
    for k, s in enumerate(steps):
        z[k, : s.fed[0]] = CACHED
        z[k, s.fed[0]: s.fed[1]] = FED
        for j, p in zip(range(s.fed[0], s.fed[1]), s.position_ids[min(row, len(s.position_ids) - 1)]):
            text[k, j] = str(p)
    colors = [pal.OKABE_ITO[CELL_COLOURS[CACHED]], pal.OKABE_ITO[CELL_COLOURS[FED]], pal.LIGHT_GREY]
    custom = np.array([[labels[j] for j in range(S)]] * n, dtype=object)
    fig.add_trace(go.Heatmap(
        z=z, x=list(range(S)), y=list(range(n)), text=text, texttemplate="%{text}", customdata=custom,
        colorscale=pal.discrete_colorscale(colors), zmin=-0.5, zmax=2.5, xgap=1, ygap=1,
        colorbar=dict(title=dict(text=_("token")), tickvals=[0, 1, 2],
                      ticktext=[_("in cache"), _("fed now"), _("not yet fed")],
                      len=0.36, y=0.82, x=0.53, thickness=14),
        hovertemplate="step %{y}, column %{x} (%{customdata})<br>position id %{text}<extra></extra>"), 1, 1)
    fig.update_xaxes(title_text=_("sequence column (token)"), tickvals=list(range(S)), ticktext=labels,
                     tickangle=-60, row=1, col=1)
    fig.update_yaxes(title_text=_("step"), autorange="reversed", dtick=1, row=1, col=1)

    # (1, 2) per layer cache length, before -> after
    layers = sorted(steps[0].after)
    za = np.array([[s.after[i] for i in layers] for s in steps])
    txt = np.array([[f"{s.before[i]}→{s.after[i]}" for i in layers] for s in steps], dtype=object)
    fig.add_trace(go.Heatmap(
        z=za, x=layers, y=list(range(n)), text=txt, texttemplate="%{text}", colorscale=pal.SEQUENTIAL_ALT,
        xgap=2, ygap=2, colorbar=dict(title=dict(text=_("cached<br>tokens")), len=0.36, y=0.82, thickness=14),
        hovertemplate="step %{y}, layer %{x}: %{text} keys cached<extra></extra>"), 1, 2)
    fig.update_xaxes(title_text=_("layer"), dtick=1, row=1, col=2)
    fig.update_yaxes(title_text=_("step"), autorange="reversed", dtick=1, row=1, col=2)

    # (2, 1) bytes of this model; (2, 2) the full-size model for the same tokens
    x = [s.index for s in steps]
    tokens = [s.after[layers[0]] for s in steps]
    ours = [s.bytes_after / 1024 for s in steps]
    theirs = [sizes.kv_cache_bytes(big, t, batch_size=B, dtype=dtype) / 2**20 for t in tokens]
    fig.add_trace(go.Scatter(x=x, y=ours, mode="lines+markers", name=_("this model"),
                             line=dict(color=pal.OKABE_ITO["blue"]), customdata=tokens,
                             hovertemplate="step %{x}: %{y:.2f} KiB for %{customdata} tokens x B<extra></extra>"),
                  2, 1)
    fig.add_trace(go.Scatter(x=x, y=theirs, mode="lines+markers", name=full_size,
                             line=dict(color=pal.OKABE_ITO["vermillion"]), customdata=tokens,
                             hovertemplate="step %{x}: %{y:.1f} MiB for %{customdata} tokens x B<extra></extra>"),
                  2, 2)
    fig.update_xaxes(title_text=_("step"), dtick=1, row=2)
    fig.update_yaxes(title_text="KiB", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="MiB", rangemode="tozero", row=2, col=2)

    W = config.sliding_window if sliding_window == "config" else sliding_window
    alt = _(ALT).format(n=n, row=row, full_size=full_size)
    fig.update_layout(**pal.base_layout(_title(steps[step], W, window_step, row), height=760, showlegend=False,
                                        alt=alt))
    fig.update_layout(margin=dict(t=110, b=110), shapes=_marks(steps[step], S, window_step))
    fig.update_layout(sliders=[dict(
        active=step, currentvalue=dict(prefix=_("step: ")), pad=dict(t=10), y=-0.1, yanchor="top", len=0.9, x=0.05,
        steps=[dict(method="relayout", label="{} ({})".format(s.index, _(s.kind)),
                    args=[{"title.text": _title(s, W, window_step, row), "shapes": _marks(s, S, window_step)}])
               for s in steps])])
    return fig


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _dtype_name(trace) -> str:
    return _name(next(trace.model.parameters()).dtype)


def _title(s: CacheStep, W, window_step, row: int = 0) -> str:
    lengths = sorted(set(s.after.values()))
    where = (_(NO_WINDOW) if W is None else _(WINDOW_HIDES).format(W=W, step=window_step) if window_step is not None
             else _(WINDOW_HIDES_NOTHING).format(W=W))
    head = _("KV cache, step {index} ({kind}): fed input_ids[:, {start}:{stop}], cache {before} → {after} tokens "
             "per layer, {size}").format(index=s.index, kind=_(s.kind), start=s.fed[0], stop=s.fed[1],
                                         before=s.before[0], after=lengths[0] if len(lengths) == 1 else lengths,
                                         size=sizes.format_bytes(s.bytes_after))
    sub = _("{where}; position ids of row {row}: {ids}").format(
        where=where, row=row, ids=s.position_ids[min(row, len(s.position_ids) - 1)])
    return f"{head}<br><sup>{sub}</sup>"


def _marks(s: CacheStep, S: int, window_step) -> List[dict]:
    """Outline the selected step in the two tables and mark it on the byte plots."""
    line = dict(color=pal.OKABE_ITO["black"], width=3)
    shapes = [dict(type="rect", xref="x", yref="y", x0=-0.5, x1=S - 0.5, y0=s.index - 0.5, y1=s.index + 0.5,
                   line=line),
              dict(type="rect", xref="x2", yref="y2", x0=-0.5, x1=len(s.after) - 0.5, y0=s.index - 0.5,
                   y1=s.index + 0.5, line=line)]
    for ax in ("x3", "x4"):
        shapes.append(dict(type="line", xref=ax, yref=ax.replace("x", "y") + " domain", x0=s.index, x1=s.index,
                           y0=0, y1=1, line=dict(color=pal.DARK_GREY, dash="dot")))
    if window_step is not None:
        shapes.append(dict(type="line", xref="x3", yref="y3 domain", x0=window_step - 0.5, x1=window_step - 0.5,
                           y0=0, y1=1, line=dict(color=pal.OKABE_ITO["orange"], width=2),
                           label=dict(text=" " + _("window starts hiding keys"), textangle=0, textposition="end",
                                      xanchor="left", yanchor="top", font=dict(size=10,
                                                                                 color=pal.OKABE_ITO["orange"]))))
    return shapes


# -- live ---------------------------------------------------------------------------------------------

def cache_explorer(model, tokenizer=None, prompt: str = "the small cat sees",
                   ids=None, pads=(2, 0), max_new_tokens: int = 6, sliding_window: Optional[int] = None):
    """Live KV-cache view: a step slider (reads the stored trace), and the sliding window and
    number of new tokens (each re-runs generate). sliding_window None: the model's own.
    Returns a LiveView (`.figure` is the figure on screen)."""
    from .widgets import make_live_view, slider
    ids = list(ids) if ids is not None else encode(tokenizer, prompt)
    input_ids, mask = left_pad(ids, pads, pad_id_of(model, tokenizer))
    own = model.config.sliding_window
    start_w = own if sliding_window is None else sliding_window
    runs: Dict[tuple, object] = {}

    def run(window, new):
        key = (window, new)
        if key not in runs:
            runs.clear()  # keep one trace: they hold every step's tensors
            with config_values(model, sliding_window=window or None):
                # eos_token_id=None: keep going past an end of text, so every step the slider offers exists
                runs[key] = traced_generate(model, input_ids, mask, max_new_tokens=new, eos_token_id=None)[0]
        return runs[key]

    controls = {"step": slider(_("step"), max_new_tokens - 1, 0, max(max_new_tokens - 1, 0)),
                "sliding_window": slider(_("sliding window W (0 = off; model's: {own})").format(own=own),
                                         start_w or 0, 0, max(len(ids) + 16, start_w or 0)),
                "new_tokens": slider(_("new tokens"), max_new_tokens, 1, 16)}

    def render(step, sliding_window, new_tokens):
        tr = run(sliding_window, new_tokens)
        return cache_figure(tr, tokenizer=tokenizer, step=min(step, len(tr.steps) - 1),
                            sliding_window=sliding_window or None)

    view = make_live_view(controls, render, _("KV cache: step through a generation"))

    def fit_step_slider(change):  # after the redraw above; clamping the value redraws again (cheap)
        controls["step"].max = change["new"] - 1
    controls["new_tokens"].observe(fit_step_slider, names="value")
    return view
