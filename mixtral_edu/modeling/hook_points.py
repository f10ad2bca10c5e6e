"""Named hook points: identity functions placed at every interesting tensor.

A `HookPoint` returns its input unchanged. With no hook attached that is all
it does (one attribute check), so the model pays nothing for being observable.
Hooks are attached through `mixtral_edu.hooks` / `run_with_cache` (scoped, always
removed); a hook may read the tensor or return a replacement for it. PyTorch's
`register_forward_hook` on a HookPoint works as well (see HookPoint).
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn

HookFn = Callable[[torch.Tensor, "HookPoint"], Optional[torch.Tensor]]


class HookPoint(nn.Module):
    """An identity with a name. `fns` run in order; one returning a tensor replaces x.

    PyTorch's own module hooks work too: `point.register_forward_hook(fn)` fires on every
    call (fn(point, (x,), x) may return a replacement), and its handle's remove() stops it.
    They run through `nn.Module.__call__`, so they cost nothing while none is registered.
    """

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
        return x

    # -- PyTorch's module hooks -------------------------------------------------------------------
    # __call__ above skips nn.Module.__call__, where torch runs its hooks. Registering one also
    # puts `run_torch_hooks` among `fns`, which sends the tensor through nn.Module.__call__
    # (forward is the identity) so torch runs them; it takes itself out once none is left.
    def register_forward_pre_hook(self, *args, **kwargs):
        return self._with_torch_hooks(super().register_forward_pre_hook(*args, **kwargs))

    def register_forward_hook(self, *args, **kwargs):
        return self._with_torch_hooks(super().register_forward_hook(*args, **kwargs))

    def register_full_backward_pre_hook(self, *args, **kwargs):
        return self._with_torch_hooks(super().register_full_backward_pre_hook(*args, **kwargs))

    def register_full_backward_hook(self, *args, **kwargs):
        return self._with_torch_hooks(super().register_full_backward_hook(*args, **kwargs))

    def _with_torch_hooks(self, handle):
        if run_torch_hooks not in self.fns:
            self.fns.append(run_torch_hooks)
        return handle

    def _has_torch_hooks(self) -> bool:
        return bool(self._forward_pre_hooks or self._forward_hooks
                    or self._backward_pre_hooks or self._backward_hooks)

    def extra_repr(self) -> str:
        return self.doc


def run_torch_hooks(x: torch.Tensor, point: HookPoint) -> Optional[torch.Tensor]:
    """The `fns` entry that runs the point's PyTorch hooks (see HookPoint)."""
    if not point._has_torch_hooks():
        point.fns.remove(run_torch_hooks)  # every handle was removed: back to the free path
        return None
    return nn.Module.__call__(point, x)


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
