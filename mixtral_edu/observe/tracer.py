"""See inside a call: a tree of what `generate` (or one forward pass) did, with live numbers.

    with mixtral_edu.trace(model) as tr:
        out = model.generate(input_ids, attention_mask=mask, max_new_tokens=4)
    print(tr)        # text tree, in call order
    tr               # in Jupyter: a collapsible HTML tree
    tr.to_dict()     # the same tree as plain data (tr.to_json(): as a JSON string)
    tr.steps         # one StepRecord per generation step: the tensors, for plots

The tree follows the real call chain (shape legend: mixtral_edu/modeling/config.py):

    generate
      step i: prefill | decode                   one turn of the generation loop
        prepare_inputs_for_generation            branch taken, ids sliced, position_ids built
        MixtralForCausalLM.forward
          model: MixtralModel.forward            cache conversion, past length P
            position_ids, embed_tokens, 4D mask  (B, T); (B, T) -> (B, T, C); (B, 1, T, S)
            layers.i: MixtralDecoderLayer.forward
              input_layernorm, self_attn         q/k/v shapes, cache length before -> after
              post_attention_layernorm, block_sparse_moe -> experts.e   top-k per token
            norm
          lm_head                                logits (B, T, V), top 3 at the last position
        next token                               the id appended to each row

How it watches: instance-level wrappers of the modules' `forward` (cheaper than torch
hooks, which push every call off nn.Module's fast path) and of `generate` /
`prepare_inputs_for_generation`, and functions on the model's HookPoints.
All are observers (they never return a value) and all are removed on exit, even after
an exception, so outputs are bit-for-bit those of an untraced call.

What it costs: during the run a module call only notes what it saw (shapes, small values,
the recorded tensors); the text of a node (its summaries and facts) is written the first
time the node is read, from those notes. The nodes, records and facts live in
observe/records.py; the text, HTML and JSON views in observe/render.py. See benchmarks/
for the measured slowdown.
"""
from __future__ import annotations

import inspect
import numbers
import time
import weakref
from functools import partial
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional

import torch
from torch import nn

from ..modeling.cache import Cache
from ..modeling.hook_points import HookPoint
from .capture import remove_fn, require_our_model
from .meta import routing_on_meta
from .records import (  # what a trace records into
    GEN, HF, MASKS, PLAIN, Node, StepRecord, attn_facts, expert_facts, is_legacy_cache, is_meta, keep,
    logits_facts, mask_facts, next_token_facts, prepare_facts, prepare_info, routing_facts, snapshot, summarize,
)
from .render import trace_dict, trace_header, trace_html, trace_json, trace_text

# the kinds of module a trace watches; _pre_<role> / _post_<role> read what each one saw
ROLES = ("causal_lm", "model", "embed", "layer", "norm", "attn", "moe", "expert", "lm_head")


# -- wrappers that any number of open traces can stack and remove in any order ---------------

_MISSING = object()


class _Shadows:
    """The instance-level wrappers open traces put on one object's attribute (a module's forward,
    the model's generate and prepare_inputs_for_generation).

    Each trace registers make(inner) -> wrapper. The attribute holds the chain of every open
    trace's wrapper, first entered innermost, rebuilt whenever a trace enters or leaves; so
    traces may exit in any order, and when the last one leaves, exactly what was there before
    (usually nothing: the class's method) is put back. If someone else replaced the attribute
    meanwhile, theirs is left alone.
    """

    def __init__(self) -> None:
        # obj -> {attr: [what was in obj.__dict__, what the innermost wrapper calls, [(trace, make)], installed]}
        self._chains: "weakref.WeakKeyDictionary[Any, Dict[str, list]]" = weakref.WeakKeyDictionary()

    def push(self, obj: Any, attr: str, owner: Any, make: Callable) -> None:
        chains = self._chains.setdefault(obj, {})
        if attr not in chains:
            chains[attr] = [obj.__dict__.get(attr, _MISSING), getattr(obj, attr), [], None]
        chains[attr][2].append((owner, make))
        self._install(obj, attr)

    def pop(self, obj: Any, attr: str, owner: Any) -> None:
        chain = self._chains.get(obj, {}).get(attr)
        if chain is None:
            return
        chain[2] = [(o, m) for o, m in chain[2] if o is not owner]
        self._install(obj, attr)

    def _install(self, obj: Any, attr: str) -> None:
        saved, base, layers, installed = self._chains[obj][attr]
        ours = installed is None or obj.__dict__.get(attr, _MISSING) is installed
        if not layers or not ours:
            if ours and installed is not None:
                if saved is _MISSING:
                    del obj.__dict__[attr]
                else:
                    obj.__dict__[attr] = saved
            del self._chains[obj][attr]
            if not self._chains[obj]:
                del self._chains[obj]
            return
        fn = base
        for _, make in layers:
            fn = make(fn)
        obj.__dict__[attr] = self._chains[obj][attr][3] = fn


