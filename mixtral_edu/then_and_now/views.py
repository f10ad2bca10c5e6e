"""Chapter 11's views: three sources side by side, the window's boundary, the logit gap, the changes.

They draw what both sides computed (masks and logits from this process and from the
5.23 worker); none of them works anything out about the model.
"""
from __future__ import annotations

import html
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import plotly.graph_objects as go
import torch

from ..viz import palette as pal
from ..viz.source import Columns, Listing, columns

NEW_LABEL = "transformers 5.23.0, read in .venv-tf5: "
OURS_LABEL = "mixtral_edu: "
BOTH, NEITHER, OLD_ONLY, NEW_ONLY = 0, 1, 2, 3
CELL_NAMES = {BOTH: "visible in both", NEITHER: "hidden in both", OLD_ONLY: "visible in 4.41.2 only",
              NEW_ONLY: "visible in 5.23 only"}
CELL_COLOURS = {BOTH: pal.OKABE_ITO["bluish_green"], NEITHER: pal.LIGHT_GREY, OLD_ONLY: pal.OKABE_ITO["vermillion"],
                NEW_ONLY: pal.OKABE_ITO["blue"]}
WINDOW_TITLE = "Sliding window W = {w}: which keys each query sees (query rows: {t}, keys: {s})"
GAP_TITLE = "Largest |logit difference| per position, mixtral_edu (4.41.2 rules) vs transformers 5.23"
GAP_Y, GAP_X = "max |Δ logit|", "position (query index)"
WINDOW_LINE = "position W = {w}"
NOT_MEASURED = "—"


def then_and_now(tf5, old: Any = None, new: Union[None, str, Sequence[str]] = None, ours: Any = None,
                 max_lines: Optional[int] = None) -> Columns:
    """transformers 4.41.2's object | 5.23's dotted name(s), read in the worker | ours, as columns."""
    import transformers  # the suite's 4.41.2, in this process
    listings: List[Listing] = []
    if old is not None:
        listings.append(Listing.of(old, f"transformers {transformers.__version__}: ", max_lines))
    names = [new] if isinstance(new, str) else list(new or [])
    found = tf5.source(*names) if names else {}
    for name in names:
        where = f"{found[name]['file']}:{found[name]['line']}"
        listings.append(Listing(f"{NEW_LABEL}{name.removeprefix('transformers.')} ({where})",
                                found[name]["source"], max_lines))
    if ours is not None:
        listings.append(Listing.of(ours, OURS_LABEL, max_lines))
    return columns(*listings)


def window_figure(old_visible: torch.Tensor, new_visible: torch.Tensor, sliding_window: int,
                  rows: Optional[Tuple[int, int]] = None, first_query: int = 0, height: int = 420) -> go.Figure:
    """Heatmap of two (T, S) visibility masks: cells both see, neither sees, only one sees.

    rows picks a slice of the queries; first_query is the absolute position of row 0 (P after a cache).
    """
    old, new = old_visible.bool(), new_visible.bool()
    code = torch.full(old.shape, NEITHER)
    code[old & new], code[old & ~new], code[~old & new] = BOTH, OLD_ONLY, NEW_ONLY
    first, last = rows if rows is not None else (0, old.shape[0])
    z = code[first:last].tolist()
    y = list(range(first_query + first, first_query + last))
    colours = [CELL_COLOURS[i] for i in range(4)]
    fig = go.Figure(go.Heatmap(
        z=z, x=list(range(old.shape[1])), y=y, zmin=-0.5, zmax=3.5,
        colorscale=pal.discrete_colorscale(colours), xgap=1, ygap=1,
        customdata=[[CELL_NAMES[c] for c in row] for row in z],
        hovertemplate="query %{y}, key %{x}: %{customdata}<extra></extra>",
        colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=[CELL_NAMES[i] for i in range(4)], len=0.8)))
    fig.update_layout(**pal.base_layout(WINDOW_TITLE.format(w=sliding_window, t=old.shape[0], s=old.shape[1]),
                                        height=height))
    fig.update_xaxes(title="key position")
    fig.update_yaxes(title="query position", autorange="reversed", tickvals=y if len(y) <= 16 else None)
    return fig


def gap_figure(gaps: torch.Tensor, sliding_window: Optional[int] = None) -> go.Figure:
    """Bars of the per-position logit gap, with the window's edge marked."""
    fig = go.Figure(go.Bar(x=list(range(len(gaps))), y=gaps.tolist(), marker_color=pal.OKABE_ITO["vermillion"],
                           hovertemplate="position %{x}: %{y:.2e}<extra></extra>"))
    fig.update_layout(**pal.base_layout(GAP_TITLE, height=330))
    fig.update_xaxes(title=GAP_X)
    fig.update_yaxes(title=GAP_Y)
    if sliding_window is not None:
        fig.add_vline(x=sliding_window - 0.5, line_dash="dash", line_color=pal.DARK_GREY,
                      annotation_text=WINDOW_LINE.format(w=sliding_window), annotation_position="top left")
    return fig


