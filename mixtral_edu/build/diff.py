"""Trace diff: the first call in the call chain where two runs' numbers part.

    d = trace_diff(model, {"attention_weights": mine})   # the model as it is vs with your piece
    d = trace_diff(model_a, other=model_b)                # two models, same input
    print(d)      # text;  d in Jupyter: HTML
    d.piece, d.where, d.max_diff, d.tolerance, d.sentence

Both runs make the same calls (by default a forward of a left-padded batch with the router
logits asked for, then a few greedy generation steps). Each run records, in call order, what
every piece returned (through the same slots `plug_in` uses, wrapped by observers that return
what they were given) and what the hook points between them saw. The recorded calls are
matched by name and occurrence; the first whose values differ by more than the tolerance is
reported with both values, where inside the tensor they start to differ (layer, row, head,
query, key, ...), and the chapter that teaches the piece. A call recorded while one of your
functions was running (e.g. the forward inside your greedy_step) is charged to that function
unless it is itself one of your pieces. Everything is put back when the runs end.
"""
from __future__ import annotations

import html
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from . import pieces as P
from .plug import RUNNING, PieceError, Rebinder, plan, plug_in

ROWS = ("row", "position", "channel")
# What each hook point shows: (piece or None, what computes it when no piece does, chapter, axis names)
HOOKS: Dict[str, Tuple[Optional[str], str, str, Tuple[str, ...]]] = {
    "hook_embed": (None, "embed_tokens", "04_model_forward", ROWS),
    "hook_mask": ("build_4d_mask", "", "04_model_forward", ("row", "", "query", "key")),
    "hook_pattern": ("attention_weights", "", "06_attention", ("row", "head", "query", "key")),
    "hook_z": ("attention_weights", "", "06_attention", ROWS),
    "hook_attn_out": (None, "o_proj", "06_attention", ROWS),
    "hook_resid_mid": (None, "the residual add after attention", "05_decoder_layer", ROWS),
    "hook_router_logits": (None, "the router (gate)", "07_moe", ("token", "expert")),
    "hook_topk_indices": ("route", "", "07_moe", ("token", "choice")),
    "hook_topk_weights": ("route", "", "07_moe", ("token", "choice")),
    "block_sparse_moe.hook_out": ("dispatch", "", "07_moe", ROWS),
    "hook_resid_post": (None, "the decoder layer", "05_decoder_layer", ROWS),
    "hook_logits": (None, "lm_head", "03_causal_lm_forward", ("row", "position", "vocab id")),
    "hook_next_tokens": ("greedy_step", "", "01_generation_loop", ("row",)),
}
HEADS = ("row", "head", "position", "dim")
# The function slots observed, with their axis names
FUNCTIONS = {"rotate_half": HEADS, "apply_rotary_pos_emb": HEADS, "repeat_kv": ("row", "head", "key", "dim"),
             "load_balancing_loss_func": ()}
PARTS = {"apply_rotary_pos_emb": ("queries", "keys"), "route": ("weights", "experts")}

# User-facing strings (plain literals, one place).
T_HEADER = "trace diff: {a} vs {b}, {n} calls compared"
T_SAME = "no difference: every one of the {n} calls agrees within the tolerance (largest difference {worst:.1e})."
T_FIRST = "first difference: {name}  ->  {who}"
T_CALL = "  in forward call {call} ({phase}){layer}"
T_WHERE = "  where: {where}"
T_MAX = "  max |{a} - {b}| = {diff} > tolerance {tol}"
T_TOL = "{atol:g} + {rtol:g} * |{a}|"
T_EXACT = "0 (bit for bit)"
T_KIND = "  {what}"
T_AGREE = "agree before it: {items}"
T_NONE_AGREE = "nothing was compared before it."
T_ERROR = "the {b} run raised {kind}: {error}"
T_PLUG_ERROR = "could not plug in: {error}"
T_MISSING = "({n} calls of {a} had no counterpart in {b} and were not compared)"
S_FINE = "your {names} {verb} fine; "
S_DIFF = "your {piece} differs{at} {where}."
S_DIFF_OTHER = "the runs first differ in {who}{at} {where}."
S_IN_CALL = "{what} (in {call})"
S_RAISED = "your {piece} raised {kind} ({chapter_short})."
S_NO_FIT = "your {piece} does not fit where it plugs in ({chapter_short})."
S_SAME = "every piece agrees."
W_SHAPE = "shape {a} vs {b}"
W_DTYPE = "dtype {a} vs {b}"
W_TYPE = "{a} vs {b}"
W_NUMBER = "{a} {x}, {b} {y}"
CHAPTER = "chapter {nn}, notebooks/{stem}.ipynb"