_SHADOWS = _Shadows()


class _MetaFlag:
    """`routing_on_meta()` (observe/meta.py), on while at least one meta trace is open."""

    def __init__(self) -> None:
        self._users, self._patch = 0, None

    def acquire(self) -> None:
        if self._users == 0:
            self._patch = routing_on_meta()
            self._patch.__enter__()
        self._users += 1

    def release(self) -> None:
        self._users -= 1
        if self._users == 0:
            self._patch.__exit__(None, None, None)
            self._patch = None


_META_FLAG = _MetaFlag()


# -- the tracer ------------------------------------------------------------------------------

class Trace:
    """Context manager that records a tree of calls (see the module docstring).

    depth: keep tree nodes at most this deep (0: only the top call; None: all).
    layers: decoder layers to trace, e.g. [0] or range(2); others get no nodes and no records.
    steps: generation steps (or direct forward calls) to trace, counted from 0; others leave a stub.
    `depth` trims only the tree; `layers` and `steps` trim the records too.
    Reading: `roots` (top nodes), `steps` (StepRecords), `find(text)`, `nodes()`.
    """

    def __init__(self, model: nn.Module, depth: Optional[int] = None,
                 layers: Optional[Iterable[int]] = None, steps: Optional[Iterable[int]] = None):
        from ..modeling.causal_lm import MixtralForCausalLM
        from ..modeling.model import MixtralModel
        require_our_model(model, "trace()")
        if not isinstance(model, (MixtralForCausalLM, MixtralModel)):
            raise TypeError(f"trace() needs a mixtral_edu MixtralForCausalLM or MixtralModel, "
                            f"got {type(model).__name__}.")
        layers, steps = _check_options(depth, layers, steps, model.config.num_hidden_layers)
        self.model = model
        self.lm = model if isinstance(model, MixtralForCausalLM) else None
        self.backbone = model.model if self.lm is not None else model
        self.depth = depth
        self.layers = None if layers is None else {int(i) for i in layers}
        self.step_filter = None if steps is None else {int(i) for i in steps}
        self.meta = any(is_meta(p) for p in model.parameters())
        self.roots: List[Node] = []
        self.steps: List[StepRecord] = []
        self.time_ms: Optional[float] = None
        self._removers: List[Callable[[], None]] = []
        self._active = False
        self._reset()

    def _reset(self) -> None:
        # per open call of the top module or the backbone: (module, its node or None, muted, the
        # _cur to restore); the modules inside run through _lean_forward, which needs no frames
        self._frames: List[tuple] = []
        self._n_muted = 0                       # how many open frames are muted (so _muted() is O(1))
        self._tpe_for: Optional[torch.Tensor] = None  # the top-k indices self._tpe was computed from
        self._tpe: dict = {}  # {"table": tokens_per_expert}, filled by the first expert node read
        self._gen_node: Optional[Node] = None  # the open generate() call
        self._generating = False                # inside generate (prepare_inputs then begins a step)
        self._gen_kwargs: dict = {}
        self._n_steps = 0                       # steps begun, traced or not
        self._step: Optional[StepRecord] = None  # the open step's record (None when untraced)
        self._step_node: Optional[Node] = None  # its "step i" node (generate only; None if trimmed)
        self._step_open = self._step_skipped = self._step_forwarded = self._in_generate = False
        self._step_t0 = 0.0
        self._model_call: dict = {}             # facts of the open MixtralModel.forward call
        self._cur: Optional[Node] = None        # innermost open module call's node (callees hang under it)

    # -- reading -------------------------------------------------------------------------------
    def nodes(self) -> Iterator[Node]:
        """Every node, depth first, in call order."""
        for r in self.roots:
            yield from r.walk()

    def find(self, text: str) -> List[Node]:
        """Nodes whose name, path or mirrors contains `text`, in call order.

        e.g. find("block_sparse_moe"), find("layers.0."), find("prepare_inputs_for_generation").
        """
        return [n for n in self.nodes() if text in n.name or text in n.path or text in n.mirrors]

    # -- attach / detach -------------------------------------------------------------------------
    def __enter__(self) -> "Trace":
        if self._active:
            raise RuntimeError("This trace is already recording: open a new one with trace(model) to nest.")
        self.roots, self.steps, self.time_ms = [], [], None
        self._reset()
        self._active = True
        self._t0 = time.perf_counter()
        try:
            self._attach()
        except BaseException:
            self._detach()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self._detach()
        self.time_ms = round((time.perf_counter() - self._t0) * 1e3, 3)
        return False  # never swallow the exception

    def _attach(self) -> None:
        # the per-role readers, looked up once (not per module call)
        self._role_pre = {r: getattr(self, "_pre_" + r) for r in ROLES if hasattr(self, "_pre_" + r)}
        self._role_post = {r: getattr(self, "_post_" + r) for r in ROLES if hasattr(self, "_post_" + r)}
        if self.meta:  # a model with shapes only: let its MoE loop run (see observe/meta.py)
            _META_FLAG.acquire()
            self._removers.append(_META_FLAG.release)
        paths = {m: n for n, m in self.model.named_modules()}
        self._layer_of: Dict[nn.Module, int] = {}
        self._expert_of: Dict[nn.Module, int] = {}
        roles = [] if self.lm is None else [(self.lm, "causal_lm")]
        roles += [(self.backbone, "model"), (self.backbone.embed_tokens, "embed")]
        for layer in self.backbone.layers:
            moe, i = layer.block_sparse_moe, layer.layer_idx
            roles += [(layer, "layer"), (layer.input_layernorm, "norm"), (layer.self_attn, "attn"),
                      (layer.post_attention_layernorm, "norm"), (moe, "moe")]
            roles += [(e, "expert") for e in moe.experts]
            self._layer_of.update({moe: i, **{e: i for e in moe.experts}})
            self._expert_of.update({e: j for j, e in enumerate(moe.experts)})
            for kind in ("q", "k", "v", "pattern"):
                self._add_point_fn(getattr(layer.self_attn, "hook_" + kind), self._observer(kind, i))
            for kind in ("router_logits", "router_probs", "topk_indices", "topk_weights"):
                self._add_point_fn(getattr(moe, "hook_" + kind), self._observer(kind, i))
        roles.append((self.backbone.norm, "norm"))
        if self.lm is not None:
            roles.append((self.lm.lm_head, "lm_head"))
            self._add_point_fn(self.lm.hook_logits, self._observer("logits", None))
            self._add_point_fn(self.lm.hook_next_tokens, self._on_next_tokens)
            self._wrap("prepare_inputs_for_generation", self._wrapped_prepare)
            self._wrap("generate", self._wrapped_generate)
        for module, role in roles:
            self._hook_module(module, role, paths[module])

    def _detach(self) -> None:
        self._end_step()
        if self._gen_node is not None:
            self._finish(self._gen_node, error=self._gen_node.error)
        self._active = False
        try:
            for remove in reversed(self._removers):
                remove()
        finally:
            self._removers.clear()
            self._reset()
            # A wrapper someone still holds (e.g. `f = model.generate` taken inside the block) now only
            # calls through: the lean wrappers see a muted call, the others check _active.
            self._n_muted = 1

    def _hook_module(self, module: nn.Module, role: str, path: str) -> None:
        top = module is self.model  # the node's texts are the same on every call: make them once
        label = f"{type(module).__name__}.forward" if top else f"{_short(path)}: {_our_name(module)}"
        texts = (_our_name(module), _mirror(module, role), label)

        # An instance-level `forward` rather than torch forward hooks: nn.Module.__call__ then keeps
        # its fast path (no hooks registered), which matters when a forward is a few microseconds.
        if not (top or role == "model"):
            self._shadow(module, "forward", partial(self._lean_forward, module, role, path, texts))
            return

        def make(original: Callable) -> Callable:
            def forward(*args, **kwargs):
                if not self._active:  # a reference kept past the trace's exit: just call through
                    return original(*args, **kwargs)
                self._pre(module, role, path, texts, args, kwargs)
                try:
                    result = original(*args, **kwargs)
                except BaseException as err:
                    self._post(module, role, None, repr(err))
                    raise
                self._post(module, role, result, None)
                return result
            return forward

        self._shadow(module, "forward", make)

    def _lean_forward(self, module: nn.Module, role: str, path: str, texts: tuple, original: Callable) -> Callable:
        """The wrapper of a module inside the backbone (layers, norms, attention, MoE, experts, ...).

        It runs about a thousand times per traced generate on the tiny model, where a whole module
        call costs ~100 us, so everything that does not change between calls is settled here, once.
        """
        names, name_set = _param_names(module)
        pre, post = self._role_pre.get(role), self._role_post.get(role)
        is_layer = role == "layer"
        # an expert no token chose is called on an empty (0, C) batch, as in transformers: E - K of
        # them per layer in a decode step. It gets no node of its own (its MoE node lists it), which
        # keeps the tree readable and the trace about as cheap as before the loop called them.
        idle_skips = role == "expert" and not self.meta
        untraced = is_layer and self.layers is not None and module.layer_idx not in self.layers
        name, mirrors, label = texts
        max_depth = self.depth

        def muted_call(args, kwargs):
            self._n_muted += 1  # observers and callees read this: nothing to record in here
            try:
                return original(*args, **kwargs)
            finally:
                self._n_muted -= 1

        def forward(*args, **kwargs):
            if self._n_muted or self._step_skipped:
                return muted_call(args, kwargs)
            if idle_skips and args and isinstance(args[0], torch.Tensor) and args[0].shape[0] == 0:
                return muted_call(args, kwargs)
            bound = _bind_names(names, name_set, args, kwargs)
            if is_layer and self._model_call.get("first_layer"):
                self._model_call["first_layer"] = False
                self._on_first_layer(bound)
            if untraced:
                return muted_call(args, kwargs)
            parent = self._cur or self._step_node or self._gen_node
            depth = 0 if parent is None else parent.depth + 1
            node = None
            if max_depth is None or depth <= max_depth:
                node = Node(name, mirrors, path, label, depth=depth,
                            args={k: v if v is None or type(v) in PLAIN else snapshot(v) for k, v in bound.items()})
                (self.roots if parent is None else parent.children).append(node)
            if pre is not None:
                pre(module, node, bound)
            saved = self._cur
            if node is not None:
                self._cur = node
            try:
                result = original(*args, **kwargs)
            except BaseException as err:
                if node is not None:
                    node.end(error=repr(err))
                raise
            finally:
                self._cur = saved
            if post is not None:
                post(module, node, result)
            if node is not None:
                node.end(result)
            return result

        return forward

    def _add_point_fn(self, point: HookPoint, fn: Callable) -> None:
        point.fns.append(fn)
        self._removers.append(lambda: remove_fn(point, fn))

    def _wrap(self, attr: str, make: Callable) -> None:
        """Shadow one of the model's methods with make(the method)."""
        self._shadow(self.model, attr, make)

    def _shadow(self, obj: Any, attr: str, make: Callable[[Callable], Callable]) -> None:
        """Wrap obj.attr on this instance only, with make(what it wraps); undone on exit, whatever
        other traces did in between (see `_Shadows`)."""
        _SHADOWS.push(obj, attr, self, make)
        self._removers.append(lambda: _SHADOWS.pop(obj, attr, self))

    # -- nodes and steps ---------------------------------------------------------------------------
    def _muted(self) -> bool:
        return self._step_skipped or self._n_muted > 0

    def _parent(self) -> Optional[Node]:
        return self._cur or self._step_node or self._gen_node

    def _new_node(self, name: str, mirrors: str, label: str, path: str = "",
                  parent: Optional[Node] = None, index: Optional[int] = None) -> Optional[Node]:
        """A node under `parent` (default: the innermost open one), or None when too deep."""
        parent = self._parent() if parent is None else parent
        depth = 0 if parent is None else parent.depth + 1
        if self.depth is not None and depth > self.depth:
            return None
        node = Node(name, mirrors, path, label, depth=depth)
        siblings = self.roots if parent is None else parent.children
        siblings.insert(len(siblings) if index is None else index, node)
        return node

    @staticmethod
    def _finish(node: Optional[Node], result: Any = None, error: Optional[str] = None) -> None:
        if node is not None:
            node.end(result, error)

    def _begin_step(self, kind: str, in_generate: bool) -> None:
        self._end_step()
        index, self._n_steps = self._n_steps, self._n_steps + 1
        self._step_open, self._step_forwarded, self._in_generate = True, False, in_generate
        self._step_skipped = self.step_filter is not None and index not in self.step_filter
        self._step_t0 = time.perf_counter()
        self._step_node = None
        if in_generate:
            self._step_node = self._new_node(f"step {index} ({kind})", GEN + "_sample",
                                             f"step {index}: {kind}", parent=self._gen_node)
        if self._step_node is not None:
            self._step_node.info["loop"] = (
                f"not traced (steps={sorted(self.step_filter)})" if self._step_skipped else
                "one turn of the while loop in _sample: prepare inputs -> forward -> next token -> "
                "append it, grow the mask by a column of ones")
        self._step = None if self._step_skipped else StepRecord(index, kind, node=self._step_node)
        if self._step is not None:
            self.steps.append(self._step)

    def _end_step(self) -> None:
        if not self._step_open:
            return
        elapsed = round((time.perf_counter() - self._step_t0) * 1e3, 3)
        if self._step is not None:
            self._step.time_ms = elapsed
        if self._step_node is not None:
            self._step_node.time_ms = elapsed
        self._step, self._step_node = None, None
        self._step_open = self._step_skipped = self._in_generate = False

    # -- module hooks --------------------------------------------------------------------------------
    def _pre(self, module: nn.Module, role: str, path: str, texts: tuple, args: tuple, kwargs: dict) -> None:
        """Entering the top module or the backbone (the modules inside have `_lean_forward`)."""
        top = module is self.model
        if top and (not self._step_open or self._step_forwarded):
            self._begin_step("forward", in_generate=False)  # a direct model(...) call is a step of its own
        if top:
            self._step_forwarded = True
        muted = self._muted()
        if muted and role != "model" and not top:  # inside a muted call: nothing to read or record
            self._frames.append((module, None, True, self._cur))
            self._n_muted += 1
            return
        bound = _bind(module, args, kwargs)
        if role == "model":
            x = bound.get("input_ids")
            self._model_call = {"first_layer": True,
                                "T": (x if x is not None else bound["inputs_embeds"]).shape[1]}
        stub = top and self._step_skipped and not self._in_generate  # an untraced direct call: one line
        node = None
        if not muted or stub:
            node = self._new_node(*texts, path)
        if node is not None and stub:
            node.info["not traced"] = f"steps={sorted(self.step_filter)}"
        elif node is not None:
            node.note(args={k: v if v is None or type(v) in PLAIN else snapshot(v) for k, v in bound.items()})
            if top and self._step is not None and self._step.node is None:
                self._step.node = node
        self._frames.append((module, node, muted or stub, self._cur))
        if node is not None:
            self._cur = node
        self._n_muted += bool(muted or stub)
        if not (muted or stub) and role in self._role_pre:
            self._role_pre[role](module, node, bound)

    def _post(self, module: nn.Module, role: str, result: Any, error: Optional[str]) -> None:
        frame = None
        while self._frames:  # pop to this module's frame; an exception may have skipped inner ones
            frame = self._frames.pop()
            self._n_muted -= bool(frame[2])
            if frame[0] is module:
                break
        if frame is None or frame[0] is not module:
            return
        node, muted, self._cur = frame[1], frame[2], frame[3]
        if not muted and error is None and role in self._role_post:
            self._role_post[role](module, node, result)
        if node is not None:
            node.end(None if muted else result, error)
        if module is self.model and not self._in_generate:
            self._end_step()  # a direct call ends here; a generate step ends with its token

    def _pre_causal_lm(self, module, node, bound) -> None:
        if self._step is not None:
            self._step.input_ids = keep(bound.get("input_ids"))

    def _pre_model(self, module, node, bound) -> None:
        use_cache = module.config.use_cache if bound.get("use_cache") is None else bound["use_cache"]
        pkv, T = bound.get("past_key_values"), self._model_call["T"]
        if not use_cache:
            text, past, legacy = "use_cache=False: no cache, every position is computed again", 0, False
        elif pkv is None:
            text, past, legacy = ("None -> DynamicCache.from_legacy_cache(None); handed back as a legacy "
                                  "tuple (to_legacy_cache)"), 0, True
        elif is_legacy_cache(pkv):
            past, legacy = pkv[0][0].shape[2], True
            text = (f"legacy tuple ({len(pkv)} layers of (key, value), each (B, Hkv, {past}, D)) -> "
                    "DynamicCache.from_legacy_cache; to_legacy_cache() on return")
        else:
            past, legacy = pkv.get_usable_length(T), False
            text = f"{type(pkv).__name__} given: used as is, grown in place"
        self._model_call.update(past=past, output_attentions=bound.get("output_attentions"))
        if node is not None:
            node.info["past_key_values"] = text
            node.info["past length P (get_usable_length)"] = past
            skipped = [i for i in range(len(module.layers)) if self.layers is not None and i not in self.layers]
            if skipped:
                node.info["layers not traced"] = f"{skipped} (layers={sorted(self.layers)})"
        if self._step is not None:
            self._step.past_length, self._step.legacy_cache_converted = past, legacy
            self._step.attention_mask = keep(bound.get("attention_mask"))
            if self._step.input_ids is None:  # tracing the backbone alone
                self._step.input_ids = keep(bound.get("input_ids"))

    def _on_first_layer(self, bound: dict) -> None:
        """The backbone hands each layer the position_ids and 4D mask it prepared: read them once."""
        positions, mask4d = bound.get("position_ids"), bound.get("attention_mask")
        if self._step is not None:
            self._step.position_ids, self._step.mask_4d = keep(positions), keep(mask4d)
        parent = self._parent()
        if parent is None or parent.name != "MixtralModel.forward":
            return
        past, T = self._model_call.get("past", 0), self._model_call["T"]
        pos = self._new_node("position_ids", HF + "MixtralModel.forward (the position_ids block)",
                             "position_ids", index=0)  # computed before the embedding, so listed first
        if pos is not None:
            pos.info["source"] = ("given by the caller" if parent.noted_arg("position_ids") is not None else
                                  f"not given: arange(P, P + T) = arange({past}, {past + T}), one row for the batch")
            pos.note(result=snapshot(positions))
        sdpa = (self.backbone._attn_implementation == "sdpa"
                and not (self._model_call.get("output_attentions") or self.backbone.config.output_attentions))
        fn = "_prepare_4d_causal_attention_mask" + ("_for_sdpa" if sdpa else "")
        mask = self._new_node(fn[1:], MASKS + fn, f"4D mask: {fn[1:]}")
        if mask is None:
            return
        noted = snapshot(mask4d)
        mask.note(args={"attention_mask": parent.noted_arg("attention_mask"), "past_key_values_length": past},
                  result=noted)
        kept = None if self._step is None else self._step.mask_4d  # the picture is drawn from this copy
        mask.later(partial(mask_facts, noted, kept, sdpa))

    def _pre_attn(self, module, node, bound) -> None:
        pkv = bound.get("past_key_value")
        if self._step is not None and isinstance(pkv, Cache):
            self._step.layer(module.layer_idx).cache_before = pkv.get_seq_length(module.layer_idx)

    # The facts below are written when a node is first read (Node.later), from values noted now.
    def _post_attn(self, module, node, result) -> None:
        if self._step is None:
            return
        rec = self._step.layer(module.layer_idx)
        if isinstance(result[2], Cache):
            rec.cache_after = result[2].get_seq_length(module.layer_idx)
        if node is not None:
            node.later(partial(attn_facts, rec.q_shape, rec.k_shape, rec.v_shape, rec.cache_before,
                               rec.cache_after, rec.weights_shape))

    def _post_moe(self, module, node, result) -> None:
        rec = None if self._step is None else self._step.layers.get(self._layer_of[module])
        if node is None or rec is None or rec.topk_indices is None:
            return
        T = rec.q_shape[2] if rec.q_shape else rec.topk_indices.shape[0]
        node.later(partial(routing_facts, rec.topk_indices, rec.topk_weights, T, self._step.input_ids,
                           module.num_experts, module.top_k))

    def _pre_expert(self, module, node, bound) -> None:
        if node is None:
            return
        if self.meta:
            node.info["tokens n routed here"] = "unknown on meta (the row count is a placeholder)"
            return
        rec = None if self._step is None else self._step.layers.get(self._layer_of[module])
        if rec is None:
            return
        if self._tpe_for is not rec.topk_indices:  # one table per layer call, shared by its experts
            self._tpe_for, self._tpe = rec.topk_indices, {}
        node.later(partial(expert_facts, self._tpe, rec.topk_indices, self._expert_of[module]))

    def _post_causal_lm(self, module, node, result) -> None:
        if node is None or self._step is None or self._step.logits_last is None:
            return
        node.later(partial(logits_facts, None if self.meta else self._step.logits_last))

    # -- HookPoint observers and method wrappers ---------------------------------------------------
    def _observer(self, kind: str, layer_idx: Optional[int]) -> Callable:
        """The function for one HookPoint: notes into the open step's record what `kind` needs.

        An observer returns None, so it never replaces the tensor. (One small function per kind:
        these run ~30 times per forward.) The step is None when this step is not traced.
        """
        if kind == "logits":
            def observe(x: torch.Tensor, point: HookPoint) -> None:
                step = self._step
                if step is not None and not self._n_muted:
                    step.logits_last = keep(x[:, -1])
        elif kind in ("q", "k", "v"):
            attr = kind + "_shape"

            def observe(x: torch.Tensor, point: HookPoint) -> None:
                step = self._step
                if step is not None and not self._n_muted:
                    setattr(step.layer(layer_idx), attr, tuple(x.shape))
        elif kind == "pattern":
            def observe(x: torch.Tensor, point: HookPoint) -> None:
                step = self._step
                if step is not None and not self._n_muted:
                    rec = step.layer(layer_idx)
                    rec.weights_shape, rec.attn_weights = tuple(x.shape), keep(x)
        else:  # router_logits, router_probs, topk_indices, topk_weights: the LayerRecord fields
            def observe(x: torch.Tensor, point: HookPoint) -> None:
                step = self._step
                if step is not None and not self._n_muted:
                    setattr(step.layer(layer_idx), kind, keep(x))
        return observe

    def _on_next_tokens(self, tokens: torch.Tensor, point: HookPoint) -> None:
        if self._step is not None:
            self._step.next_tokens = keep(tokens)
            node = self._new_node("next token", GEN + "_sample (argmax or multinomial; pad for finished rows)",
                                  "next token", parent=self._step_node) if self._step_node else None
            if node is not None:
                node.result = summarize(tokens)
                node.later(partial(next_token_facts, self._step.next_tokens, self._step.logits_last,
                                   self._gen_kwargs.get("do_sample")))
        self._end_step()
        return None

    def _wrapped_prepare(self, original: Callable) -> Callable:
        def prepare_inputs_for_generation(input_ids, past_key_values=None, attention_mask=None, **kwargs):
            if not self._active:
                return original(input_ids, past_key_values=past_key_values, attention_mask=attention_mask, **kwargs)
            kind = ("decode" if past_key_values is not None else
                    "prefill" if kwargs.get("use_cache") is not False else "no cache")
            by_hand = not self._generating  # called directly, not by generate: a node of its own, no step
            if not by_hand:
                self._begin_step(kind, in_generate=True)
                if self._step is None:
                    return original(input_ids, past_key_values=past_key_values, attention_mask=attention_mask,
                                    **kwargs)
            node = self._new_node("MixtralForCausalLM.prepare_inputs_for_generation",
                                  HF + "MixtralForCausalLM.prepare_inputs_for_generation",
                                  "prepare_inputs_for_generation" + (" (called directly)" if by_hand else ""))
            facts = prepare_facts(input_ids, past_key_values, attention_mask)
            out = original(input_ids, past_key_values=past_key_values, attention_mask=attention_mask, **kwargs)
            fed = out.get("input_ids")
            facts["input_ids_after"] = None if fed is None else list(fed.shape)
            facts["position_ids"] = keep(out.get("position_ids"))
            if not by_hand:
                self._step.prepare = facts
            if node is not None:
                node.args = summarize({"input_ids": input_ids, "past_key_values": past_key_values,
                                       "attention_mask": attention_mask})
                node.info = prepare_info(facts, out.get("position_ids"), past_key_values)
                node.result = summarize(out)
                self._finish(node)
            return out
        return prepare_inputs_for_generation

    def _wrapped_generate(self, original: Callable) -> Callable:
        def generate(input_ids=None, attention_mask=None, **kwargs):
            if not self._active:
                return original(input_ids, attention_mask=attention_mask, **kwargs)
            self._end_step()
            # do_sample as generate will read it: the argument, else the model's generation config
            defaults = getattr(self.model, "generation_config", None)
            self._gen_kwargs = {"do_sample": bool(getattr(defaults, "do_sample", False)), **kwargs}
            node = self._gen_node = self._new_node("MixtralForCausalLM.generate", GEN + "generate", "generate")
            if node is not None:
                node.args = summarize({"input_ids": input_ids, "attention_mask": attention_mask, **kwargs})
            self._generating = True
            try:
                out = original(input_ids, attention_mask=attention_mask, **kwargs)
            except BaseException as e:
                self._finish(node, error=repr(e))
                raise
            finally:
                self._end_step()
                self._gen_node, self._generating = None, False
            self._finish(node, out)
            return out
        return generate

    # -- views (observe/render.py) ---------------------------------------------------------------
    def header(self) -> str:
        return trace_header(self)

    def to_text(self, mirrors: bool = False) -> str:
        """The tree as text. mirrors=True names every node's transformers counterpart; by
        default only those not named like ours (Mixtral*.forward mirrors its namesake)."""
        return trace_text(self, mirrors)

    def __str__(self) -> str:
        return self.to_text()

    def __repr__(self) -> str:
        return f"<Trace: {len(self.steps)} step(s), {sum(1 for _ in self.nodes())} nodes; print() it for the tree>"

    def _repr_html_(self) -> str:
        return trace_html(self)

    def to_dict(self) -> dict:
        """Everything as JSON-able data: header, options, the tree (roots) and the step records."""
        return trace_dict(self)

    def to_json(self, **json_kwargs: Any) -> str:
        return trace_json(self, **json_kwargs)


