"""Reference solutions of notebook 06 (attention). Not imported by the notebook."""
import math

import torch


def decode_step_shapes():
    """Mixtral 8x7B (C=4096, H=32, Hkv=8, D=128), B=2, P=9 cached, T=1 new, so S = P + T = 10.
    The cache stores Hkv heads (repeat_kv runs after it); scores and mask have a row per query, a column per key."""
    return {
        "q": (2, 32, 1, 128),            # (B, H, T, D)
        "k_cached": (2, 8, 10, 128),     # (B, Hkv, S, D)
        "k_repeated": (2, 32, 10, 128),  # (B, H, S, D)
        "scores": (2, 32, 1, 10),        # (B, H, T, S)
        "mask": (2, 1, 1, 10),           # (B, 1, T, S)
        "z": (2, 1, 4096),               # (B, T, H * D)
    }


def rotate(x, positions, base=10000.0):
    """Pair i is (i, i + D/2) and turns by positions * base ** (-2i / D): x * cos + rotate_half(x) * sin."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=torch.float32) * 2 / x.shape[-1])   # (D/2,)
    theta = positions[:, None].to(torch.float32) * freqs                            # (T, D/2)
    cos, sin = theta.cos().repeat(1, 2), theta.sin().repeat(1, 2)                   # (T, D)
    first, second = x[:, :half], x[:, half:]
    return x * cos + torch.cat((-second, first), dim=-1) * sin


def attention(q, k, v, mask=None):
    """Scores over the keys, scaled by 1/sqrt(D); the additive mask (0 or finfo.min, never -inf) before
    the softmax, which runs in float32; then the weighted sum of the values."""
    scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(q.shape[-1]))   # (B, H, T, S)
    if mask is not None:
        scores = scores + mask
    probs = scores.float().softmax(dim=-1).to(q.dtype)
    return probs @ v                                                     # (B, H, T, D)


def attend_with_window_cache(cache, q, k, v, window):
    """Attend first, evict after. The new keys join the kept ones; the new queries see them all, with a
    causal window mask when there are several (positions counted from the first kept key: shifting
    every query and key by the same amount changes nothing). Then keep the last W: the next query sees
    itself and the W before it (4.41.2 keeps W + 1 visible), so nothing dropped is ever needed again."""
    if cache is not None:
        k = torch.cat((cache[0], k), dim=-2)                    # (B, Hkv, S, D)
        v = torch.cat((cache[1], v), dim=-2)
    n_new, n_keys = q.shape[2], k.shape[2]
    group = q.shape[1] // k.shape[1]                            # G = H / Hkv
    k_heads = k.repeat_interleave(group, dim=1)                 # (B, H, S, D)
    v_heads = v.repeat_interleave(group, dim=1)
    scores = q @ k_heads.transpose(-1, -2) / math.sqrt(q.shape[-1])   # (B, H, T, S)
    query_at = torch.arange(n_new)[:, None] + (n_keys - n_new)        # (T, 1) relative positions
    key_at = torch.arange(n_keys)[None, :]                            # (1, S)
    hidden = (key_at > query_at) | (key_at < query_at - window)       # (T, S)
    scores = scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
    out = torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v_heads  # (B, H, T, D)
    return out, (k[:, :, -window:], v[:, :, -window:])