# -- recording ------------------------------------------------------------------------------------

@dataclass
class Call:
    """One recorded call: what it returned, and where in the run it happened."""

    name: str                    # e.g. "model.layers.0.self_attn.hook_pattern", "model.layers.1.input_layernorm"
    piece: Optional[str]         # the piece that computes it, if any
    label: str                   # what computes it, when no piece does
    chapter: str
    dims: Tuple[str, ...]
    value: Any
    forward: int                 # index of the model forward it belongs to (prepare: the next one)
    layer: Optional[int]
    running: Tuple[str, ...]     # the learner's functions running when it was recorded
    occurrence: int = 0

    @property
    def key(self) -> Tuple[str, int]:
        return self.name, self.occurrence


def _snapshot(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, (tuple, list)):
        return tuple(_snapshot(v) for v in x)
    return x


class Recorder:
    """Observers on the slots and hook points of one model; `calls` in call order."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: List[Call] = []
        self.forwards: List[dict] = []       # per model forward: B, T, and whether a cache came in
        self._count: Counter = Counter()
        self._layer: Optional[int] = None

    def _add(self, name, kind, value, forward=None) -> None:
        piece, label, chapter, dims = kind
        call = Call(name, piece, label, chapter, dims, _snapshot(value),
                    len(self.forwards) - 1 if forward is None else forward, self._layer, tuple(RUNNING))
        call.occurrence = self._count[name]
        self._count[name] += 1
        self.calls.append(call)

    def attach(self, rebinder: Rebinder) -> None:
        from ..modeling.causal_lm import MixtralForCausalLM
        model = self.model
        for name, point in model.hook_points().items():
            suffix = next((s for s in HOOKS if name.endswith(s)), None)
            if name.endswith("hook_resid_pre"):
                self._on_point(rebinder, point, self._layer_start(name))
            elif suffix is not None:
                self._on_point(rebinder, point, self._point_observer(name, HOOKS[suffix]))
        for fname, dims in FUNCTIONS.items():
            piece = P.PIECES[fname]
            piece.slot.replace(rebinder, model, self._function_observer(piece, dims))
        P.NORM.replace(rebinder, model, self._norm_observer)
        if isinstance(model, MixtralForCausalLM):
            P.PREPARE.replace(rebinder, model, self._prepare_observer)
        top = model.forward

        def forward(*args, **kwargs):
            x = kwargs.get("input_ids", args[0] if args else None)
            x = kwargs.get("inputs_embeds") if x is None else x
            past = kwargs.get("past_key_values")
            cached = past is not None and (len(past) > 0 if isinstance(past, (tuple, list))
                                           else past.get_seq_length() > 0)
            self.forwards.append({"B": x.shape[0], "T": x.shape[1], "cached": cached})
            self._layer = None
            return top(*args, **kwargs)
        rebinder.set(model, "forward", forward)

    def _on_point(self, rebinder, point, fn) -> None:
        point.fns.append(fn)

        def remove():
            for i, f in enumerate(point.fns):
                if f is fn:
                    del point.fns[i]
                    return
        rebinder.on_close(remove)

    def _layer_start(self, name: str) -> Callable:
        index = int(name.split("layers.")[1].split(".")[0])

        def observe(x, point):
            self._layer = index
        return observe

    def _point_observer(self, name: str, kind) -> Callable:
        def observe(x, point):
            self._add(name, kind, x)  # returns None: the tensor goes on unchanged
        return observe

    def _function_observer(self, piece, dims) -> Callable:
        def make(owner, current):
            def observed(*args):
                out = current(*args)
                where = f"model.layers.{self._layer}.self_attn." if self._layer is not None else ""
                self._add(where + piece.name, (piece.name, "", piece.chapter, dims), out)
                return out
            return observed
        return make

    def _norm_observer(self, norm, current) -> Callable:
        path = next(n for n, m in self.model.named_modules() if m is norm)
        kind = ("rms_norm", "", P.PIECES["rms_norm"].chapter, ROWS)

        def forward(hidden_states):
            if path.endswith("model.norm") or path == "norm":
                self._layer = None
            out = current(hidden_states)
            self._add(path, kind, out)
            return out
        return forward

    def _prepare_observer(self, model, current) -> Callable:
        kind = ("position_ids_from_mask", "", P.PIECES["position_ids_from_mask"].chapter, ("row", "position"))

        def prepare_inputs_for_generation(*args, **kwargs):
            out = current(*args, **kwargs)
            self._add("prepare_inputs_for_generation: position_ids", kind, out.get("position_ids"),
                      forward=len(self.forwards))
            return out
        return prepare_inputs_for_generation


def record(model, run: Callable, pieces: Optional[Dict[str, Callable]] = None) -> Tuple[Recorder, Any, Any]:
    """(recorder, run's result, the exception it raised or None); pieces plugged in for the run."""
    recorder = Recorder(model)
    result = error = None
    with torch.no_grad():
        torch.manual_seed(0)
        try:
            with (plug_in(model, pieces) if pieces else nullcontext()):
                with Rebinder() as rebinder:
                    recorder.attach(rebinder)
                    result = run(model)
        except Exception as err:  # noqa: BLE001  reported by the diff; the model is already restored
            error = err
    return recorder, result, error


# -- comparing ------------------------------------------------------------------------------------

@dataclass
class Mismatch:
    what: str                         # "values", "shape", "dtype", "type"
    text: str = ""
    part: Optional[int] = None        # which element of a pair
    index: Optional[Tuple[int, ...]] = None
    count: int = 0
    total: int = 0
    max_diff: float = 0.0
    bad: Optional[torch.Tensor] = None
    a: Optional[torch.Tensor] = None
    b: Optional[torch.Tensor] = None


def default_tolerance(x: Any) -> Tuple[float, float]:
    """(atol, rtol): 1e-5 and 1e-5 in float32/float64; 0 and 0 (bit for bit) in half precisions."""
    t = x[0] if isinstance(x, tuple) and x else x
    if isinstance(t, torch.Tensor) and t.dtype not in (torch.float32, torch.float64):
        return 0.0, 0.0
    return 1e-5, 1e-5


def compare(a: Any, b: Any, atol: float, rtol: float = 0.0) -> Optional[Mismatch]:
    """None when |a - b| <= atol + rtol * |a| everywhere (NaN equals NaN, inf equals inf), else what differs."""
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            m = compare(x, y, atol, rtol)
            if m is not None:
                m.part = i
                return m
        return None
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor) or type(a) is not type(b):
            return Mismatch("type", W_TYPE.format(a=_kind(a), b=_kind(b)))
        return None if a == b or (isinstance(a, float) and abs(a - b) <= atol + rtol * abs(a)) else \
            Mismatch("values", f"{a!r} vs {b!r}", max_diff=float("nan"))
    if a.shape != b.shape:
        return Mismatch("shape", W_SHAPE.format(a=tuple(a.shape), b=tuple(b.shape)))
    if a.dtype != b.dtype:
        return Mismatch("dtype", W_DTYPE.format(a=a.dtype, b=b.dtype))
    if a.is_floating_point():
        x, y = a.double(), b.double()
        diff = (x - y).abs()
        same = (x == y) | (diff <= atol + rtol * x.abs()) | (x.isnan() & y.isnan())
    else:
        diff = (a.long() - b.long()).abs().double()
        same = a == b
    bad = ~same
    if not bool(bad.any()):
        return None
    index = tuple(int(i) for i in bad.nonzero()[0]) if bad.dim() else ()
    finite = diff[bad & diff.isfinite()]
    worst = float(finite.max()) if finite.numel() == int(bad.sum()) else float("nan")
    return Mismatch("values", index=index, count=int(bad.sum()), total=bad.numel(), max_diff=worst,
                    bad=bad, a=a, b=b)


