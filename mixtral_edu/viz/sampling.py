"""Next-token choice: the distribution at one step, reshaped by temperature, top-k and top-p.

    fig = sampling_figure(tr, step=0, temperature=0.8, top_k=20, top_p=0.9, tokenizer=tok)
    sampling_explorer(model, tokenizer)   # live: each change draws a token with generate(do_sample=True)

Stages are the warpers `mixtral_edu.modeling.generation.get_logits_warpers` builds, in
the order generate applies them (a neutral setting adds none, shown as
"unchanged"). The logits are the trace's last-position logits; the token marked
"chosen" is the one generate appended (trace.next_tokens).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..modeling.generation import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, get_logits_warpers
from ..i18n import N_, _
from . import palette as pal
from .runs import check_index, encode_batch, pick_step, traced_generate
from .widgets import visibility_slider

ALT = N_("Next-token probabilities at step {step}, batch row {row}: the {n} most likely tokens as the model scored them "
       "and after temperature, top-k and top-p, with the token generate chose marked.")
ALT_SLIDER = N_("Next-token probabilities at step {step}, batch row {row}: the {n} most likely tokens as the model scored "
              "them and after temperature, top-k and top-p, with the token generate chose marked; a slider changes the "
              "temperature.")
_KINDS = ((TemperatureLogitsWarper, "temperature"), (TopKLogitsWarper, "top-k"), (TopPLogitsWarper, "top-p"))


def warp_stages(logits: torch.Tensor, temperature: Optional[float] = 1.0, top_k: Optional[int] = 50,
                top_p: Optional[float] = 1.0) -> List[Tuple[str, torch.Tensor]]:
    """[(label, scores (V,))]: the raw logits, then after each warper kind in generate's order.

    A kind that get_logits_warpers leaves out (neutral setting) passes the scores on unchanged.
    """
    scores = logits.float()[None]                                             # (1, V), as generate holds them
    stages = [(_("logits as the model gave them"), scores[0])]
    warpers = get_logits_warpers(temperature, top_k, top_p)
    for cls, name in _KINDS:
        found = [w for w in warpers if isinstance(w, cls)]
        setting = {"temperature": temperature, "top-k": top_k, "top-p": top_p}[name]
        if found:
            scores = found[0](None, scores)
            stages.append((_("after {name} = {setting}").format(name=_(name), setting=setting), scores[0]))
        else:
            label = _("{name} = {setting}: unchanged (generate adds no warper)").format(name=_(name), setting=setting)
            stages.append((label, scores[0]))
    return stages


def sampling_figure(source, step: int = 0, row: int = 0, tokenizer=None, temperature: float = 1.0,
                    top_k: Optional[int] = 50, top_p: float = 1.0, top_n: int = 20,
                    temperatures: Optional[Sequence[float]] = (0.5, 0.8, 1.0, 1.5, 2.0),
                    chosen: Optional[int] = None) -> go.Figure:
    """Bars of the probability of the top_n tokens (by raw logit) at each stage, one row per stage.

    source: a Trace or StepRecord (its logits_last and next_tokens). chosen: the token drawn
    (default: the trace's next token for this row). temperatures: values for a slider in the
    static figure (None: only `temperature`); top_k and top_p stay fixed.
    """
    rec = pick_step(source, step)
    if rec.logits_last is None:
        raise ValueError("This step has no logits: trace a MixtralForCausalLM (not the backbone).")
    row = check_index("sampling_figure", "row", row, rec.logits_last.shape[0], "batch rows")
    logits = rec.logits_last[row]                                             # (V,) fp32
    V = logits.shape[0]
    if chosen is None and rec.next_tokens is not None:
        chosen = int(rec.next_tokens[row])
    shown = torch.topk(logits, min(top_n, V)).indices.tolist()
    if chosen is not None and chosen not in shown:
        shown.append(chosen)
    texts = pal.token_texts(shown, tokenizer)
    labels = [pal.token_label(t, 8) for t in texts] + [_("other {n}").format(n=V - len(shown))]
    temps = list(temperatures) if temperatures else [temperature]
    if temperature not in temps:
        temps = sorted(temps + [temperature])
    n_rows = 4
    fig = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.06)
    groups, layouts = [], []
    for temp in temps:
        stages = warp_stages(logits, temp, top_k, top_p)
        first = len(fig.data)
        annotations = []
        for r, (label, scores) in enumerate(stages, start=1):
            probs = torch.softmax(scores, dim=-1)                             # what generate samples from
            p = probs[shown].numpy()
            kept = torch.isfinite(scores[shown]).numpy()
            rest = float(1 - p.sum())
            y = list(p) + [max(rest, 0.0)]
            color = [pal.CHOSEN if i == chosen else (pal.KEPT if k else pal.REMOVED)
                     for i, k in zip(shown, kept)] + [pal.DARK_GREY]
            status = [_("chosen") if i == chosen else (_("kept") if k else _("removed")) for i, k in zip(shown, kept)]
            status.append(_("{n} other tokens kept").format(n=int(torch.isfinite(scores).sum()) - int(kept.sum())))
            fig.add_trace(go.Bar(
                x=list(range(len(y))), y=y, marker_color=color, visible=(temp == temperature),
                text=["" if k else "×" for k in kept] + [""], textposition="outside",
                textfont=dict(color=pal.DARK_GREY, size=13), cliponaxis=False,
                customdata=np.array(list(zip(status, [f"{float(scores[i]):.3g}" for i in shown] + [""])),
                                    dtype=object),
                name=label, showlegend=False,
                hovertemplate="%{x}: p = %{y:.4f}<br>%{customdata[0]}, score %{customdata[1]}<extra></extra>"),
                r, 1)
            annotations.append(dict(text=f"<b>{r}. {label}</b>", xref="x domain", yref=f"y{r if r > 1 else ''} domain",
                                    x=0.99, y=0.98, xanchor="right", yanchor="top", showarrow=False,
                                    font=dict(size=12)))
        groups.append(list(range(first, len(fig.data))))
        layouts.append({"annotations": annotations, "title.text": _title(rec, row, temp, top_k, top_p, chosen,
                                                                          tokenizer)})
    for r in range(1, n_rows + 1):
        fig.update_yaxes(title_text="p", rangemode="tozero", row=r, col=1)  # each stage its own scale
    fig.update_xaxes(tickvals=list(range(len(labels))), ticktext=labels, tickangle=-50, row=n_rows, col=1)
    fig.update_xaxes(title_text=_("token (top {n} by raw logit; the last bar: all other tokens)").format(n=len(shown)),
                     row=n_rows, col=1)
    active = temps.index(temperature)
    height, margin = 820, dict(t=100, b=200)
    alt = _(ALT_SLIDER if len(temps) > 1 else ALT).format(step=rec.index, row=row, n=len(shown))
    fig.update_layout(**pal.base_layout(layouts[active]["title.text"], height=height, alt=alt))
    fig.update_layout(margin=margin, annotations=layouts[active]["annotations"], bargap=0.15)
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color=pal.KEPT, name=_("kept")))
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color=pal.REMOVED, name=_("removed (×, probability 0)")))
    fig.add_trace(go.Bar(x=[None], y=[None], marker_color=pal.CHOSEN, name=_("the token generate chose")))
    legend = list(range(len(fig.data) - 3, len(fig.data)))
    fig.update_layout(legend=dict(orientation="h", x=0, y=1.02, yanchor="bottom"))
    if len(temps) > 1:
        fig.update_layout(sliders=[visibility_slider(
            [f"{t:g}" for t in temps], [g + legend for g in groups], len(fig.data), _("temperature: "), layouts,
            active=active, y=-150 / (height - margin["t"] - margin["b"]))])
    return fig


def _title(rec, row, temperature, top_k, top_p, chosen, tokenizer) -> str:
    which = ("" if chosen is None else _("; generate chose {token} in the traced run").format(
        token=pal.token_label(pal.token_texts([chosen], tokenizer)[0], 12)))
    head = _("Next token at step {index} ({kind}), batch row {row}: temperature {temperature:g}, top-k {top_k}, "
             "top-p {top_p}").format(index=rec.index, kind=_(rec.kind), row=row, temperature=temperature,
                                     top_k=top_k, top_p=top_p)
    sub = _("softmax of the scores after each warper, in generate's order; removed tokens get score -inf "
            "(probability 0)")
    return f"{head}{which}<br><sup>{sub}</sup>"


# -- live ---------------------------------------------------------------------------------------------

def sampling_explorer(model, tokenizer, prompt: str = "the small cat", top_n: int = 20):
    """Live sampling: temperature, top-k (0 = off), top-p and the seed. Each change runs
    generate(do_sample=True, max_new_tokens=1) with those settings under torch.manual_seed(seed)
    and draws the distribution with the token it really drew. Returns a LiveView."""
    from .widgets import float_slider, make_live_view, slider, text_box
    V = model.config.vocab_size
    controls = {"prompt": text_box(_("prompt"), prompt),
                "temperature": float_slider(_("temperature"), 1.0, 0.1, 3.0, 0.1),
                "top_k": slider(_("top-k (0 = off)"), 50, 0, V),
                "top_p": float_slider(_("top-p"), 1.0, 0.05, 1.0, 0.05),
                "seed": slider(_("seed"), 0, 0, 99)}

    def render(prompt, temperature, top_k, top_p, seed):
        ids, mask = encode_batch(tokenizer, [prompt])
        torch.manual_seed(seed)
        tr, _ = traced_generate(model, ids, mask, max_new_tokens=1, do_sample=True, temperature=temperature,
                                top_k=top_k or None, top_p=top_p)
        return sampling_figure(tr, step=0, tokenizer=tokenizer, temperature=temperature, top_k=top_k or None,
                               top_p=top_p, top_n=top_n, temperatures=None)

    return make_live_view(controls, render, _("Next-token choice: each change draws again with generate"))
