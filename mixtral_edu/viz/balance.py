"""Load balance: how evenly each layer's router spreads tokens over its experts, per corpus domain.

    texts = samples_by_domain(32, EVAL_SEED)                # from mixtral_edu.tiny: {domain: [text, ...]}
    stats = balance_stats(model, tokenizer, texts)          # runs the model on each domain's texts
    fig = balance_figure(stats)
    balance_explorer(model, tokenizer, samples_by_domain)   # live: samples, seed, switch an expert off

For layer l and expert e, over the real (non-pad) tokens of a domain:
  f[l, e]  share of the N*K routing slots that went to e (sums to 1 over e; even = 1/E)
  P[l, e]  mean router probability of e (sums to 1 over e; even = 1/E)
The load-balancing loss is E * sum_e (K f_e) P_e: K for a perfectly even router,
up to E for one that sends everything to the same K experts (each then has f = P = 1/K).
The loss per layer comes from `mixtral_edu.modeling.moe.load_balancing_loss_func` on that
layer's router logits alone; the model's own `aux_loss` (the legend) pools all layers first:
expert e of every layer counts as one "expert e", so it can be near K while every layer is
far from balanced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from ..i18n import N_, _
from . import palette as pal
from .runs import encode_batch, pad_id_of

ALT = N_("Load balance of the router on {D} text domains ({names}): for every layer and each of {E} experts, its share "
       "of routing slots and its mean router probability, and the balancing loss per layer against the perfectly "
       "balanced value {K}.")
DOMAIN_COLORS = {"arith": pal.OKABE_ITO["orange"], "lang": pal.OKABE_ITO["blue"], "kv": pal.OKABE_ITO["bluish_green"]}


@dataclass
class DomainBalance:
    """f, P: (L, E) arrays; aux_per_layer: (L,); aux_total: the model's aux_loss; tokens: real tokens."""
    f: np.ndarray
    P: np.ndarray
    aux_per_layer: np.ndarray
    aux_total: float
    tokens: int


@dataclass
class BalanceStats:
    num_experts: int
    top_k: int
    domains: Dict[str, DomainBalance] = field(default_factory=dict)

    @property
    def balanced(self) -> int:
        """The loss of a perfectly even router: K."""
        return self.top_k