def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor {tuple(x.shape)} {x.dtype}"
    return type(x).__name__


def _fmt(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 or v != v else f"{v:.3e}"


def locate(m: Mismatch, dims: Tuple[str, ...], bt: Optional[Tuple[int, int]], labels=("ours", "yours")) -> str:
    """'row 0, head 2, query 3, from key 5 on (14 of 972 values differ)' for the first differing entry;
    for a number, both values; for a shape, dtype or type, what differs."""
    if m.what != "values" or m.index is None:
        return m.text
    if not m.index:
        return W_NUMBER.format(a=labels[0], b=labels[1], x=_fmt(float(m.a)), y=_fmt(float(m.b)))
    names = list(dims) if len(dims) == len(m.index) else [f"dim {i}" for i in range(len(m.index))]
    parts = []
    for name, i in zip(names[:-1], m.index[:-1]):
        if name == "token" and bt is not None and bt[1]:
            parts += [f"row {i // bt[1]}", f"position {i % bt[1]}"]
        elif name:
            parts.append(f"{name} {i}")
    row = m.bad[m.index[:-1]] if len(m.index) > 1 else m.bad
    cols = [int(c) for c in row.nonzero().flatten()]
    last = names[-1]
    if last == "token" and bt is not None and bt[1]:
        parts.append(f"row {cols[0] // bt[1]}, position {cols[0] % bt[1]}")
    elif len(cols) == 1:
        parts.append(f"{last} {cols[0]}")
    elif cols == list(range(cols[0], row.numel())) and parts:
        parts.append(f"from {last} {cols[0]} on")
    elif cols == list(range(cols[0], cols[-1] + 1)):
        parts.append(f"{last}s {cols[0]} to {cols[-1]}")
    else:
        parts.append(f"{last}s {', '.join(map(str, cols[:6]))}{', ...' if len(cols) > 6 else ''}")
    if "head" in names[:-1]:  # which heads differ at all: often the clearest clue (repeat_kv, masks per head)
        axis = names.index("head")
        heads = [int(h) for h in m.bad.transpose(0, axis).flatten(1).any(1).nonzero().flatten()]
        parts.append(f"heads differing: {', '.join(map(str, heads))}")
    return f"{', '.join(parts)} ({m.count} of {m.total} values differ)"


def excerpt(m: Mismatch, width: int = 8) -> Tuple[str, List[str], List[str], List[bool]]:
    """(the slice shown, values of a, values of b, differs?) along the last axis around the first difference."""
    if m.a is None or m.index is None:
        return "", [], [], []
    if not m.index:
        return "", [_fmt(float(m.a))], [_fmt(float(m.b))], [True]
    head, j = m.index[:-1], m.index[-1]
    n = m.a.shape[-1]
    start = max(0, min(j - 2, n - width))
    stop = min(n, start + width)
    a, b, bad = m.a[head][start:stop], m.b[head][start:stop], m.bad[head][start:stop]
    where = "[" + ", ".join([str(i) for i in head] + [f"{start}:{stop}"]) + "]"
    return where, [_fmt(float(v)) for v in a], [_fmt(float(v)) for v in b], [bool(x) for x in bad]


# -- the result ---------------------------------------------------------------------------------

@dataclass
class TraceDiff:
    """What trace_diff found; print it, or show it in a notebook."""

    labels: Tuple[str, str]
    plugged: Tuple[str, ...]
    n_compared: int
    first: Optional[Call] = None
    mismatch: Optional[Mismatch] = None
    tolerance: Tuple[float, float] = (0.0, 0.0)   # (atol, rtol)
    phase: str = ""
    bt: Optional[Tuple[int, int]] = None
    agreed: Dict[str, int] = field(default_factory=dict)
    error: Optional[BaseException] = None
    plug_error: Optional[BaseException] = None
    missing: int = 0
    worst: float = 0.0

    @property
    def diverged(self) -> bool:
        return self.first is not None or self.error is not None or self.plug_error is not None

    @property
    def piece(self) -> Optional[str]:
        """The piece charged with the first difference (or the error), else None."""
        if self.first is not None:
            c = self.first
            if c.piece in self.plugged:
                return c.piece
            return c.running[-1] if c.running else c.piece
        for err in (self.plug_error, self.error):
            if isinstance(err, PieceError) and err.piece:
                return err.piece
        return None

    @property
    def who(self) -> str:
        """The piece, or what computes the first differing call when no piece does."""
        return self.piece or (self.first.label if self.first is not None else "")

    @property
    def chapter(self) -> Optional[str]:
        if self.piece in P.PIECES:
            return P.PIECES[self.piece].chapter
        return self.first.chapter if self.first is not None else None

    @property
    def name(self) -> Optional[str]:
        return None if self.first is None else self.first.name

    @property
    def where(self) -> str:
        if self.first is None:
            return ""
        layer = "" if self.first.layer is None else f"layer {self.first.layer}, "
        part = PARTS.get(self.first.piece, ("first", "second"))
        which = "" if self.mismatch.part is None else f"the {part[self.mismatch.part]}, "
        where = locate(self.mismatch, self.first.dims, self.bt, self.labels)
        if self.mismatch.what != "values":
            where = S_IN_CALL.format(what=where, call=self.first.name)
        return layer + which + where

    @property
    def max_diff(self) -> Optional[float]:
        return None if self.mismatch is None else self.mismatch.max_diff

    @property
    def tolerance_text(self) -> str:
        atol, rtol = self.tolerance
        return T_TOL.format(atol=atol, rtol=rtol, a=self.labels[0]) if atol or rtol else T_EXACT

    def _chapter_text(self) -> str:
        return "" if not self.chapter else CHAPTER.format(nn=self.chapter[:2], stem=self.chapter)

    @property
    def sentence(self) -> str:
        fine = [p for p in self.plugged if p in self.agreed and p != self.piece]
        start = S_FINE.format(names=", ".join(fine), verb="is" if len(fine) == 1 else "are") if fine else ""
        if self.first is not None:
            at = " at" if self.mismatch.what == "values" and self.mismatch.index else ":"
            if self.piece in self.plugged:
                end = S_DIFF.format(piece=self.piece, where=self.where, at=at)
            else:
                end = S_DIFF_OTHER.format(who=self.who, where=self.where, at=at)
            return (start + end)[:1].upper() + (start + end)[1:] + f" ({self._chapter_text()})"
        err = self.plug_error or self.error
        if err is not None:
            end = (S_NO_FIT if self.plug_error is not None else S_RAISED).format(
                piece=self.piece or "code", kind=type(err).__name__, chapter_short=self._chapter_text())
            return (start + end)[:1].upper() + (start + end)[1:]
        return S_SAME

    def to_text(self) -> str:
        a, b = self.labels
        lines = [T_HEADER.format(a=a, b=b, n=self.n_compared)]
        if self.plug_error is not None:
            return "\n".join(lines + [T_PLUG_ERROR.format(error=self.plug_error)])
        if self.first is not None:
            c, m = self.first, self.mismatch
            who = self.who + (f" ({self._chapter_text()})" if self.chapter else "")
            lines.append(T_FIRST.format(name=c.name, who=who))
            lines.append(T_CALL.format(call=c.forward, phase=self.phase,
                                       layer="" if c.layer is None else f", layer {c.layer}"))
            lines.append(T_WHERE.format(where=self.where))
            if m.what == "values":
                diff = "nan" if m.max_diff != m.max_diff else f"{m.max_diff:.3g}"
                lines.append(T_MAX.format(a=a, b=b, diff=diff, tol=self.tolerance_text))
                where, xa, xb, _ = excerpt(m)
                if xa:
                    lines += [f"  {a:>6}{where}: {' '.join(xa)}", f"  {b:>6}{where}: {' '.join(xb)}"]
            else:
                lines.append(T_KIND.format(what=m.text))
        elif self.error is None:
            lines.append(T_SAME.format(n=self.n_compared, worst=self.worst))
        if self.error is not None:
            lines.append(T_ERROR.format(b=b, kind=type(self.error).__name__, error=self.error))
        if self.agreed:
            lines.append(T_AGREE.format(items=", ".join(f"{k} ({v})" for k, v in self.agreed.items())))
        elif self.diverged:
            lines.append(T_NONE_AGREE)
        if self.missing:
            lines.append(T_MISSING.format(n=self.missing, a=a, b=b))
        lines.append(self.sentence)
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<TraceDiff: {self.sentence}>"

    def _repr_html_(self) -> str:
        a, b = self.labels
        colour = "#b35806" if self.diverged else "#1b7837"
        esc = html.escape
        rows = []
        if self.first is not None:
            m = self.mismatch
            rows.append(("first difference", f"<code>{esc(self.first.name)}</code>"))
            rows.append(("computed by", f"<b>{esc(self.who)}</b> ({esc(self._chapter_text())})"))
            rows.append(("call", esc(f"forward call {self.first.forward} ({self.phase})")))
            rows.append(("where", esc(self.where)))
            if m.what == "values":
                diff = "nan" if m.max_diff != m.max_diff else f"{m.max_diff:.3g}"
                rows.append(("largest difference", esc(f"{diff} (tolerance {self.tolerance_text})")))
                where, xa, xb, bad = excerpt(m)
                if xa:
                    cell = lambda v, d: f'<td style="{"background:#fdd" if d else ""}">{v}</td>'  # noqa: E731
                    table = (f'<table style="font-size:11px"><tr><th>{esc(a)}{esc(where)}</th>'
                             + "".join(cell(v, d) for v, d in zip(xa, bad)) + f"</tr><tr><th>{esc(b)}{esc(where)}</th>"
                             + "".join(cell(v, d) for v, d in zip(xb, bad)) + "</tr></table>")
                    rows.append(("values", table))
        for err in (self.plug_error, self.error):
            if err is not None:
                rows.append(("error", esc(f"{type(err).__name__}: {err}")))
        if self.agreed:
            rows.append(("agree before it", esc(", ".join(f"{k} ({v})" for k, v in self.agreed.items()))))
        body = "".join(f'<tr><td style="color:#555;padding-right:10px;vertical-align:top">{k}</td><td>{v}</td></tr>'
                       for k, v in rows)
        head = esc(T_HEADER.format(a=a, b=b, n=self.n_compared))
        return (f'<div style="border-left:4px solid {colour};padding:4px 10px;margin:4px 0;font-size:13px">'
                f'<div style="color:#555">{head}</div><div style="font-weight:bold;color:{colour};margin:4px 0">'
                f'{esc(self.sentence)}</div><table>{body}</table></div>')


# -- the entry point ----------------------------------------------------------------------------

def default_inputs(model, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of 3 rows (9, 7 and 5 real tokens) of ids that are not special tokens."""
    config = model.config
    special = {config.pad_token_id, config.bos_token_id, *([config.eos_token_id]
               if isinstance(config.eos_token_id, int) else list(config.eos_token_id or []))}
    allowed = torch.tensor([i for i in range(config.vocab_size) if i not in special])
    g = torch.Generator().manual_seed(seed)
    ids = allowed[torch.randint(len(allowed), (3, 9), generator=g)]
    mask = torch.ones_like(ids)
    for row, pads in enumerate((0, 2, 4)):
        ids[row, :pads] = config.pad_token_id if config.pad_token_id is not None else 0
        mask[row, :pads] = 0
    return ids, mask


def standard_run(input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int = 4) -> Callable:
    """run(model): one forward with the router logits (so the aux loss is computed), then greedy generation."""
    def run(model):
        model(input_ids=input_ids, attention_mask=attention_mask, output_router_logits=True, use_cache=False)
        return model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens)
    return run


def trace_diff(model, pieces: Optional[Dict[str, Callable]] = None, *, other=None, run: Optional[Callable] = None,
               input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
               max_new_tokens: int = 4, atol: Optional[float] = None, rtol: Optional[float] = None,
               labels: Optional[Tuple[str, str]] = None) -> TraceDiff:
    """Run `model` as it is and `other` (default: `model` again) with `pieces` plugged in; compare.

    run(model) makes the calls (default: `standard_run` on input_ids / attention_mask, or on
    `default_inputs(model)`). A value agrees when |a - b| <= atol + rtol * |a|; by default
    atol = rtol = 1e-5 in float32, 0 (bit for bit) in bfloat16 and float16; integers exactly.
    Returns a TraceDiff naming the first call that differs.
    """
    if run is None:
        if input_ids is None:
            input_ids, attention_mask = default_inputs(model)
        run = standard_run(input_ids, attention_mask, max_new_tokens)
    labels = labels or (("ours", "yours") if other is None else ("A", "B"))
    pieces = dict(pieces or {})
    learner_model = model if other is None else other
    if pieces:
        try:
            plan(learner_model, pieces)       # checks only: names, signatures, slots
        except PieceError as err:             # the pieces do not fit: nothing to run
            return TraceDiff(labels, tuple(pieces), 0, plug_error=err)
    reference, _, ref_error = record(model, run)
    if ref_error is not None:
        raise ref_error
    learner, _, error = record(learner_model, run, pieces)
    diff = TraceDiff(labels, tuple(pieces), 0, error=error)
    theirs = {c.key: c for c in learner.calls}
    agreed: Dict[str, int] = {}
    for call in reference.calls:
        twin = theirs.get(call.key)
        if twin is None:
            diff.missing += 1
            continue
        tol = default_tolerance(call.value)
        tol = (tol[0] if atol is None else atol, tol[1] if rtol is None else rtol)
        m = compare(call.value, twin.value, *tol)
        diff.n_compared += 1
        if m is not None:
            diff.first, diff.mismatch, diff.tolerance = twin, m, tol
            fwd = reference.forwards[min(call.forward, len(reference.forwards) - 1)]
            diff.bt = (fwd["B"], fwd["T"])
            diff.phase = (f"{'decode' if fwd['cached'] else 'prefill'}, B={fwd['B']}, T={fwd['T']}")
            break
        if m is None and isinstance(call.value, torch.Tensor) and call.value.is_floating_point() and call.value.numel():
            diff.worst = max(diff.worst, float((call.value.double() - twin.value.double()).abs().max()))
        who = twin.piece if twin.piece in pieces else (twin.running[-1] if twin.running else twin.piece)
        if who:
            agreed[who] = agreed.get(who, 0) + 1
    diff.agreed = agreed
    return diff
