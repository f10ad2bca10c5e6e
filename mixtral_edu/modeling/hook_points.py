"""Named hook points: identity functions placed at every interesting tensor.

A `HookPoint` returns its input unchanged. With no hook attached that is all
it does (one attribute check), so the model pays nothing for being observable.
Hooks are attached through `mixtral_edu.observe.capture` (scoped, always removed); a
hook may read the tensor or return a replacement for it.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], Optional[torch.Tensor]]


class HookPoint(nn.Module):
    """An identity with a name. `fns` run in order; one returning a tensor replaces x."""

    def __init__(self, doc: str = "") -> None:
        super().__init__()
        self.doc = doc          # the documented shape, e.g. "(B, T, C) residual stream"
        self.name = ""          # filled in by the model after construction
        self.fns: List[HookFn] = []

    def __call__(self, x):  # bypass nn.Module.__call__: this is the hot path when nothing is attached
        if not self.fns:
            return x
        for fn in list(self.fns):
            out = fn(x, self)
            if out is not None:
                if not isinstance(out, torch.Tensor) or out.shape != x.shape:
                    raise _bad_return(self, fn, x, out)
                x = out
        return x

    def forward(self, x):
        return self(x)

    def extra_repr(self) -> str:
        return self.doc


def _bad_return(point: "HookPoint", fn, x: torch.Tensor, out) -> Exception:
    """A hook returned something that cannot replace x: say which hook, where, and what was expected."""
    who = getattr(fn, "__qualname__", None) or type(fn).__name__
    if not isinstance(out, torch.Tensor):
        return TypeError(f"The hook {who} on {point.name or 'a hook point'} returned a {type(out).__name__}; "
                         "a hook returns None (to only look) or a tensor of the same shape (to replace it).")
    return ValueError(f"The hook {who} on {point.name or 'a hook point'} returned shape {tuple(out.shape)}, but "
                      f"the tensor there has shape {tuple(x.shape)} ({point.doc}). Return a tensor of the same "
                      "shape (edit a clone), or None to only look.")


def name_hook_points(model: nn.Module) -> None:
    """Give every HookPoint its dotted module path as its name, and make `self.hook_x` a plain lookup."""
    for name, module in model.named_modules():
        if isinstance(module, HookPoint):
            module.name = name
        for child_name, child in module._modules.items():
            if isinstance(child, HookPoint):
                # Python finds an instance attribute before it falls back to nn.Module.__getattr__,
                # the slow path every submodule access takes; hook points are read on every forward.
                # nn.Module.__setattr__ drops this entry if the attribute is ever reassigned.
                module.__dict__[child_name] = child