# -- the closing table ------------------------------------------------------------------------------
# (what changed, 4.41.2, 5.23.0, what we measured: a format string over the notebook's `measured` dict)
CHANGES: List[Tuple[str, str, str, str]] = [
    ("Checkpoint keys",
     "block_sparse_moe.experts.{e}.w1 / w3 / w2.weight: 3·E tensors per layer",
     "mlp.experts.gate_up_proj (E, 2I, C) and down_proj (E, C, I), fused at load time; save_pretrained writes "
     "the per-expert keys back",
     "ours → 5.23: {ckpt_problems} missing/unexpected keys, max |Δ logit| {ckpt_to_new:.1e}; 5.23's save → ours: "
     "{ckpt_from_new:.1e}; a fused-key folder → ours: {ckpt_fused:.1e}"),
    ("MoE block",
     "MixtralSparseMoeBlock = gate (Linear) + E × MixtralBlockSparseTop2MLP; returns (hidden, router_logits)",
     "gate = MixtralTopKRouter → (logits, scores, indices); experts = MixtralExperts (3-D weights); "
     "returns hidden only",
     "layer-0 block output, float32: max |Δ| {moe_fp32:.1e}"),
    ("Experts implementations",
     "one Python loop over all E experts",
     "eager (loop over experts hit), batched_mm, grouped_mm (the default); deepgemm and sonicmoe (they do not "
     "run on this CPU)",
     "float32, vs ours: eager {exp_eager:.1e}, batched_mm {exp_batched_mm:.1e}, grouped_mm {exp_grouped_mm:.1e}; "
     "bfloat16 logits, grouped_mm vs eager: {bf16_grouped_vs_eager:.3g}"),
    ("Routing weights' dtype",
     "top-k weights cast back to the model dtype",
     "kept in float32",
     "bfloat16 tiny model: max |Δ logit| {bf16_cast:.3g}; ours with the weights kept in float32 (a hook): "
     "{bf16_uncast:.1e}"),
    ("Load-balancing loss",
     "all layers concatenated, then one softmax and top-k",
     "accumulated layer by layer (histc, scatter_add)",
     "largest |Δ| over the {aux_prefixes} layer prefixes: {aux_gap:.1e} (loss ≈ {aux_value:.4f})"),
    ("Attention",
     "one class per kernel: MixtralAttention, MixtralSdpaAttention, MixtralFlashAttention2",
     "one MixtralAttention; the kernel comes from ALL_ATTENTION_FUNCTIONS",
     "tiny model, vs ours: 5.23's defaults (sdpa, grouped_mm) {attn_sdpa:.1e}; eager {attn_eager:.1e} (next row)"),
    ("Attention score scaling",
     "q·kᵀ / sqrt(D)",
     "q·kᵀ * D ** -0.5 (eager_attention_forward)",
     "eager, tiny model: max |Δ logit| {scale_gap:.1e}; ours scaled 5.23's way (a hook): {scale_rescaled:.1e}"),
    ("Sliding-window mask",
     "W + 1 keys per query",
     "W keys per query (masking_utils.sliding_window_overlay)",
     "{mask_cells} cells differ, all at key = query − W; logits agree before position {first_diff} = W "
     "(max {before_gap:.1e}) and differ from it on; 5.23 with sliding_window = W + 1: {w_plus_one_gap:.1e}"),
    ("KV cache",
     "DynamicCache of per-layer tensor lists; legacy tuples in and out",
     "DynamicCache(config=...) of per-layer DynamicSlidingWindowLayer / DynamicLayer; no legacy tuples",
     "after {cache_tokens} tokens, keys kept per layer: ours {cache_old}, 5.23 {cache_new} (= W − 1)"),
    ("Input preparation",
     "MixtralForCausalLM.prepare_inputs_for_generation",
     "GenerationMixin.prepare_inputs_for_generation (generic); position ids made once by generate",
     "greedy tokens identical: {greedy_same}; pad positions get {pad_pos_old} then, {pad_pos_new} now"),
    ("cache_position",
     "made by generate; Mixtral's prepare_inputs_for_generation does not pass it on",
     "not made by generate (only for remote-code models that ask for it)",
     "5.23 forward calls that received cache_position: {cache_position_calls}"),
    ("logits_to_keep",
     "logits for every position, every step",
     "generate asks for the last position only",
     "prefill logits: ours {prefill_old}, 5.23 {prefill_new}"),
    ("Float upcast of the logits",
     "logits.float() inside MixtralForCausalLM.forward",
     "forward returns the model dtype; GenerationMixin._sample upcasts the last position",
     "bfloat16 model: forward logits {upcast_forward}; generate's step logits {upcast_generate}"),
    ("Router logits",
     "returned by every decoder layer, gathered by MixtralModel",
     "OutputRecorder hooks on MixtralTopKRouter, installed on first request",
     "router hooks {hooks_before} → {hooks_after}; max |Δ| to ours {router_gap:.1e}"),
]
TABLE_HEAD = ("What changed", "transformers 4.41.2 (chapters 00–10)", "transformers 5.23.0", "Measured here")


def _measured_text(template: str, measured: Dict[str, Any]) -> str:
    try:
        return template.format(**measured)
    except (KeyError, ValueError, TypeError):
        return NOT_MEASURED


def changes_rows(measured: Dict[str, Any]) -> List[Tuple[str, str, str, str]]:
    """CHANGES with the measured column filled in ('—' where a number is missing)."""
    return [(what, old, new, _measured_text(fmt, measured)) for what, old, new, fmt in CHANGES]


class ChangesTable:
    """The closing table; HTML in a notebook, plain text elsewhere."""

    def __init__(self, rows: Iterable[Tuple[str, str, str, str]]):
        self.rows = list(rows)

    def __repr__(self) -> str:
        return "\n".join(" | ".join(r) for r in [TABLE_HEAD] + self.rows)

    def _repr_html_(self) -> str:
        def cells(row, tag):
            return "".join(f"<{tag} style='text-align:left;vertical-align:top;padding:4px 8px;"
                           f"border-bottom:1px solid #ddd'>{html.escape(v)}</{tag}>" for v in row)
        body = "".join(f"<tr>{cells(r, 'td')}</tr>" for r in self.rows)
        return (f"<table style='border-collapse:collapse;font-size:12.5px'><tr>{cells(TABLE_HEAD, 'th')}</tr>"
                f"{body}</table>")


def changes_table(measured: Dict[str, Any]) -> ChangesTable:
    return ChangesTable(changes_rows(measured))