def trace(model: nn.Module, depth: Optional[int] = None, layers: Optional[Iterable[int]] = None,
          steps: Optional[Iterable[int]] = None) -> Trace:
    """`with trace(model) as tr: ...` records every call made inside the block; see `Trace`."""
    return Trace(model, depth=depth, layers=layers, steps=steps)


def _check_options(depth: Any, layers: Any, steps: Any, n_layers: int) -> tuple:
    """trace()'s depth, layers and steps checked (say which is wrong, what it may be, an example);
    returns (layers, steps) as lists (None stays None), so a generator is read only once."""
    if depth is not None and (not isinstance(depth, numbers.Integral) or isinstance(depth, bool) or depth < 0):
        raise ValueError(f"trace(depth=...) must be an integer >= 0 (0: only the top call) or None (all), "
                         f"got {depth!r}.")
    out = []
    for name, value, top in (("layers", layers, n_layers), ("steps", steps, None)):
        if value is not None and (isinstance(value, (str, bytes)) or not isinstance(value, Iterable)):
            raise TypeError(f"trace({name}=...) must be a list of indices, e.g. {name}=[0] or range(2), "
                            f"got {value!r}.")
        value = None if value is None else list(value)
        out.append(value)
        if value is None:
            continue
        bad = [i for i in value if not isinstance(i, numbers.Integral) or isinstance(i, bool) or i < 0
               or (top is not None and i >= top)]
        if bad:
            valid = f"0..{top - 1} (the model has {top} layers)" if top is not None else "integers >= 0"
            raise ValueError(f"trace({name}=...) holds {bad}; {name} are {valid}.")
    return tuple(out)


