"""What a trace holds: call nodes, per-step records, and the facts written into them.

`mixtral_edu.trace` (observe/tracer.py) records; this module is what it records into. A
traced module call notes snapshots (`snapshot`: shapes, dtypes, small values read at call
time, set with `Node.note`) and registers its facts as functions of recorded data
(`Node.later`); a `Node` writes both out the first time it is read. Also here: the
summaries (`summarize`) and the facts per kind of call. How a tree is shown (text, HTML,
JSON) is observe/render.py. Shape legend: mixtral_edu/modeling/config.py.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch

from ..modeling.cache import Cache, DynamicCache
from ..modeling.outputs import ModelOutput

HF = "transformers.models.mixtral.modeling_mixtral."
GEN = "transformers.generation.utils.GenerationMixin."
MASKS = "transformers.modeling_attn_mask_utils."
_now = time.perf_counter
MAX_VALUES = 64       # an integer tensor with at most this many elements shows its values in the tree
MAX_FLOAT_VALUES = 16  # the same for float tensors (their few values rarely teach much)
MAX_KEPT = 1 << 20    # step records keep tensors up to this many elements (mask, weights, probs, logits)


# -- plain-data summaries ---------------------------------------------------------------

def is_meta(t: torch.Tensor) -> bool:
    return t.device.type == "meta"


def _clean(v: Any) -> Any:
    """JSON-safe numbers: inf and nan become strings (JSON has no literal for them)."""
    if isinstance(v, list):
        return [_clean(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def _rounded(v: Any) -> Any:
    if isinstance(v, list):
        return [_rounded(x) for x in v]
    return round(v, 4) if math.isfinite(v) else str(v)  # JSON has no literal for inf / nan


def keep(t: Any, limit: int = MAX_KEPT) -> Optional[torch.Tensor]:
    """A detached copy for a record, so later in-place ops cannot change it (None if too big)."""
    if not isinstance(t, torch.Tensor) or t.numel() > limit:
        return None
    return (t.detach() if t.requires_grad else t).clone()


def is_legacy_cache(x: Any) -> bool:
    return (isinstance(x, tuple) and len(x) > 0 and isinstance(x[0], tuple) and len(x[0]) == 2
            and isinstance(x[0][0], torch.Tensor))


_DTYPE_NAMES: Dict[torch.dtype, str] = {}   # names made once: str(dtype) and device.type are slow
_DEVICE_NAMES: Dict[torch.device, str] = {}
PLAIN = (bool, int, str)  # summaries of these are the values themselves


def summarize(x: Any) -> Any:
    """JSON-able description: tensors by shape/dtype (+ values when small), caches by length."""
    if isinstance(x, torch.Tensor):
        return unsnap(_tensor_snap(x))
    if x is None or type(x) in PLAIN:
        return x
    if type(x) is DynamicCache:  # ours: the lengths are right there (get_seq_length per layer costs more)
        return {"cache": "DynamicCache", "tokens_per_layer": [k.shape[-2] for k in x.key_cache]}
    if isinstance(x, Cache):  # layers fill one by one during a forward: show each one's length
        n_layers = len(x) if hasattr(type(x), "__len__") else 1  # a Cache subclass may not count its layers
        return {"cache": type(x).__name__, "tokens_per_layer": [x.get_seq_length(i) for i in range(n_layers)]}
    if is_legacy_cache(x):
        return {"cache": "legacy tuple", "tokens_per_layer": [k.shape[2] for k, _ in x]}
    if isinstance(x, ModelOutput):
        return {k: summarize(getattr(x, k)) for k in x.keys()}
    if isinstance(x, dict):
        return {str(k): summarize(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [summarize(v) for v in x]
    if isinstance(x, (bool, int, float, str)):
        return _clean(x)
    return type(x).__name__


_TENSOR = object()  # marks a tensor snapshot: (_TENSOR, shape, dtype, device, values or None)


def unsnap(v: Any) -> Any:
    """A snapshot (see `snapshot`) written out as `summarize` would have written it at the time."""
    if type(v) is tuple and v and v[0] is _TENSOR:
        _, shape, dtype, device, vals = v
        s = {"shape": list(shape), "dtype": _DTYPE_NAMES.get(dtype) or _dtype_name(dtype),
             "device": _DEVICE_NAMES.get(device) or _device_name(device)}
        if vals is not None:
            s["values"] = _rounded(vals) if dtype.is_floating_point else vals
        return s
    if type(v) is list:
        return [unsnap(x) for x in v]
    if type(v) is dict:
        return {k: unsnap(x) for k, x in v.items()}
    return v


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


def _device_name(device: torch.device) -> str:
    name = _DEVICE_NAMES[device] = device.type
    return name


def _tensor_snap(x: torch.Tensor) -> tuple:
    """(_TENSOR, shape, dtype, device, values): values (nested lists) only for a small tensor with
    data (not on meta); small means at most MAX_VALUES elements, MAX_FLOAT_VALUES if floating."""
    n = x.numel()
    vals = None
    if (n <= MAX_FLOAT_VALUES or (n <= MAX_VALUES and not x.is_floating_point())) and not x.is_meta:
        vals = x.tolist()  # rounded when written out: a few Python floats, cheaper than tensor ops
    return (_TENSOR, x.shape, x.dtype, x.device, vals)


def snapshot(x: Any) -> Any:
    """What a module call's argument or result was, noted as cheaply as possible.

    A tensor becomes a tuple (_TENSOR, shape, dtype, device, its values if it is small: read now,
    since the tensor may change later); anything else goes through `summarize` at once. `unsnap`
    writes a snapshot out when a node is read. (A memory of tensors already noted, tried for the
    tensors that pass from one module to the next, cost more per miss than it saved per hit.)
    """
    if type(x) is torch.Tensor:
        return _tensor_snap(x)
    if x is None or type(x) in PLAIN:
        return x
    if type(x) is tuple and not is_legacy_cache(x):  # module results: (hidden, cache), (out, logits), ...
        return [snapshot(v) for v in x]
    return summarize(x)


def fmt_summary(s: Any) -> str:
    """One line for a summary: '(2, 5) int64 = [[...]]' (values of integer tensors only)."""
    if isinstance(s, dict) and "shape" in s:
        text = f"({', '.join(map(str, s['shape']))}) {s['dtype']}"
        if "values" in s and not s["dtype"].startswith(("float", "bfloat")):
            text += f" = {s['values']}"
        return text
    if isinstance(s, dict) and "cache" in s:
        return f"{s['cache']}(tokens per layer {s['tokens_per_layer']})"
    if isinstance(s, dict):
        return ", ".join(f"{k} {fmt_summary(v)}" for k, v in s.items())
    if isinstance(s, list):
        return "(" + ", ".join(fmt_summary(v) for v in s) + ")"
    return repr(s)


# -- the records ----------------------------------------------------------------------------

class Node:
    """One call in the tree.

    name: our function ("MixtralSparseMoeBlock.forward"); mirrors: the transformers 4.41.2
    function it re-implements (full dotted path); path: the module's name in the model
    ("model.layers.0.block_sparse_moe"; "" when not a module); label: short text for the
    tree; args / result: summaries (see `summarize`); info: facts worth reading (JSON-able);
    time_ms: wall time, children and tracing included (None for nodes that only report
    what a call prepared); error: the exception's repr if the call raised; depth: steps from
    the root; t0: time.perf_counter() when the call began (default: now).

    While a trace runs, a module call only notes what it saw: shapes and small values as
    snapshots (`snapshot`), and the facts to write as functions of recorded data. `args`,
    `result` and `info` are written out the first time they are read, so a traced call pays
    for the recording, and a tree nobody reads never pays for its text.
    """

    __slots__ = ("name", "mirrors", "path", "label", "children", "time_ms", "error", "depth", "_t0",
                 "_args", "_result", "_info", "_later", "_written")

    def __init__(self, name: str, mirrors: str, path: str = "", label: str = "", args: Optional[dict] = None,
                 result: Any = None, info: Optional[dict] = None, depth: int = 0, t0: Optional[float] = None) -> None:
        self.name, self.mirrors, self.path, self.label = name, mirrors, path, label
        self._args = {} if args is None else args
        self._result = result
        self._info = info                     # made when first needed: most nodes have no facts
        self._later: Optional[list] = None   # functions that add facts to info, run on first read
        self._written = False                 # args / result turned from snapshots into summaries
        self.children: List[Node] = []
        self.time_ms: Optional[float] = None
        self.error: Optional[str] = None
        self.depth, self._t0 = depth, _now() if t0 is None else t0

    def _write(self) -> None:
        if not self._written:
            self._written = True
            self._args = {k: unsnap(v) for k, v in self._args.items()}
            self._result = unsnap(self._result)

    def note(self, args: Optional[Dict[str, Any]] = None, result: Any = None) -> None:
        """Set args and/or result from snapshots (see `snapshot`): written out when first read."""
        if args is not None:
            self._args = {k: unsnap(v) for k, v in args.items()} if self._written else args
        if result is not None:
            self._result = unsnap(result) if self._written else result

    def noted_arg(self, name: str) -> Any:
        """Argument `name` as noted (a snapshot, or its summary once written); None if absent."""
        return self._args.get(name)

    @property
    def args(self) -> Dict[str, Any]:
        self._write()
        return self._args

    @args.setter
    def args(self, value: Dict[str, Any]) -> None:
        self._write()
        self._args = value

    @property
    def result(self) -> Any:
        self._write()
        return self._result

    @result.setter
    def result(self, value: Any) -> None:
        self._write()
        self._result = value

    @property
    def info(self) -> Dict[str, Any]:
        if self._info is None:
            self._info = {}
        if self._later:
            later, self._later = self._later, None
            for add in later:
                add(self._info)
        return self._info

    @info.setter
    def info(self, value: Dict[str, Any]) -> None:
        self._later, self._info = None, value

    def end(self, result: Any = None, error: Optional[str] = None) -> None:
        """The call returned (or raised): its wall time, a snapshot of its result, its error."""
        self.time_ms = round((_now() - self._t0) * 1e3, 3)
        if result is not None:
            snap = snapshot(result)
            self._result = unsnap(snap) if self._written else snap  # read while open: write it now
        self.error = error

    def later(self, add: Callable[[dict], None]) -> None:
        """Add facts to `info` when it is first read: add(info) must use recorded data only."""
        if self._later is None:
            self._later = []
        self._later.append(add)

    def walk(self) -> Iterator["Node"]:
        yield self
        for c in self.children:
            yield from c.walk()

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "mirrors": self.mirrors, "path": self.path,
                "args": self.args, "result": self.result, "info": self.info, "time_ms": self.time_ms,
                "error": self.error, "children": [c.to_dict() for c in self.children]}

    def __repr__(self) -> str:
        return f"Node({self.label or self.name!r}, {len(self.children)} children)"


def _tokens_per_expert(topk_indices: Optional[torch.Tensor]) -> Dict[int, List[int]]:
    if topk_indices is None or is_meta(topk_indices):
        return {}
    out: Dict[int, List[int]] = {}
    for n, row in enumerate(topk_indices.tolist()):
        for e in row:
            out.setdefault(e, []).append(n)
    return dict(sorted(out.items()))


@dataclass
class LayerRecord:
    """What one decoder layer did in one step (tensors are detached copies; None = not seen).

    cache_before / cache_after: keys this layer's cache held before / after the call;
    q_shape (B, H, T, D), k_shape / v_shape (B, Hkv, T, D): after rotary, before the cache;
    weights_shape and attn_weights (B, H, T, S): only when eager attention formed them;
    router_logits (N, E) model dtype, router_probs (N, E) fp32, topk_indices (N, K),
    topk_weights (N, K): the router's choice per token n = b * T + t.
    """

    layer: int
    cache_before: Optional[int] = None
    cache_after: Optional[int] = None
    q_shape: Optional[tuple] = None
    k_shape: Optional[tuple] = None
    v_shape: Optional[tuple] = None
    weights_shape: Optional[tuple] = None
    attn_weights: Optional[torch.Tensor] = None
    router_logits: Optional[torch.Tensor] = None
    router_probs: Optional[torch.Tensor] = None
    topk_indices: Optional[torch.Tensor] = None
    topk_weights: Optional[torch.Tensor] = None

    def tokens_per_expert(self) -> Dict[int, List[int]]:
        """{expert: the flattened tokens n that chose it}; empty on meta (no data)."""
        return _tokens_per_expert(self.topk_indices)

    def to_dict(self) -> dict:
        d = {k: (summarize(v) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        d["tokens_per_expert"] = {str(k): v for k, v in self.tokens_per_expert().items()}
        return d


@dataclass
class StepRecord:
    """One generation step (or one direct forward call) as data, for plots and checks.

    index: step number (0 = prefill); kind: "prefill", "decode", "no cache" (generate with
    use_cache=False) or "forward" (a direct model call); node: its subtree (None if trimmed).
    prepare: what prepare_inputs_for_generation did, or None: {"branch": text,
    "input_ids_before" / "input_ids_after": shapes, "cache_length", "past_length",
    "max_cache_length" (absent without a cache), "position_ids": the (B, T) it built or None}; input_ids (B, T) fed to the model (None for inputs_embeds);
    attention_mask (B, S): the 2D mask as fed; position_ids (B, T) or (1, T) as the layers
    used them; past_length: usable past length P; legacy_cache_converted: a tuple or None
    cache was turned into a DynamicCache; mask_4d (B, 1, T, S) additive, or None;
    layers: {layer index: LayerRecord} for the traced layers; logits_last (B, V): fp32
    logits at the last position; next_tokens (B,): ids appended (None outside generate).
    """

    index: int
    kind: str
    node: Optional[Node] = None
    prepare: Optional[dict] = None
    input_ids: Optional[torch.Tensor] = None
    attention_mask: Optional[torch.Tensor] = None
    position_ids: Optional[torch.Tensor] = None
    past_length: Optional[int] = None
    legacy_cache_converted: Optional[bool] = None
    mask_4d: Optional[torch.Tensor] = None
    layers: Dict[int, LayerRecord] = field(default_factory=dict)
    logits_last: Optional[torch.Tensor] = None
    next_tokens: Optional[torch.Tensor] = None
    time_ms: Optional[float] = None

    def layer(self, i: int) -> LayerRecord:
        rec = self.layers.get(i)
        if rec is None:
            rec = self.layers[i] = LayerRecord(i)
        return rec

    def to_dict(self) -> dict:
        out = {k: summarize(v) for k, v in self.__dict__.items() if k not in ("node", "layers")}
        out["layers"] = {str(i): r.to_dict() for i, r in self.layers.items()}
        return out


# -- facts, worked out from what the calls received and returned ---------------------------------

def prepare_facts(input_ids: torch.Tensor, pkv: Any, attention_mask: Optional[torch.Tensor]) -> dict:
    """Which branch prepare_inputs_for_generation takes, read off its inputs (it only slices)."""
    n_ids = input_ids.shape[1]
    facts: Dict[str, Any] = {"input_ids_before": list(input_ids.shape)}
    if pkv is None:
        facts["branch"] = "no cache (past_key_values is None): input_ids fed whole"
        return facts
    if isinstance(pkv, Cache):
        cache_length, past_length, max_cache_length = pkv.get_seq_length(), pkv.seen_tokens, pkv.get_max_length()
    else:  # legacy tuple: layer 0's keys are (B, Hkv, P, D)
        cache_length = past_length = pkv[0][0].shape[2]
        max_cache_length = None
    facts.update(cache_length=cache_length, past_length=past_length, max_cache_length=max_cache_length)
    if attention_mask is not None and attention_mask.shape[1] > n_ids:
        facts["branch"] = (f"attention_mask longer than input_ids ({attention_mask.shape[1]} > {n_ids}): keep the "
                           f"last {attention_mask.shape[1] - past_length} ids")
    elif past_length < n_ids:
        facts["branch"] = (f"past_length < len(input_ids) ({past_length} < {n_ids}): drop the {past_length} ids "
                           "the cache holds, input_ids[:, past_length:]")
    else:
        facts["branch"] = f"input_ids already holds only new tokens ({past_length} >= {n_ids}): kept as is"
    return facts


def prepare_info(facts: dict, position_ids: Optional[torch.Tensor], pkv: Any) -> dict:
    """The prepare node's facts as readable lines (the record keeps them as fields)."""
    info = {"branch": facts["branch"]}
    if "past_length" in facts:
        info["cache"] = (f"cache_length {facts['cache_length']}, past_length {facts['past_length']}, "
                         f"max_cache_length {facts['max_cache_length']}")
    before, after = facts["input_ids_before"], facts["input_ids_after"]
    info["input_ids sliced"] = f"{tuple(before)} -> {None if after is None else tuple(after)}"
    info["position_ids"] = _position_text(position_ids, pkv)
    return info


