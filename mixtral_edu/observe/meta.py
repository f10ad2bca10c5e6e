"""The model on PyTorch's meta device (shapes, no data): the one switch its MoE loop needs.

Used by `trace` on a meta model and by `mixtral_edu.full_size.sizes` to walk the full-size
models without their memory.
"""
from __future__ import annotations

import torch.fx.experimental._config as fx_config


def routing_on_meta():
    """A context in which the MoE loop's `torch.where` runs on meta tensors.

    Which tokens chose expert e is data, and meta tensors hold none, so torch.where cannot
    know its output size. This torch flag lets it assume every entry is chosen: each expert
    then sees all N*K (token, slot) pairs. That misstates the per-expert row counts (they
    are placeholders) but no other shape.
    """
    return fx_config.patch(meta_nonzero_assume_all_nonzero=True)
