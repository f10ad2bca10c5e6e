"""Output containers with the field names of transformers' MoE outputs.

Like transformers' `ModelOutput`, they index by name (`out.logits`,
`out["logits"]`) and by position, where position counts only the fields that
are not None. That rule is what makes `out[0]` the loss when labels were given
and the logits when they were not.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple

import torch


class ModelOutput:
    """Base class: attribute, key and position access over the non-None fields."""

    def to_tuple(self) -> Tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def __contains__(self, name: str) -> bool:
        return name in self.keys()

    def __getitem__(self, key):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(f"{type(self).__name__} has no (non-None) field {key!r}; it has {self.keys()}.")
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass
class MoeModelOutputWithPast(ModelOutput):
    """What `MixtralModel.forward` returns (transformers: `MoeModelOutputWithPast`)."""

    last_hidden_state: Optional[torch.Tensor] = None
    past_key_values: Optional[Any] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    router_logits: Optional[Tuple[torch.Tensor, ...]] = None


@dataclass
class MoeCausalLMOutputWithPast(ModelOutput):
    """What `MixtralForCausalLM.forward` returns (transformers: `MoeCausalLMOutputWithPast`)."""

    loss: Optional[torch.Tensor] = None
    aux_loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    past_key_values: Optional[Any] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    attentions: Optional[Tuple[torch.Tensor, ...]] = None
    router_logits: Optional[Tuple[torch.Tensor, ...]] = None