def _position_text(position_ids: Optional[torch.Tensor], pkv: Any) -> str:
    if position_ids is None:
        return "None (no attention_mask): the model will use arange(P, P + T)"
    snap = _tensor_snap(position_ids)
    how = "attention_mask.cumsum(-1) - 1, pads set to 1" + (", last T columns" if pkv is not None else "")
    big = snap[4] is None and not is_meta(position_ids)
    return f"{how}: {fmt_summary(unsnap(snap))}" + (" (big)" if big else "")


def mask_facts(snap: Any, kept: Optional[torch.Tensor], sdpa: bool, info: dict) -> None:
    if snap is None:
        info["4D mask"] = ("None: SDPA's own is_causal (or no mask) gives the same answer" if sdpa
                           else "None: nothing to hide (one new token, no padding, no window)")
        return
    info["4D mask"] = (f"{fmt_summary(unsnap(snap))} additive: 0 = visible, finfo(dtype).min = "
                       "hidden (future, outside the window, or padding)")
    if kept is not None:
        info.update(_mask_picture(kept))


def _mask_picture(mask4d: torch.Tensor, max_side: int = 16, max_rows: int = 4) -> dict:
    """Per batch row: one line per query t, '■' where the key is visible, '·' where hidden."""
    if is_meta(mask4d) or mask4d.shape[2] > max_side or mask4d.shape[3] > max_side:
        return {}
    visible = (mask4d[:, 0] == 0).tolist()                                      # (B, T, S)
    return {f"mask[{b}] (query t down, key s across; ■ visible, · hidden)":
            ["".join("■" if v else "·" for v in row) for row in visible[b]]
            for b in range(min(len(visible), max_rows))}


