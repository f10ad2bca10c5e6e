"""How a trace is shown: a text tree, a collapsible HTML tree, plain data (JSON).

    trace_text(tr)    what print(tr) shows          trace_html(tr)   what Jupyter shows
    trace_dict(tr)    tr.to_dict(): JSON-able data  trace_json(tr)   the same as a string

Reads what the tracer recorded (observe/records.py) and writes nothing back, except that
reading a node writes out its noted snapshots and facts (Node.args / result / info).
"""
from __future__ import annotations

import html
import json
import uuid
from typing import Any, List

from .records import HF, Node, fmt_summary

TEXT_TOKENS = 12      # router lines per MoE node in the text view (the data has them all)


# -- the whole trace ------------------------------------------------------------------------------

def trace_header(tr) -> str:
    """One line: the model's sizes, attention, dtype, steps traced and time."""
    c = tr.model.config
    dtype = str(next(tr.model.parameters()).dtype).replace("torch.", "")
    return (f"trace of {type(tr.model).__name__} (L={c.num_hidden_layers} C={c.hidden_size} "
            f"H={c.num_attention_heads} Hkv={c.num_key_value_heads} E={c.num_local_experts} "
            f"K={c.num_experts_per_tok} V={c.vocab_size}, {tr.backbone._attn_implementation}, {dtype}"
            f"{', meta: shapes only' if tr.meta else ''}): {len(tr.steps)} step(s) traced"
            + (f" in {tr.time_ms:.1f} ms" if tr.time_ms is not None else ""))


def trace_text(tr, mirrors: bool = False) -> str:
    """The tree as text. mirrors=True names every node's transformers counterpart; by
    default only those not named like ours (Mixtral*.forward mirrors its namesake)."""
    lines = [trace_header(tr), "(hf: the transformers 4.41.2 function a node mirrors; Mixtral*.forward mirrors "
             "transformers.models.mixtral.modeling_mixtral.<same name>)"]
    for i, root in enumerate(tr.roots):
        _text(root, "", i == len(tr.roots) - 1, lines, mirrors)
    return "\n".join(lines)


def trace_html(tr) -> str:
    """A collapsible tree (<details> per node), styled for this block only."""
    uid = "mxe-" + uuid.uuid4().hex[:8]
    body = "".join(_html(r) for r in tr.roots)
    return (f'<div class="mxe-trace" id="{uid}"><style>{_CSS.replace("#ID", "#" + uid)}</style>'
            f'<div class="hdr">{html.escape(trace_header(tr))}</div>{body}</div>')


def trace_dict(tr) -> dict:
    """Everything as JSON-able data: header, options, the tree (roots) and the step records."""
    c = tr.model.config
    sizes = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
             "num_local_experts", "num_experts_per_tok", "vocab_size")
    return {"header": trace_header(tr), "model": type(tr.model).__name__,
            "config": {k: getattr(c, k) for k in sizes},
            "attn_implementation": tr.backbone._attn_implementation, "meta": tr.meta,
            "options": {"depth": tr.depth, "layers": None if tr.layers is None else sorted(tr.layers),
                        "steps": None if tr.step_filter is None else sorted(tr.step_filter)},
            "time_ms": tr.time_ms, "roots": [r.to_dict() for r in tr.roots],
            "steps": [s.to_dict() for s in tr.steps]}


def trace_json(tr, **json_kwargs: Any) -> str:
    return json.dumps(trace_dict(tr), **json_kwargs)


# -- one node -----------------------------------------------------------------------------------------

def _short_mirror(m: str) -> str:
    return m.replace("transformers.models.mixtral.", "").replace("transformers.", "")


def _obvious_mirror(node: Node) -> bool:
    """Our Mixtral*.forward mirrors transformers' function of the same name: no need to say it."""
    return node.mirrors == HF + node.name


def _detail_lines(node: Node) -> List[str]:
    lines = []
    top = node.name in ("MixtralForCausalLM.generate", "MixtralForCausalLM.forward", "MixtralModel.forward",
                        "MixtralForCausalLM.prepare_inputs_for_generation")
    shown = [f"{k} {fmt_summary(v)}" for k, v in node.args.items()
             if isinstance(v, dict) or (top and v is not None and v is not False)]
    ins = "; ".join(shown)
    outs = "" if node.result is None else fmt_summary(node.result)
    if ins and outs and len(ins) + len(outs) < 90:
        lines.append(f"{ins} -> {outs}")
    else:
        lines += ([f"in:  {ins}"] if ins else []) + ([f"out: {outs}"] if outs else [])
    for k, v in node.info.items():
        if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            lines.append(f"{k}:")
            lines += [f"  {x}" for x in v[:TEXT_TOKENS]]
            if len(v) > TEXT_TOKENS:
                lines.append(f"  ... {len(v) - TEXT_TOKENS} more (all in tr.to_dict())")
        elif isinstance(v, dict):
            lines.append(f"{k}: " + ", ".join(f"{a} {b}" for a, b in v.items()))
        else:
            lines.append(f"{k}: {v}")
    if node.error:
        lines.append(f"raised: {node.error}")
    return lines


def _text(node: Node, prefix: str, last: bool, out: List[str], mirrors: bool) -> None:
    time_text = "" if node.time_ms is None else f"  [{node.time_ms:.2f} ms]"
    mirror = "" if not mirrors and _obvious_mirror(node) else f"  (hf: {_short_mirror(node.mirrors)})"
    out.append(f"{prefix}{'└─ ' if last else '├─ '}{node.label}{time_text}{mirror}")
    inner = prefix + ("   " if last else "│  ")
    bar = "│ " if node.children else "  "
    out += [inner + bar + line for line in _detail_lines(node)]
    for i, child in enumerate(node.children):
        _text(child, inner, i == len(node.children) - 1, out, mirrors)


_CSS = """#ID{font:12px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#222}
#ID .hdr{font-weight:bold;margin-bottom:4px}
#ID details{margin-left:14px;border-left:1px solid #ddd;padding-left:6px}
#ID summary{cursor:pointer;white-space:nowrap}
#ID .t{color:#6a6a6a;margin-left:8px}#ID .m{color:#4a7a2a;margin-left:8px}#ID .e{color:#c33}
#ID .d{white-space:pre-wrap;color:#444;margin:1px 0 3px 12px}"""


def _html(node: Node) -> str:
    time_text = "" if node.time_ms is None else f'<span class="t">{node.time_ms:.2f} ms</span>'
    err = '<span class="e"> raised</span>' if node.error else ""
    details = "\n".join(_detail_lines(node))
    opened = " open" if node.depth < 2 else ""
    return (f'<details{opened}><summary><b>{html.escape(node.label)}</b>{time_text}{err}'
            f'<span class="m" title="{html.escape(node.mirrors)}">hf: {html.escape(_short_mirror(node.mirrors))}'
            f'</span></summary><div class="d">{html.escape(details)}</div>'
            + "".join(_html(c) for c in node.children) + "</details>")
