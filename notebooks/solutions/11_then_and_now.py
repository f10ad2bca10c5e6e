"""Reference solutions of chapter 11's exercises (kept out of the student's notebook).

Same names as the stubs; tests/then_and_now prove each passes its checker.
"""
import torch


def fuse_experts(w1, w3, w2):
    """E tensors (I, C), (I, C), (C, I) -> gate_up_proj (E, 2I, C), down_proj (E, C, I)."""
    gate = torch.stack(w1)                                  # E x (I, C) -> (E, I, C)
    up = torch.stack(w3)                                    # E x (I, C) -> (E, I, C)
    gate_up_proj = torch.cat([gate, up], dim=1)             # (E, 2I, C): gate rows, then up rows
    down_proj = torch.stack(w2)                             # E x (C, I) -> (E, C, I)
    return gate_up_proj, down_proj


def sliding_visible(q_len, past_len, sliding_window):
    """(T, S) bool: query at absolute position P + i sees key j when P + i - W < j <= P + i."""
    q_pos = torch.arange(q_len)[:, None] + past_len         # (T, 1)
    k_pos = torch.arange(past_len + q_len)[None, :]          # (1, S)
    return (k_pos <= q_pos) & (k_pos > q_pos - sliding_window)


def sliding_layer_update(cached_k, cached_v, new_k, new_v, sliding_window):
    """Attend over everything this step can see; keep the last W - 1 keys and values for the next."""
    attend_k = torch.cat([cached_k, new_k], dim=-2)          # (B, Hkv, P + T, D)
    attend_v = torch.cat([cached_v, new_v], dim=-2)
    keep = sliding_window - 1
    return attend_k[:, :, -keep:, :], attend_v[:, :, -keep:, :], attend_k, attend_v
