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
        self.hook_in = HookPoint("(n_e, C) the tokens routed to this expert (n_e = 0 when none chose it)")
        self.hook_out = HookPoint("(n_e, C) this expert's output, before the routing weight")

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(n_e, C) -> (n_e, C)."""
        hidden_states = self.hook_in(hidden_states)
        current_hidden_states = self.act_fn(self.w1(hidden_states)) * self.w3(hidden_states)  # (n_e, I)
        current_hidden_states = self.w2(current_hidden_states)                                # (n_e, C)
        return self.hook_out(current_hidden_states)


class MixtralSparseMoeBlock(nn.Module):
    """Router + E experts. forward: (B, T, C) -> ((B, T, C), router_logits (N, E)).

    Tokens reach the experts as in transformers: a loop over all E experts, each called
    on the tokens that chose it (an empty (0, C) batch when none did). A faster dispatch
    with the same results lives outside the teaching code: mixtral_edu.fast.moe.grouped_moe.
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

        self.hook_router_logits = HookPoint("(N, E) router scores, model dtype, before softmax")
        self.hook_router_probs = HookPoint("(N, E) router probabilities, fp32")
        self.hook_topk_indices = HookPoint("(N, K) the experts chosen per token, best first")
        self.hook_topk_weights = HookPoint("(N, K) their weights, renormalised to sum to 1")
        self.hook_out = HookPoint("(B, T, C) the block's output, before the residual add")

    def forward(self, hidden_states: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        if self.training and self.jitter_noise > 0:
            # multiplicative noise on the router's input, training only. (transformers multiplies in
            # place, `*=`; a new tensor here, so the caller's tensor, perhaps held by a hook, stays as it was)
            hidden_states = hidden_states * torch.empty_like(hidden_states).uniform_(
                1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
        hidden_states = hidden_states.view(-1, hidden_dim)                     # (B, T, C) -> (N, C)
        router_logits = self.hook_router_logits(self.gate(hidden_states))      # (N, E)

        routing_weights = self.hook_router_probs(F.softmax(router_logits, dim=1, dtype=torch.float))  # (N, E)
        routing_weights, selected_experts = torch.topk(routing_weights, self.top_k, dim=-1)         # (N, K) each
        selected_experts = self.hook_topk_indices(selected_experts)
        # keep the K chosen experts' shares only, rescaled so they sum to 1
        routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
        # back to the model dtype before the weights scale the experts' outputs
        routing_weights = self.hook_topk_weights(routing_weights.to(hidden_states.dtype))

        final_hidden_states = torch.zeros(
            (batch_size * sequence_length, hidden_dim), dtype=hidden_states.dtype, device=hidden_states.device
        )                                                                      # (N, C)

        # (N, K, E) one-hot -> (E, K, N): expert_mask[e, k, n] = 1 when token n's k-th choice is e
        expert_mask = F.one_hot(selected_experts, num_classes=self.num_experts).permute(2, 1, 0)

        # every expert runs, even on no tokens, as in transformers: a hook on it always fires
        for expert_idx in range(self.num_experts):
            expert_layer = self.experts[expert_idx]
            idx, top_x = torch.where(expert_mask[expert_idx])                  # slot k, token n: (n_e,) each

            # gather the tokens that chose this expert, run it, scale each row by the weight of that choice
            current_state = hidden_states[None, top_x].reshape(-1, hidden_dim)  # (n_e, C)
            current_hidden_states = expert_layer(current_state) * routing_weights[top_x, idx, None]

            # scatter back, summing: a token's K contributions add up
            final_hidden_states.index_add_(0, top_x, current_hidden_states.to(hidden_states.dtype))
        final_hidden_states = final_hidden_states.reshape(batch_size, sequence_length, hidden_dim)  # (B, T, C)
        return self.hook_out(final_hidden_states), router_logits


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

    compute_device = gate_logits[0].device
    concatenated_gate_logits = torch.cat([layer_gate.to(compute_device) for layer_gate in gate_logits], dim=0)

    routing_weights = F.softmax(concatenated_gate_logits, dim=-1)                # (L*N, E)
    _, selected_experts = torch.topk(routing_weights, top_k, dim=-1)             # (L*N, K)
    expert_mask = F.one_hot(selected_experts, num_experts)                       # (L*N, K, E)

    if attention_mask is None:
        tokens_per_expert = torch.mean(expert_mask.float(), dim=0)               # f: (K, E)
        router_prob_per_expert = torch.mean(routing_weights, dim=0)              # P: (E,)
    else:
        batch_size, sequence_length = attention_mask.shape
        num_hidden_layers = concatenated_gate_logits.shape[0] // (batch_size * sequence_length)
        # (B, T) -> (L, B, T, K, E) -> (L*N, K, E): 1 on every slot of a real token, 0 for padding
        expert_attention_mask = (
            attention_mask[None, :, :, None, None]
            .expand((num_hidden_layers, batch_size, sequence_length, top_k, num_experts))
            .reshape(-1, top_k, num_experts)
            .to(compute_device)
        )
        tokens_per_expert = (torch.sum(expert_mask.float() * expert_attention_mask, dim=0)
                             / torch.sum(expert_attention_mask, dim=0))          # f over real tokens: (K, E)
        # (B, T) -> (L, B, T, E) -> (L*N, E)
        router_per_expert_attention_mask = (
            attention_mask[None, :, :, None]
            .expand((num_hidden_layers, batch_size, sequence_length, num_experts))
            .reshape(-1, num_experts)
            .to(compute_device)
        )
        router_prob_per_expert = (torch.sum(routing_weights * router_per_expert_attention_mask, dim=0)
                                  / torch.sum(router_per_expert_attention_mask, dim=0))  # P over real tokens: (E,)

    overall_loss = torch.sum(tokens_per_expert * router_prob_per_expert.unsqueeze(0))
    return overall_loss * num_experts
