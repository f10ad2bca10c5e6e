"""Rotary position embedding (RoPE): position enters attention by rotating q and k.

Each pair of dims (d, d + D/2) of a query or key is turned by the angle
position * theta^(-2d/D). The dot product of a rotated query and key then
depends only on how far apart they are. Keys go into the cache already rotated.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn


class MixtralRotaryEmbedding(nn.Module):
    """cos/sin tables for positions 0 .. seq_len-1, each (seq_len, D).

    Two differences from transformers, both on purpose: the tables start empty and grow
    on demand (transformers builds them for max_position_embeddings up front: 131072 rows
    for Mixtral, which a laptop need not hold), and they stay in fp32 (see below).
    """

    def __init__(self, dim: int, max_position_embeddings: int = 2048, base: float = 10000.0, device=None):
        super().__init__()
        self.dim = dim
        self.max_position_embeddings = max_position_embeddings
        self.base = base
        # (D/2,) one frequency per pair of dims, computed in fp32 as transformers does
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64).float().to(device) / self.dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.max_seq_len_cached = 0
        self.cos_cached: Optional[torch.Tensor] = None  # plain attributes, not buffers: model.to(dtype) leaves them
        self.sin_cached: Optional[torch.Tensor] = None

    def _set_cos_sin_cache(self, seq_len: int, device) -> None:
        # Always in fp32, even after model.to(bfloat16) cast inv_freq: bf16 positions and
        # frequencies would turn the angles into noise. The tables are cast on use instead.
        self.max_seq_len_cached = seq_len
        inv_freq = 1.0 / (self.base ** (torch.arange(0, self.dim, 2, dtype=torch.int64, device=device).float()
                                        / self.dim))
        t = torch.arange(self.max_seq_len_cached, device=device, dtype=torch.int64).float()
        freqs = torch.outer(t, inv_freq)                # (seq_len, D/2)
        emb = torch.cat((freqs, freqs), dim=-1)         # (seq_len, D): halves layout, not interleaved
        self.cos_cached, self.sin_cached = emb.cos(), emb.sin()

    def forward(self, x: torch.Tensor, seq_len: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """x only supplies dtype/device. Returns cos, sin of shape (seq_len, D) in x's dtype."""
        if self.cos_cached is None or seq_len > self.max_seq_len_cached or self.cos_cached.device != x.device:
            # at least double: a generation that grows one token per step rebuilds log(n) times
            self._set_cos_sin_cache(seq_len=max(seq_len, 2 * self.max_seq_len_cached), device=x.device)
        return self.cos_cached[:seq_len].to(dtype=x.dtype), self.sin_cached[:seq_len].to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(..., D) -> (..., D): [x1, x2] becomes [-x2, x1], a 90-degree turn of each (d, d + D/2) pair."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                         position_ids: torch.Tensor, unsqueeze_dim: int = 1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rotate q (B, H, T, D) and k (B, Hkv, T, D) by the angles of their positions (B, T).

    position_ids must index rows of cos/sin; MixtralModel.forward checks that once per call.
    """
    cos = cos[position_ids].unsqueeze(unsqueeze_dim)  # (B, T, D) -> (B, 1, T, D): broadcast over heads
    sin = sin[position_ids].unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed
