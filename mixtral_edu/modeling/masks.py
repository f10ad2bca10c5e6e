"""Attention masks: from the tokenizer's 2D padding mask to the 4D additive mask.

The model adds the 4D mask to the attention scores, shape (B, 1, T, S): 0 where
a query may look at a key, `torch.finfo(dtype).min` where it may not (a huge
negative number rather than -inf, so a row with nothing visible still gives a
finite softmax). Three reasons hide a key j from the query i, which sits at
absolute position P + i:
  * future:  j > P + i                      (causal)
  * window:  j < P + i - W                  (sliding_window = W keeps W + 1 keys)
  * padding: attention_mask[b, j] == 0      (left padding in a batch)
These builders mirror transformers 4.41.2's `_prepare_4d_causal_attention_mask`
and `_prepare_4d_causal_attention_mask_for_sdpa`, including when they return None.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

VISIBLE, FUTURE, WINDOW, PADDING = 0, 1, 2, 3
REASONS = {VISIBLE: "visible", FUTURE: "future", WINDOW: "outside window", PADDING: "padding"}


def causal_visibility(q_len: int, past_len: int, sliding_window: Optional[int] = None,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """(T, S) bool: may query i (absolute position P + i) see key j? Causal and window rules only."""
    q_pos = torch.arange(q_len, device=device)[:, None] + past_len  # (T, 1) absolute query positions
    k_pos = torch.arange(past_len + q_len, device=device)[None, :]   # (1, S) absolute key positions
    visible = k_pos <= q_pos
    if sliding_window is not None:
        visible &= k_pos >= q_pos - sliding_window
    return visible


def mask_reasons(attention_mask_2d: Optional[torch.Tensor], batch_size: int, q_len: int, past_len: int,
                 sliding_window: Optional[int] = None) -> torch.Tensor:
    """(B, 1, T, S) int8: why each cell is hidden (VISIBLE, FUTURE, WINDOW or PADDING).

    Padding wins over the other reasons, as the 4D mask is filled with it last.
    """
    s = past_len + q_len
    q_pos = torch.arange(q_len)[:, None] + past_len
    k_pos = torch.arange(s)[None, :]
    reason = torch.full((q_len, s), VISIBLE, dtype=torch.int8)
    if sliding_window is not None:
        reason[k_pos < q_pos - sliding_window] = WINDOW
    reason[k_pos > q_pos] = FUTURE
    reason = reason[None, None].expand(batch_size, 1, q_len, s).clone()  # (B, 1, T, S)
    if attention_mask_2d is not None:
        _check_2d(attention_mask_2d, batch_size, s)
        pad = attention_mask_2d[:, None, None, :].expand(batch_size, 1, q_len, s) != 1
        reason[pad] = PADDING
    return reason


def _check_2d(attention_mask: torch.Tensor, batch_size: int, kv_len: int) -> None:
    if tuple(attention_mask.shape) != (batch_size, kv_len):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)} but the model needs (batch, past + new) = "
            f"({batch_size}, {kv_len}): one entry per token in the cache and per new token. During decoding, "
            "extend the mask by one column of ones per generated token."
        )


def _additive(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """bool -> additive float mask: 0 where visible, finfo(dtype).min elsewhere."""
    return torch.zeros(visible.shape, dtype=dtype, device=visible.device).masked_fill_(
        ~visible, torch.finfo(dtype).min)


def prepare_4d_causal_attention_mask(
    attention_mask: Optional[torch.Tensor],
    input_shape: Sequence[int],
    inputs_embeds: torch.Tensor,
    past_key_values_length: int,
    sliding_window: Optional[int] = None,
) -> Optional[torch.Tensor]:
    """The eager path's mask: (B, 1, T, S) additive, or None when nothing is hidden.

    attention_mask: None, a (B, S) 0/1 padding mask, or a (B, 1, T, S) 0/1 mask given by the user.
    input_shape: (B, T). Returns None only when there is no padding mask, one query
    token and no sliding window (one new token may see every cached key).
    """
    batch_size, q_len = input_shape
    kv_len = q_len + past_key_values_length
    dtype, device = inputs_embeds.dtype, inputs_embeds.device
    if attention_mask is not None and attention_mask.dim() == 4:
        expected = (batch_size, 1, q_len, kv_len)
        if tuple(attention_mask.shape) != expected:
            raise ValueError(f"4D attention_mask has shape {tuple(attention_mask.shape)}; expected {expected}.")
        return _additive(attention_mask.to(torch.bool), dtype)
    if attention_mask is None and q_len == 1 and sliding_window is None:
        return None
    visible = causal_visibility(q_len, past_key_values_length, sliding_window, device)  # (T, S)
    visible = visible[None, None].expand(batch_size, 1, q_len, kv_len)                 # (B, 1, T, S)
    if attention_mask is not None:
        _check_2d(attention_mask, batch_size, kv_len)
        # like transformers, any value other than 1 hides the key
        visible = visible & (attention_mask[:, None, None, :] == 1)
    return _additive(visible, dtype)


def sdpa_can_skip_mask(attention_mask: Optional[torch.Tensor], q_len: int, past_key_values_length: int,
                       sliding_window: Optional[int] = None) -> bool:
    """True when SDPA's own `is_causal` flag (or no mask at all) gives the same answer as a mask.

    That holds when no token is padding, the window hides nothing, and either
    this is a single new token or there is no cache (so the plain triangle is right).
    """
    kv_len = q_len + past_key_values_length
    window_hides_nothing = sliding_window is None or kv_len < sliding_window
    if not window_hides_nothing:
        return False
    if attention_mask is not None and (attention_mask.dim() == 4 or not bool(torch.all(attention_mask == 1))):
        return False
    return q_len == 1 or kv_len == q_len


def prepare_4d_causal_attention_mask_for_sdpa(
    attention_mask: Optional[torch.Tensor],
    input_shape: Sequence[int],
    inputs_embeds: torch.Tensor,
    past_key_values_length: int,
    sliding_window: Optional[int] = None,
) -> Optional[torch.Tensor]:
    """The SDPA path's mask: None when `sdpa_can_skip_mask`, else the eager path's mask.

    A user's 4D mask is taken as already additive here (max must be 0), as transformers does.
    """
    batch_size, q_len = input_shape
    if sdpa_can_skip_mask(attention_mask, q_len, past_key_values_length, sliding_window):
        return None
    if attention_mask is not None and attention_mask.dim() == 4:
        if attention_mask.max() != 0:
            raise ValueError("A 4D attention_mask for SDPA must be additive (0 = visible, large negative = hidden).")
        return attention_mask
    if attention_mask is None:
        visible = causal_visibility(q_len, past_key_values_length, sliding_window, inputs_embeds.device)
        return _additive(visible[None, None].expand(batch_size, 1, q_len, q_len + past_key_values_length),
                         inputs_embeds.dtype)
    return prepare_4d_causal_attention_mask(attention_mask, input_shape, inputs_embeds,
                                            past_key_values_length, sliding_window)
