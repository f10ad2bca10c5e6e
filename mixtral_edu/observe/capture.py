"""Activation capture and scoped hooks on the model's HookPoints (TransformerLens-style).

    out, cache = run_with_cache(model, input_ids)                   # one forward call
    cache["model.layers.0.block_sparse_moe.hook_router_probs"]      # (N, E) tensor
    out, cache = run_with_cache(model, lambda: model.generate(ids, max_new_tokens=3))
    cache["model.layers.0.hook_resid_post"]                         # list: one entry per forward call

    with mixtral_edu.hooks(model, disable_expert(layer=0, expert=3)):
        model.generate(ids)                                         # layer 0 never routes to expert 3

Names and documented shapes: `model.hook_names()` (legend in mixtral_edu/modeling/config.py). A hook
fn is called as fn(tensor, hook_point) and returns None (just look) or a tensor (use this
instead). Names may be glob patterns: "*.hook_resid_post", "model.layers.*.block_sparse_moe.hook_*".
Eager-only points: attention scores and pattern are never formed by the fused sdpa kernel.
"""
from __future__ import annotations

import difflib
import fnmatch
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..modeling.hook_points import HookFn, HookPoint

EAGER_ONLY = ("hook_attn_scores", "hook_pattern")
Names = Union[None, str, Sequence[str], Callable[[str], bool]]


class EagerOnlyError(ValueError):
    """Asked for attention scores/pattern on a model whose attention is sdpa (never formed there)."""


# -- checking what we are given ------------------------------------------------------------

def require_our_model(model: Any, who: str) -> None:
    """TypeError unless `model` is mixtral_edu's MixtralForCausalLM or MixtralModel (say how to get one)."""
    from ..modeling.model import MixtralPreTrainedModel
    if isinstance(model, MixtralPreTrainedModel):
        return
    kind = type(model)
    origin = kind.__module__.split(".")[0]
    if origin == "transformers":
        raise TypeError(f"{who} got {kind.__module__}.{kind.__name__}, a model of the transformers package. It "
                        "needs mixtral_edu's model, which reads the same folder: "
                        "mixtral_edu.MixtralForCausalLM.from_pretrained(path) (or mixtral_edu.load_tiny()).")
    raise TypeError(f"{who} needs a mixtral_edu MixtralForCausalLM or MixtralModel, got {kind.__name__}. "
                    "Get one with mixtral_edu.load_tiny() or mixtral_edu.MixtralForCausalLM.from_pretrained(path).")


def _check_spec(spec: Any) -> None:
    """A hooks() spec is {name or glob pattern (str): fn or list of fns}."""
    example = "hooks(model, {'model.layers.0.hook_resid_post': fn})"
    if not isinstance(spec, dict):
        raise TypeError(f"hooks() takes dicts {{hook point name: fn}}, got a {type(spec).__name__}: {spec!r:.80}. "
                        f"Write {example}; several dicts add up.")
    for name, fns in spec.items():
        if not isinstance(name, str):
            raise TypeError(f"hooks(): the key {name!r} is a {type(name).__name__}; keys are hook point names or "
                            f"glob patterns (str), e.g. {example} or {{'*layers.{name}.*': fn}}. "
                            "model.hook_names() lists them all.")
        for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
            if not callable(fn):
                raise TypeError(f"hooks(): the value for {name!r} is a {type(fn).__name__}, not a function. "
                                "Give fn(tensor, hook_point) -> None or a tensor (or a list of them).")


# -- naming -------------------------------------------------------------------------------

def resolve_names(model: nn.Module, names: Names) -> List[str]:
    """Hook point names selected by `names`, in the model's order.

    None: all; a name or glob pattern, or a list of them; or a callable filter(name) -> bool.
    An unknown name raises KeyError listing the closest real names.
    """
    points = list(model.hook_points())
    if names is None:
        return points
    if callable(names):
        return [n for n in points if names(n)]
    wanted: set = set()
    for name in [names] if isinstance(names, str) else names:
        if name in points:
            wanted.add(name)
            continue
        matches = fnmatch.filter(points, name) if any(c in name for c in "*?[") else []
        if not matches:
            close = difflib.get_close_matches(name, points, n=5, cutoff=0.6)
            hint = f" Did you mean one of {close}?" if close else " See model.hook_names() for every name."
            raise KeyError(f"No hook point {name!r} in {type(model).__name__}.{hint}")
        wanted.update(matches)
    return [n for n in points if n in wanted]


def _silent_in_sdpa(model: nn.Module, name: str, output_attentions: bool) -> bool:
    """True for an eager-only point that will not fire: the attention is sdpa and weights are not asked for."""
    from ..modeling.attention import MixtralSdpaAttention
    if not name.endswith(EAGER_ONLY) or output_attentions or model.config.output_attentions:
        return False
    return isinstance(model.get_submodule(name.rsplit(".", 1)[0]), MixtralSdpaAttention)


def _select(model: nn.Module, names: Names, output_attentions: bool) -> Tuple[List[str], List[str]]:
    """(names that will fire, eager-only names left out because the model's attention is sdpa).

    An exact eager-only name raises EagerOnlyError; a pattern or filter just skips those
    points, unless that is all it matched.
    """
    entries = [names] if names is None or callable(names) or isinstance(names, str) else list(names)
    selected: List[str] = []
    silent: List[str] = []
    for entry in entries:
        matched = resolve_names(model, entry)
        quiet = [n for n in matched if _silent_in_sdpa(model, n, output_attentions)]
        exact = isinstance(entry, str) and not any(c in entry for c in "*?[")
        if quiet and (exact or len(quiet) == len(matched)) and entry is not None:
            raise _eager_only_error(quiet)
        selected += [n for n in matched if n not in quiet and n not in selected]
        silent += quiet
    order = list(model.hook_points())
    return sorted(selected, key=order.index), silent


def _eager_only_error(names: List[str]) -> EagerOnlyError:
    shown = names if len(names) <= 3 else names[:3] + [f"... {len(names) - 3} more"]
    return EagerOnlyError(
        f"{shown} only fire with eager attention, and this model uses attn_implementation='sdpa': its fused "
        "kernel never forms the scores or the pattern. Build the model with "
        "MixtralConfig(..., attn_implementation='eager'), or pass output_attentions=True to the call "
        "(sdpa then falls back to eager for it).")


def remove_fn(point: HookPoint, fn: Callable) -> None:
    """Take fn off the point: this very function object, not an equal one."""
    for i, f in enumerate(point.fns):
        if f is fn:  # by identity: an equal function may belong to another hook
            del point.fns[i]
            return


# -- scoped hooks ---------------------------------------------------------------------------------

@contextmanager
def hooks(model: nn.Module, *specs: Dict[str, Union[HookFn, Sequence[HookFn]]],
          output_attentions: bool = False) -> Iterator[nn.Module]:
    """Attach hook fns for the duration of a `with` block; always removed afterwards.

    specs: dicts {name or glob pattern: fn or list of fns}; several dicts add up (e.g. two
    `disable_expert(...)`). On an sdpa model an exact eager-only name raises EagerOnlyError
    (a glob skips those points), unless output_attentions=True: you will pass it to the calls.
    """
    require_our_model(model, "hooks()")
    for spec in specs:
        _check_spec(spec)
    points = model.hook_points()
    plan: List[Tuple[HookPoint, HookFn]] = []
    for spec in specs:
        for name, fns in spec.items():
            selected, _ = _select(model, name, output_attentions)
            for fn in fns if isinstance(fns, (list, tuple)) else [fns]:
                plan += [(points[n], fn) for n in selected]
    attached: List[Tuple[HookPoint, HookFn]] = []
    try:
        for point, fn in plan:
            point.fns.append(fn)
            attached.append((point, fn))
        yield model
    finally:
        for point, fn in reversed(attached):
            remove_fn(point, fn)


def disable_expert(layer: Optional[int], expert: int) -> Dict[str, HookFn]:
    """Hook spec for hooks(): in `layer` (None: every layer) the router never picks `expert`.

    Its router logit becomes -inf, so its softmax probability is 0 and top-k passes it by;
    the other experts' weights are renormalised among themselves as usual.
    """
    if not isinstance(expert, int) or isinstance(expert, bool):
        raise TypeError(f"disable_expert: expert must be an expert index (int), got {expert!r}.")
    if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool) or layer < 0):
        raise TypeError(f"disable_expert: layer must be a layer index >= 0 or None (every layer), got {layer!r}.")

    def switch_off(router_logits: torch.Tensor, point: HookPoint) -> torch.Tensor:
        if not 0 <= expert < router_logits.shape[-1]:
            raise IndexError(f"expert {expert} does not exist: this layer has {router_logits.shape[-1]} experts.")
        out = router_logits.clone()  # (N, E); never edit the model's tensor in place
        out[:, expert] = float("-inf")
        if not out.is_meta and bool(torch.isneginf(out).all(dim=-1).any()):
            # softmax over all -inf is NaN: the layer's output, then every logit, would be NaN
            raise ValueError(f"Every expert of {point.name.rsplit('.block_sparse_moe', 1)[0]} is disabled, so "
                             "its tokens have nowhere to go (the logits would be NaN). Leave at least one "
                             "expert per layer enabled.")
        return out

    where = "*" if layer is None else str(int(layer))
    return {f"*layers.{where}.block_sparse_moe.hook_router_logits": switch_off}


# -- capture -------------------------------------------------------------------------------------

