"""Self-attention with grouped-query attention (GQA), rotary positions and the KV cache.

H query heads share Hkv key/value heads: query head h reads kv head h // G.
Two implementations give the same numbers: `MixtralAttention` ("eager", every
step written out, attention weights visible) and `MixtralSdpaAttention`
(`torch.nn.functional.scaled_dot_product_attention`, fused, faster).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .cache import Cache
from .config import MixtralConfig
from .hook_points import HookPoint
from .rotary import MixtralRotaryEmbedding, apply_rotary_pos_emb


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D): each kv head repeated for its G query heads."""
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    # (B, Hkv, S, D) -> (B, Hkv, G, S, D), a view (no copy yet) -> (B, H, S, D)
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


class MixtralAttention(nn.Module):
    """Eager attention. Parameters: q_proj (H*D, C), k_proj/v_proj (Hkv*D, C), o_proj (C, H*D)."""

    def __init__(self, config: MixtralConfig, layer_idx: Optional[int] = None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.num_key_value_heads = config.num_key_value_heads
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.max_position_embeddings = config.max_position_embeddings
        self.rope_theta = config.rope_theta
        self.is_causal = True
        self.attention_dropout = config.attention_dropout

        self.q_proj = nn.Linear(self.hidden_size, self.num_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(self.hidden_size, self.num_key_value_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, self.hidden_size, bias=False)
        self.rotary_emb = MixtralRotaryEmbedding(self.head_dim, self.max_position_embeddings, self.rope_theta)

        self.hook_q = HookPoint("(B, H, T, D) queries after rotary")
        self.hook_k = HookPoint("(B, Hkv, T, D) new keys after rotary, before the cache")
        self.hook_v = HookPoint("(B, Hkv, T, D) new values, before the cache")
        self.hook_attn_scores = HookPoint("(B, H, T, S) scaled scores plus mask, before softmax (eager only)")
        self.hook_pattern = HookPoint("(B, H, T, S) attention weights after softmax (eager only)")
        self.hook_z = HookPoint("(B, T, H*D) heads' outputs side by side, before o_proj")

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_value: Optional[Cache] = None,
        output_attentions: bool = False,
        use_cache: bool = False,
    ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Cache]]:
        """hidden_states (B, T, C), attention_mask (B, 1, T, S) additive, position_ids (B, T).

        Returns (output (B, T, C), weights (B, H, T, S) or None, the cache).
        """
        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states)                    # (B, T, H*D)
        key_states = self.k_proj(hidden_states)                      # (B, T, Hkv*D)
        value_states = self.v_proj(hidden_states)                    # (B, T, Hkv*D)

        # (B, T, H*D) -> (B, T, H, D) -> (B, H, T, D): heads become a batch dimension
        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]                            # T, and S once the cache is counted
        if past_key_value is not None:
            if self.layer_idx is None:
                raise ValueError(f"{type(self).__name__} needs `layer_idx` to use a cache; build it with one.")
            kv_seq_len += past_key_value.get_usable_length(kv_seq_len, self.layer_idx)
        cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)  # (S, D) each
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)
        query_states = self.hook_q(query_states)
        key_states = self.hook_k(key_states)
        value_states = self.hook_v(value_states)

        if past_key_value is not None:
            cache_kwargs = {"sin": sin, "cos": cos}
            # (B, Hkv, T, D) new -> (B, Hkv, S, D): everything this layer has seen
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)

        # (B, Hkv, S, D) -> (B, H, S, D): query head h reads kv head h // G
        key_states = repeat_kv(key_states, self.num_key_value_groups)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(self.head_dim)

        if attn_weights.size() != (bsz, self.num_heads, q_len, kv_seq_len):
            raise ValueError(f"attention scores are {tuple(attn_weights.size())}, expected (B, H, T, S) = "
                             f"{(bsz, self.num_heads, q_len, kv_seq_len)}")

        if attention_mask is not None:
            if attention_mask.size() != (bsz, 1, q_len, kv_seq_len):
                raise ValueError(f"attention_mask is {tuple(attention_mask.size())}, expected (B, 1, T, S) = "
                                 f"{(bsz, 1, q_len, kv_seq_len)}")
            attn_weights = attn_weights + attention_mask             # (B, H, T, S): hidden keys get dtype min
        attn_weights = self.hook_attn_scores(attn_weights)

        # softmax in fp32 whatever the model dtype: bf16 exponentials lose too much
        attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)
        attn_weights = nn.functional.dropout(attn_weights, p=self.attention_dropout, training=self.training)
        attn_weights = self.hook_pattern(attn_weights)
        attn_output = torch.matmul(attn_weights, value_states)       # (B, H, T, D)

        if attn_output.size() != (bsz, self.num_heads, q_len, self.head_dim):
            raise ValueError(f"attention output is {tuple(attn_output.size())}, expected (B, H, T, D) = "
                             f"{(bsz, self.num_heads, q_len, self.head_dim)}")

        # (B, H, T, D) -> (B, T, H, D) -> (B, T, C): the heads side by side again
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.reshape(bsz, q_len, self.hidden_size)

        attn_output = self.o_proj(self.hook_z(attn_output))          # (B, T, C)

        if not output_attentions:
            attn_weights = None

        return attn_output, attn_weights, past_key_value