def attn_facts(q_shape, k_shape, v_shape, cache_before, cache_after, weights_shape, info: dict) -> None:
    info["q, k, v after rotary"] = f"q {q_shape}, k {k_shape}, v {v_shape}"
    if cache_before is not None:
        info["cache: keys this layer holds"] = f"{cache_before} -> {cache_after}"
    info["attention weights"] = (f"{weights_shape}: softmax over S keys, fp32" if weights_shape
                                 else "not formed (sdpa: one fused kernel)")


def routing_facts(idx: torch.Tensor, w: Optional[torch.Tensor], T: int, input_ids: Optional[torch.Tensor],
                   E: int, K: int, info: dict) -> None:
    info["router"] = (f"gate: (N, C) -> logits (N={idx.shape[0]}, E={E}) "
                      f"-> softmax (fp32) -> top-{K} -> renormalise to sum 1")
    if is_meta(idx) or w is None:
        info["routing"] = "unknown on meta (no values)"
        return
    ids = input_ids.reshape(-1).tolist() if input_ids is not None and input_ids.numel() == idx.shape[0] else None
    lines = []
    for n, (es, ws) in enumerate(zip(idx.tolist(), w.float().tolist())):
        b, t = divmod(n, T)
        token = f" id {ids[n]}" if ids else ""
        lines.append(f"n={n} (b{b} t{t}{token}): " + ", ".join(f"e{e} {x:.3f}" for e, x in zip(es, ws)))
    info["top-k per token (expert weight)"] = lines
    load = _tokens_per_expert(idx)
    info["expert load (tokens)"] = {f"e{e}": len(ns) for e, ns in load.items()}
    idle = [f"e{e}" for e in range(E) if e not in load]
    if idle:  # the tracer gives them no node (see tracer._lean_forward)
        info["called on an empty (0, C) batch, as in transformers (no node of their own)"] = idle


