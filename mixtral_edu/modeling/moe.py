"""The sparse mixture-of-experts block: a router picks K of E expert MLPs per token.

For each token the router (`gate`, a (E, C) linear map) scores every expert;
softmax turns scores into probabilities; the top K are kept and renormalised to
sum to 1; the token's output is the weighted sum of those K experts' outputs.
Only K/E of the expert weights touch any one token: that is the "sparse".
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import MixtralConfig
from .hook_points import HookPoint

DISPATCH_MODES = ("loop", "grouped")


class MixtralBlockSparseTop2MLP(nn.Module):
    """One expert: a SwiGLU MLP, w2(silu(w1 x) * w3 x). w1, w3: (I, C); w2: (C, I)."""

    def __init__(self, config: MixtralConfig):
        super().__init__()
        self.ffn_dim = config.intermediate_size
        self.hidden_dim = config.hidden_size
        self.w1 = nn.Linear(self.hidden_dim, self.ffn_dim, bias=False)
        self.w2 = nn.Linear(self.ffn_dim, self.hidden_dim, bias=False)
        self.w3 = nn.Linear(self.hidden_dim, self.ffn_dim, bias=False)
        self.act_fn = nn.SiLU()
        self.hook_in = HookPoint("(n_e, C) the tokens routed to this expert")
        self.hook_out = HookPoint("(n_e, C) this expert's output, before the routing weight")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(n, C) -> (n, C)."""
        hidden_states = self.hook_in(hidden_states)
        return self.hook_out(self.w2(self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)))


