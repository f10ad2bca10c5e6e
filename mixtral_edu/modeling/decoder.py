"""One decoder layer: pre-norm attention, then pre-norm sparse MoE, each added to the residual stream.

    h = x + Attention(RMSNorm(x))
    y = h + MoE(RMSNorm(h))
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .attention import MIXTRAL_ATTENTION_CLASSES
from .cache import Cache
from .config import MixtralConfig
from .hook_points import HookPoint
from .moe import MixtralSparseMoeBlock


class MixtralRMSNorm(nn.Module):
    """x / rms(x) * weight, over the last dim. No mean subtraction, no bias (unlike LayerNorm)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)  # the mean of squares needs fp32 even for a bf16 model
        variance = hidden_states.pow(2).mean(-1, keepdim=True)                       # (..., 1)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)  # cast back first, then scale: transformers' order


class MixtralDecoderLayer(nn.Module):
    """self_attn, block_sparse_moe, input_layernorm, post_attention_layernorm."""

    def __init__(self, config: MixtralConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.layer_idx = layer_idx
        self.self_attn = MIXTRAL_ATTENTION_CLASSES[config._attn_implementation](config, layer_idx)
        self.block_sparse_moe = MixtralSparseMoeBlock(config)
        self.input_layernorm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

        self.hook_resid_pre = HookPoint("(B, T, C) residual stream entering the layer")
        self.hook_attn_out = HookPoint("(B, T, C) attention's output, before the residual add")
        self.hook_resid_mid = HookPoint("(B, T, C) residual stream after attention")
        self.hook_resid_post = HookPoint("(B, T, C) residual stream leaving the layer")

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Cache] = None,
        output_attentions: Optional[bool] = False,
        output_router_logits: Optional[bool] = False,
        use_cache: Optional[bool] = False,
    ) -> Tuple[torch.Tensor, ...]:
        """hidden_states (B, T, C) -> (hidden_states, [attn weights], [cache], [router_logits (N, E)]).

        The optional entries appear only when asked for, in that order (as in transformers).
        """
        hidden_states = self.hook_resid_pre(hidden_states)
        residual = hidden_states

        hidden_states = self.input_layernorm(hidden_states)

        # sublayer 1: attention (pre-norm, then added to the residual stream)
        hidden_states, self_attn_weights, present_key_value = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_value=past_key_value,
            output_attentions=output_attentions,
            use_cache=use_cache,
        )
        hidden_states = self.hook_attn_out(hidden_states)
        hidden_states = residual + hidden_states
        hidden_states = self.hook_resid_mid(hidden_states)

        # sublayer 2: the sparse MoE block, the same way
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states, router_logits = self.block_sparse_moe(hidden_states)
        hidden_states = residual + hidden_states
        hidden_states = self.hook_resid_post(hidden_states)

        outputs: Tuple[torch.Tensor, ...] = (hidden_states,)
        if output_attentions:
            outputs += (self_attn_weights,)
        if use_cache:
            outputs += (present_key_value,)
        if output_router_logits:
            outputs += (router_logits,)
        return outputs