def expert_facts(table: dict, idx: torch.Tensor, expert: int, info: dict) -> None:
    if "table" not in table:  # the first of this layer call's experts to be read makes it
        table["table"] = _tokens_per_expert(idx)
    info["tokens n routed here"] = table["table"].get(expert, [])


def logits_facts(logits_last: Optional[torch.Tensor], info: dict) -> None:
    info["logits"] = "lm_head in the model dtype, then .float(): the last position picks the token"
    if logits_last is not None:
        info["last position, top 3 per row (id: logit)"] = _top_lines(logits_last)


def next_token_facts(tokens: torch.Tensor, logits_last: Optional[torch.Tensor], do_sample: Optional[bool],
                      info: dict) -> None:
    info["chosen per row"] = _token_lines(tokens, logits_last, do_sample)


def _top_lines(logits: torch.Tensor, k: int = 3) -> List[str]:
    vals, ids = logits.float().topk(min(k, logits.shape[-1]), dim=-1)
    return [f"row {b}: " + ", ".join(f"{i}: {v:.3f}" for i, v in zip(ids[b].tolist(), vals[b].tolist()))
            for b in range(logits.shape[0])]


def _token_lines(tokens: torch.Tensor, logits: Optional[torch.Tensor], do_sample: Optional[bool]) -> List[str]:
    if is_meta(tokens):
        return ["unknown on meta"]
    best = None if logits is None else logits.argmax(-1).tolist()
    lines = []
    for b, tok in enumerate(tokens.tolist()):
        if best is None:
            why = ""
        elif tok == best[b]:
            why = " = argmax of the last logits" + (" (sampled)" if do_sample else " (greedy)")
        elif do_sample:
            why = f", sampled (argmax was {best[b]})"
        elif do_sample is None:  # generate was called as a function: its arguments are unknown here
            why = f", not the argmax {best[b]}: sampled, pad for a finished row, or set by a hook"
        else:
            why = f", not the argmax {best[b]}: pad for a finished row, or set by a hook on hook_next_tokens"
        lines.append(f"row {b}: {tok}{why}")
    return lines