def domain_balance(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> DomainBalance:
    """Run the model once on a batch and read f, P and the losses (see the module docstring)."""
    from ..observe.capture import run_with_cache
    from ..modeling.moe import load_balancing_loss_func
    cfg = model.config
    E, K, L = cfg.num_local_experts, cfg.num_experts_per_tok, cfg.num_hidden_layers
    with torch.no_grad():
        out, cache = run_with_cache(model, input_ids, attention_mask=attention_mask, output_router_logits=True,
                                    names=["*block_sparse_moe.hook_router_probs",
                                           "*block_sparse_moe.hook_topk_indices"])
    real = attention_mask.reshape(-1).bool()                                   # (N,) n = b * T + t
    f, P, aux = np.zeros((L, E)), np.zeros((L, E)), np.zeros(L)
    for l in range(L):
        moe = f"model.layers.{l}.block_sparse_moe."
        chosen = cache[moe + "hook_topk_indices"][real]                        # (n_real, K)
        f[l] = torch.bincount(chosen.reshape(-1), minlength=E).double().numpy() / chosen.numel()
        P[l] = cache[moe + "hook_router_probs"][real].double().mean(0).numpy()
        aux[l] = float(load_balancing_loss_func((out.router_logits[l],), E, K, attention_mask))
    return DomainBalance(f, P, aux, float(out.aux_loss), int(real.sum()))


def balance_stats(model, tokenizer, samples: Mapping[str, Sequence[str]]) -> BalanceStats:
    """DomainBalance of each domain: `samples` maps a domain's name to its texts
    (the notebooks pass held-out texts, `mixtral_edu.tiny.corpus.samples_by_domain(n, EVAL_SEED)`)."""
    stats = BalanceStats(model.config.num_local_experts, model.config.num_experts_per_tok)
    for d, texts in samples.items():
        ids, mask = encode_batch(tokenizer, list(texts), pad_id_of(model, tokenizer))
        stats.domains[d] = domain_balance(model, ids, mask)
    return stats


def balance_figure(stats: BalanceStats) -> go.Figure:
    """Per domain (columns): f and P as layer x expert heatmaps; below, the loss per layer and domain
    against the perfectly balanced value K."""
    names = list(stats.domains)
    D, E, K = len(names), stats.num_experts, stats.top_k
    fig = make_subplots(
        rows=3, cols=D, vertical_spacing=0.12, horizontal_spacing=0.05,
        specs=[[{}] * D, [{}] * D, [{"colspan": D}] + [None] * (D - 1)],
        subplot_titles=[_("{domain}: f, share of routing slots").format(domain=d) for d in names]
        + [_("{domain}: P, mean router probability").format(domain=d) for d in names]
        + [_("Load-balancing loss E·Σ(K·f)·P per layer (model's aux_loss over all layers in the legend)")])
    vmax = max(max(b.f.max(), b.P.max()) for b in stats.domains.values())
    for c, d in enumerate(names, start=1):
        b = stats.domains[d]
        L = b.f.shape[0]
        for r, (m, what) in enumerate(((b.f, "f"), (b.P, "P")), start=1):
            other = b.P if what == "f" else b.f
            fig.add_trace(go.Heatmap(
                z=m, x=list(range(E)), y=list(range(L)), coloraxis="coloraxis", xgap=1, ygap=1,
                text=np.vectorize(lambda v: f"{v:.2f}")(m), texttemplate="%{text}", textfont=dict(size=9),
                customdata=other, name=f"{d} {what}",
                hovertemplate=(f"{d}, layer %{{y}}, expert %{{x}}<br>{what} = %{{z:.3f}}"
                               f"<br>{'P' if what == 'f' else 'f'} = %{{customdata:.3f}}<extra></extra>")), r, c)
            fig.update_xaxes(tickvals=list(range(E)), ticktext=[f"e{e}" for e in range(E)], row=r, col=c)
            fig.update_yaxes(tickvals=list(range(L)), ticktext=[_("layer {l}").format(l=l) for l in range(L)],
                             autorange="reversed", showticklabels=(c == 1), row=r, col=c)
        fig.update_xaxes(title_text=_("expert"), row=2, col=c)
        fig.add_trace(go.Bar(
            x=[_("layer {l}").format(l=l) for l in range(L)], y=b.aux_per_layer,
            name=_("{domain} (aux_loss {aux:.3f}, {tokens} tokens)").format(domain=d, aux=b.aux_total, tokens=b.tokens),
            marker_color=DOMAIN_COLORS.get(d, pal.expert_color(c)),
            hovertemplate=f"{d}, %{{x}}: %{{y:.3f}}<extra></extra>"), 3, 1)
    fig.add_hline(y=K, line=dict(color=pal.DARK_GREY, dash="dash"), row=3, col=1,
                  annotation_text=_("perfectly balanced = K = {K}").format(K=K), annotation_position="bottom right",
                  annotation_bgcolor="rgba(255,255,255,0.85)")
    worst = E  # every token sent, confidently, to the same K experts: E * (sum of their P, about 1)
    fig.update_yaxes(title_text=_("loss"), range=[0, max(K * 1.5, max(b.aux_per_layer.max() for b in
                                                                    stats.domains.values()) * 1.15)],
                     row=3, col=1)
    title = (_("Load balance per domain: {E} experts, top-{K}; even routing gives f = P = 1/E = {even:.3f}")
             .format(E=E, K=K, even=1 / E)
             + "<br><sup>" + _("loss = K = {K} when perfectly balanced, up to E = {worst} when collapsed")
             .format(K=K, worst=worst) + "</sup>")
    alt = _(ALT).format(D=D, names=", ".join(names), E=E, K=K)
    fig.update_layout(**pal.base_layout(title, height=900, alt=alt))
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.08, x=0),
                      coloraxis=dict(colorscale=pal.SEQUENTIAL_ALT, cmin=0, cmax=vmax,
                                     colorbar=dict(title=dict(text=_("share")), len=0.55, y=0.72, thickness=14)))
    return fig


# -- live ---------------------------------------------------------------------------------------------

def balance_explorer(model, tokenizer, samples: Callable[[int, int], Mapping[str, Sequence[str]]],
                     n_samples: int = 24):
    """Live load balance: number of samples per domain, seed, and one expert switched off in every
    layer (its f drops to 0 and the loss rises). Each change re-runs the model on samples(n, seed),
    e.g. samples=mixtral_edu.tiny.corpus.samples_by_domain. Returns a LiveView (`.figure` is the
    figure on screen)."""
    from ..observe.capture import disable_expert, hooks
    from .widgets import dropdown, make_live_view, slider
    E = model.config.num_local_experts
    controls = {"n_samples": slider(_("samples per domain"), n_samples, 4, 64, step=4),
                "seed": slider(_("seed"), 0, 0, 20),
                "off": dropdown(_("switch off expert"),
                                [(_("none"), -1)] + [(_("e{e} (all layers)").format(e=e), e) for e in range(E)],
                                value=-1)}

    def render(n_samples, seed, off):
        with hooks(model, disable_expert(None, off) if off >= 0 else {}):
            return balance_figure(balance_stats(model, tokenizer, samples(n_samples, seed)))

    return make_live_view(controls, render, _("Load balance: each change runs the model on fresh samples"))