# -- naming and binding module calls -----------------------------------------------------------

def _mirror(module: nn.Module, role: str) -> str:
    if role == "embed":
        return "torch.nn.Embedding.forward (MixtralModel.embed_tokens)"
    if role == "lm_head":
        return "torch.nn.Linear.forward (MixtralForCausalLM.lm_head)"
    return HF + type(module).__name__ + ".forward"


def _our_name(module: nn.Module) -> str:
    cls = type(module)
    return ("nn." if cls.__module__.startswith("torch.") else "") + cls.__name__ + ".forward"


def _short(path: str) -> str:
    """'model.layers.0.self_attn' -> 'self_attn'; 'model.layers.0' -> 'layers.0'."""
    parts = path.split(".")
    return ".".join(parts[-2:]) if len(parts) >= 2 and parts[-1].isdigit() else parts[-1]


_PARAM_NAMES: Dict[type, tuple] = {}


def _param_names(module: nn.Module) -> tuple:
    """(forward's parameter names in order, the same as a set); ((), set()) if it takes *args or **kwargs."""
    names = _PARAM_NAMES.get(type(module))
    if names is None:
        params = list(inspect.signature(type(module).forward).parameters.values())[1:]  # without self
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        ordered = tuple(p.name for p in params) if all(p.kind in plain for p in params) else ()
        names = _PARAM_NAMES[type(module)] = (ordered, frozenset(ordered))
    return names


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> Dict[str, Any]:
    """The call's arguments by name, in signature order, whether they came by position or keyword.

    What inspect.Signature.bind(...).arguments gives for our forwards, without its cost (this runs
    on every module call of a trace); anything unusual falls back to arg0, arg1, ... + kwargs.
    """
    names, name_set = _param_names(module)
    return _bind_names(names, name_set, args, kwargs)


def _bind_names(names: tuple, name_set: frozenset, args: tuple, kwargs: dict) -> Dict[str, Any]:
    """`_bind` with the names already looked up."""
    if not kwargs and len(args) <= len(names):  # the common case: norms, experts, embed, lm_head
        return dict(zip(names, args))
    given = dict(zip(names, args))
    if (not names or len(args) > len(names) or not kwargs.keys() <= name_set
            or not given.keys().isdisjoint(kwargs)):
        return {**{f"arg{i}": a for i, a in enumerate(args)}, **kwargs}
    if not kwargs:
        return given
    given.update(kwargs)
    return {n: given[n] for n in names if n in given}