class ActivationCache:
    """Tensors captured at hook points during one run: detached copies, safe from later edits.

    cache[name]: when the run made one forward call, that call's tensor; when it made several
    (generate: one per step, prefill first), a list with one entry per call and None where the
    point did not fire in that call (e.g. hook_mask when no 4D mask was needed). Shapes
    change between prefill (T = prompt) and decode (T = 1), hence a list, not a stack.
    calls(name): the tensors in firing order, always a list. step(i): {name: tensor} of call i.
    keys / items / values / len / in: the names that fired at least once, in the model's order.
    """

    def __init__(self, order: List[str], selected: List[str], silent: List[str]):
        self._order = order          # every hook point of the model
        self._selected = set(selected)
        self._silent = set(silent)   # eager-only points left out on an sdpa model
        self._data: Dict[str, List[Tuple[int, torch.Tensor]]] = {}
        self.n_calls = 0             # forward calls of the model during the run

    def _save(self, name: str, x: torch.Tensor) -> None:
        self._data.setdefault(name, []).append((max(self.n_calls - 1, 0), x.detach().clone()))

    def keys(self) -> List[str]:
        return [n for n in self._order if n in self._data]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, name: object) -> bool:
        return name in self._data

    def items(self) -> List[Tuple[str, Any]]:
        return [(n, self[n]) for n in self.keys()]

    def values(self) -> List[Any]:
        return [self[n] for n in self.keys()]

    def calls(self, name: str) -> List[torch.Tensor]:
        self._check(name)
        return [t for _, t in self._data[name]]

    def step(self, i: int) -> Dict[str, torch.Tensor]:
        """{name: tensor} of forward call i (0 = prefill in a generate run); the last if one fired twice."""
        if not 0 <= i < max(self.n_calls, 1):
            raise IndexError(f"call {i} does not exist: the run made {self.n_calls} forward call(s).")
        return {n: t for n in self.keys() for c, t in self._data[n] if c == i}

    def __getitem__(self, name: str) -> Any:
        self._check(name)
        entries = self._data[name]
        if self.n_calls <= 1:
            return entries[0][1] if len(entries) == 1 else [t for _, t in entries]
        per_call: List[Optional[torch.Tensor]] = [None] * self.n_calls
        for call, t in entries:
            per_call[call] = t
        return per_call

    def _check(self, name: str) -> None:
        if name in self._data:
            return
        if name in self._silent:
            raise KeyError(str(_eager_only_error([name])))
        if name in self._order and name not in self._selected:
            raise KeyError(f"{name!r} was not captured: it is not among the `names` asked for.")
        if name in self._order:
            raise KeyError(f"{name!r} did not fire in this run (hook_mask: no 4D mask was built; an expert's "
                           "hooks: no token chose it; hook_next_tokens: only generate fires it).")
        close = difflib.get_close_matches(name, self._order, n=5, cutoff=0.6)
        raise KeyError(f"No hook point {name!r}." + (f" Did you mean one of {close}?" if close else ""))

    def __repr__(self) -> str:
        return f"<ActivationCache: {len(self)} hook points, {self.n_calls} forward call(s)>"


def run_with_cache(model: nn.Module, *args: Any, names: Names = None, **kwargs: Any) -> Tuple[Any, ActivationCache]:
    """Run and capture activations; returns (output, ActivationCache). Nothing stays attached.

    run_with_cache(model, input_ids, attention_mask=m)      -> model(input_ids, attention_mask=m)
    run_with_cache(model, lambda: model.generate(ids, ...)) -> any call; every forward inside counts
    names: None (all), a name/glob or a list of them (unknown ones raise KeyError), or a filter
    callable. On an sdpa model, naming an eager-only point exactly raises EagerOnlyError;
    None, globs and filters leave those points out (asking the cache for one says why).
    """
    require_our_model(model, "run_with_cache()")
    selected, silent = _select(model, names, bool(kwargs.get("output_attentions")))
    cache = ActivationCache(list(model.hook_points()), selected, silent)

    def count_call(module, args):
        cache.n_calls += 1

    def saver(name: str) -> HookFn:
        def save(x: torch.Tensor, point: HookPoint) -> None:
            cache._save(name, x)
        return save

    points = model.hook_points()
    attached: List[Tuple[HookPoint, HookFn]] = []
    handle = model.register_forward_pre_hook(count_call)
    try:
        for name in selected:
            fn = saver(name)
            points[name].fns.append(fn)
            attached.append((points[name], fn))
        if args and callable(args[0]) and not isinstance(args[0], (torch.Tensor, nn.Module)):
            out = args[0](*args[1:], **kwargs)
        else:
            out = model(*args, **kwargs)
    finally:
        handle.remove()
        for point, fn in reversed(attached):
            remove_fn(point, fn)
    return out, cache