class MixtralSdpaAttention(MixtralAttention):
    """The same maths through PyTorch's fused kernel; falls back to eager for `output_attentions`.

    This forward is MixtralAttention.forward line for line (as in transformers) except the
    kernel: one `scaled_dot_product_attention` call in place of matmul, mask, softmax, matmul.
    """

    def forward(self, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.LongTensor] = None, past_key_value: Optional[Cache] = None,
                output_attentions: bool = False, use_cache: bool = False,
                ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[Cache]]:
        if output_attentions:  # the fused kernel never forms the weights: the eager forward does it
            return super().forward(hidden_states, attention_mask, position_ids, past_key_value,
                                   output_attentions, use_cache)

        bsz, q_len, _ = hidden_states.size()

        query_states = self.q_proj(hidden_states)                    # (B, T, H*D)
        key_states = self.k_proj(hidden_states)                      # (B, T, Hkv*D)
        value_states = self.v_proj(hidden_states)                    # (B, T, Hkv*D)

        # (B, T, H*D) -> (B, T, H, D) -> (B, H, T, D)
        query_states = query_states.view(bsz, q_len, self.num_heads, self.head_dim).transpose(1, 2)
        key_states = key_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        value_states = value_states.view(bsz, q_len, self.num_key_value_heads, self.head_dim).transpose(1, 2)

        kv_seq_len = key_states.shape[-2]
        if past_key_value is not None:
            kv_seq_len += past_key_value.get_usable_length(kv_seq_len, self.layer_idx)
        cos, sin = self.rotary_emb(value_states, seq_len=kv_seq_len)  # (S, D) each

        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin, position_ids)
        query_states = self.hook_q(query_states)
        key_states = self.hook_k(key_states)
        value_states = self.hook_v(value_states)

        if past_key_value is not None:
            cache_kwargs = {"sin": sin, "cos": cos}
            key_states, value_states = past_key_value.update(key_states, value_states, self.layer_idx, cache_kwargs)

        key_states = repeat_kv(key_states, self.num_key_value_groups)    # (B, H, S, D)
        value_states = repeat_kv(value_states, self.num_key_value_groups)

        if attention_mask is not None:
            if attention_mask.size() != (bsz, 1, q_len, kv_seq_len):
                raise ValueError(f"attention_mask is {tuple(attention_mask.size())}, expected (B, 1, T, S) = "
                                 f"{(bsz, 1, q_len, kv_seq_len)}")

        # on CUDA with a custom mask, torch 2.1's memory-efficient kernel mishandles non-contiguous inputs
        if query_states.device.type == "cuda" and attention_mask is not None:
            query_states = query_states.contiguous()
            key_states = key_states.contiguous()
            value_states = value_states.contiguous()

        attn_output = nn.functional.scaled_dot_product_attention(
            query_states,
            key_states,
            value_states,
            attn_mask=attention_mask,
            dropout_p=self.attention_dropout if self.training else 0.0,
            # with no mask a single new token sees every key: causal only matters for T > 1
            is_causal=self.is_causal and attention_mask is None and q_len > 1,
        )                                                                # (B, H, T, D)

        # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        attn_output = attn_output.transpose(1, 2).contiguous()
        attn_output = attn_output.view(bsz, q_len, self.hidden_size)

        attn_output = self.o_proj(self.hook_z(attn_output))              # (B, T, C)

        return attn_output, None, past_key_value


MIXTRAL_ATTENTION_CLASSES = {"eager": MixtralAttention, "sdpa": MixtralSdpaAttention}