class MixtralSparseMoeBlock(nn.Module):
    """Router + E experts. forward: (B, T, C) -> ((B, T, C), router_logits (N, E)).

    `dispatch` chooses how tokens reach experts: "loop" (default, the readable
    per-expert loop of transformers) or "grouped" (sort tokens by expert once);
    both give the same result.
    """

    def __init__(self, config: MixtralConfig):
        super().__init__()
        self.hidden_dim = config.hidden_size
        self.ffn_dim = config.intermediate_size
        self.num_experts = config.num_local_experts
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(self.hidden_dim, self.num_experts, bias=False)
        self.experts = nn.ModuleList([MixtralBlockSparseTop2MLP(config) for _ in range(self.num_experts)])
        self.jitter_noise = config.router_jitter_noise
        self.dispatch = "loop"

        self.hook_router_logits = HookPoint("(N, E) router scores, model dtype, before softmax")
        self.hook_router_probs = HookPoint("(N, E) router probabilities, fp32")
        self.hook_topk_indices = HookPoint("(N, K) the experts chosen per token, best first")
        self.hook_topk_weights = HookPoint("(N, K) their weights, renormalised to sum to 1")
        self.hook_out = HookPoint("(B, T, C) the block's output, before the residual add")

    def route(self, hidden_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C) -> router_logits (N, E), weights (N, K), selected experts (N, K)."""
        router_logits = self.hook_router_logits(self.gate(hidden_states))
        probs = self.hook_router_probs(F.softmax(router_logits, dim=1, dtype=torch.float))
        routing_weights, selected_experts = torch.topk(probs, self.top_k, dim=-1)
        selected_experts = self.hook_topk_indices(selected_experts)
        # keep the K chosen experts' shares only, rescaled so they sum to 1
        routing_weights = routing_weights / routing_weights.sum(dim=-1, keepdim=True)
        routing_weights = self.hook_topk_weights(routing_weights.to(hidden_states.dtype))
        return router_logits, routing_weights, selected_experts

    def forward(self, hidden_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        if self.training and self.jitter_noise > 0:
            # multiplicative noise on the router's input, training only
            hidden_states = hidden_states * torch.empty_like(hidden_states).uniform_(
                1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
        hidden_states = hidden_states.view(-1, hidden_dim)                     # (B, T, C) -> (N, C)
        router_logits, routing_weights, selected_experts = self.route(hidden_states)
        if self.dispatch == "loop":
            out = self._dispatch_loop(hidden_states, routing_weights, selected_experts)
        elif self.dispatch == "grouped":
            out = self._dispatch_grouped(hidden_states, routing_weights, selected_experts)
        else:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}, got {self.dispatch!r}.")
        out = out.reshape(batch_size, sequence_length, hidden_dim)             # (N, C) -> (B, T, C)
        return self.hook_out(out), router_logits

    def _dispatch_loop(self, x, routing_weights, selected_experts):
        """Visit every expert; send it the tokens that chose it; add its weighted output back."""
        final = torch.zeros_like(x)                                            # (N, C)
        # (N, K, E) one-hot -> (E, K, N): expert_mask[e, k, n] = token n's k-th choice is e
        expert_mask = F.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)
        for expert_idx, expert in enumerate(self.experts):
            slot, token = torch.where(expert_mask[expert_idx])                 # (n_e,), (n_e,)
            if token.numel() == 0 and not expert.hook_in.fns:
                continue  # nobody chose this expert; the sum would add nothing
            expert_out = expert(x[token])                                      # (n_e, C)
            expert_out = expert_out * routing_weights[token, slot, None]        # weight of that choice
            final.index_add_(0, token, expert_out.to(x.dtype))                  # scatter back, summing
        return final

    def _dispatch_grouped(self, x, routing_weights, selected_experts):
        """Sort the N*K (token, expert) pairs by expert, run each expert once on a contiguous slice."""
        flat_expert = selected_experts.reshape(-1)                             # (N*K,)
        order = torch.argsort(flat_expert, stable=True)                        # pairs grouped by expert
        token = order // self.top_k                                            # (N*K,) token of each pair
        weight = routing_weights.reshape(-1)[order, None]                       # (N*K, 1)
        counts = torch.bincount(flat_expert, minlength=self.num_experts).tolist()
        xs = x[token]                                                          # (N*K, C) in expert order
        outs = []
        start = 0
        for expert, n in zip(self.experts, counts):
            if n or expert.hook_in.fns:
                outs.append(expert(xs[start:start + n]))
            start += n
        final = torch.zeros_like(x)
        final.index_add_(0, token, (torch.cat(outs) * weight).to(x.dtype))
        return final


def load_balancing_loss_func(gate_logits, num_experts: int, top_k: int = 2,
                             attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Switch-Transformer load-balancing loss over all layers: E * sum_e f_e * P_e.

    gate_logits: tuple of L tensors (N, E). f: share of routing slots that went to
    each expert, per top-k slot (K, E); P: mean router probability per expert (E,).
    Padding tokens (attention_mask (B, T) == 0) are left out of both averages.
    A perfectly even router gives K; one that sends every token to the same K experts gives E.
    """
    if gate_logits is None or not isinstance(gate_logits, tuple):
        return 0
    device = gate_logits[0].device
    logits = torch.cat([g.to(device) for g in gate_logits], dim=0)            # (L*N, E)
    probs = F.softmax(logits, dim=-1)
    _, selected = torch.topk(probs, top_k, dim=-1)                             # (L*N, K)
    chosen = F.one_hot(selected, num_experts).float()                          # (L*N, K, E)
    if attention_mask is None:
        f = chosen.mean(dim=0)                                                 # (K, E)
        p = probs.mean(dim=0)                                                  # (E,)
    else:
        b, t = attention_mask.shape
        n_layers = logits.shape[0] // (b * t)
        # (B, T) -> (L, B, T) -> (L*N, 1, 1): 1 for real tokens, 0 for padding
        keep = attention_mask.to(device)[None].expand(n_layers, b, t).reshape(-1, 1, 1).float()
        f = (chosen * keep).sum(dim=0) / keep.sum()
        p = (probs * keep[:, 0]).sum(dim=0) / keep.sum()
    return torch.sum(f * p.unsqueeze(0)) * num_experts
