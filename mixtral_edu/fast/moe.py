"""Grouped MoE dispatch: the same block, with tokens sorted by expert once.

    with grouped_moe(model):                 # every MixtralSparseMoeBlock inside, for the block
        out = model.generate(ids, max_new_tokens=8)

The teaching block (`mixtral_edu.modeling.moe`) follows transformers 4.41.2: for each of
the E experts it scans the whole (K, N) expert mask with `torch.where`, gathers that
expert's rows and scatters them back, E passes over the bookkeeping. Here one stable
argsort of the N*K chosen experts puts each expert's tokens in one contiguous slice;
each expert that got tokens runs once on its slice and a single `index_add_` sums
everything back. Each expert sees its rows in the loop's order and a token's K
contributions are added in the loop's order (by expert), so the result is the loop's, bit
for bit. An expert no token chose is not called at all, as in real serving systems (the
teaching loop, like transformers 4.41.2, calls it on an empty (0, C) batch: in a decode step
that is E - K calls per layer that do nothing). So the same hook points fire in the same
order, except an idle expert's own two; that holds whatever hooks are attached.
tests/fast checks all of this against the loop.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..modeling.moe import MixtralSparseMoeBlock


def grouped_dispatch(hidden_states: torch.Tensor, routing_weights: torch.Tensor, selected_experts: torch.Tensor,
                     experts: nn.ModuleList) -> torch.Tensor:
    """x (N, C), weights and choices (N, K) -> (N, C): each expert's weighted outputs summed per token."""
    n_tokens = selected_experts.shape[0]
    # pair j = k * N + n, slot-major as torch.where lists them in the loop, so that each expert
    # receives its rows in the loop's order and the results agree bit for bit
    flat_expert = selected_experts.t().reshape(-1)                         # (K*N,)
    order = torch.argsort(flat_expert, stable=True)                        # pairs grouped by expert
    token = order % n_tokens                                               # (K*N,) token of each sorted pair
    weight = routing_weights.t().reshape(-1)[order, None]                  # (K*N, 1)
    counts = torch.bincount(flat_expert, minlength=len(experts)).tolist()  # tokens per expert, (E,)
    rows = hidden_states[token]                                            # (K*N, C) in expert order
    outs: List[torch.Tensor] = []
    start = 0
    for expert, n in zip(experts, counts):
        if n:  # an idle expert adds nothing: skipping it changes no number (see the module's docstring)
            outs.append(expert(rows[start:start + n]))                     # (n_e, C)
        start += n
    final = torch.zeros_like(hidden_states)                                # (N, C)
    out = torch.cat(outs) if outs else rows                                # (K*N, C); no rows when N = 0
    final.index_add_(0, token, (out * weight).to(hidden_states.dtype))
    return final


class GroupedMixtralSparseMoeBlock(MixtralSparseMoeBlock):
    """MixtralSparseMoeBlock with `grouped_dispatch`; same parameters, hook points and results."""

    def forward(self, hidden_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        if self.training and self.jitter_noise > 0:
            noise = torch.empty_like(hidden_states).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
            hidden_states = hidden_states * noise
        x = hidden_states.view(-1, hidden_dim)                                 # (N, C)
        router_logits = self.hook_router_logits(self.gate(x))                  # (N, E)
        weights, chosen = torch.topk(self.hook_router_probs(F.softmax(router_logits, dim=1, dtype=torch.float)),
                                     self.top_k, dim=-1)                       # (N, K) each
        chosen = self.hook_topk_indices(chosen)
        weights = self.hook_topk_weights((weights / weights.sum(dim=-1, keepdim=True)).to(x.dtype))
        out = grouped_dispatch(x, weights, chosen, self.experts)               # (N, C)
        return self.hook_out(out.reshape(batch_size, sequence_length, hidden_dim)), router_logits


@contextmanager
def grouped_moe(module: nn.Module) -> Iterator[nn.Module]:
    """Run every MixtralSparseMoeBlock inside `module` with the grouped dispatch, for the `with` block.

    The blocks keep their weights and hook points (only their class changes) and go back to the
    teaching loop on exit, whatever happens. Enter it outside `mixtral_edu.trace`, not inside: a
    trace holds on to the forward it found when it started.
    """
    blocks = [m for m in module.modules() if type(m) is MixtralSparseMoeBlock]
    shadowed = [m for m in blocks if "forward" in m.__dict__]
    if shadowed:
        raise RuntimeError("grouped_moe() was entered inside a trace (or with a block's forward replaced): "
                           "the block would keep running the loop. Enter grouped_moe() first, then trace().")
    try:
        for block in blocks:
            block.__class__ = GroupedMixtralSparseMoeBlock
        yield module
    finally:
        for block in blocks:
            block.__class__ = MixtralSparseMoeBlock
