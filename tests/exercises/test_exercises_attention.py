"""Exercise checks of notebook 06: right answers pass, typical mistakes fail with a message naming them."""
import math

import torch
import torch.nn.functional as F

from mixtral_edu.exercises import attention as ex


def todo(*args, **kwargs):
    raise NotImplementedError("your code here")


def test_repeat_kv():
    assert ex.check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=1))
    assert "not yet" in ex.check_repeat_kv(todo).message
    r = ex.check_repeat_kv(lambda x, n: x.repeat(1, n, 1, 1))
    assert not r and "h // G" in r.message, r.message
    r = ex.check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=2))
    assert not r and "head axis" in r.message, r.message


def test_repeat_kv_reference_is_transformers():
    from transformers.models.mixtral.modeling_mixtral import repeat_kv as hf
    for _, (x, n), _ in ex._kv_cases():
        assert torch.equal(hf(x, n), ex._repeat_kv(x, n))


def good_rotate(x, positions, base=10000.0):
    d = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, d, 2).float() / d)
    ang = positions.float()[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    rot = torch.cat((-x[:, d // 2:], x[:, : d // 2]), -1)
    return x * cos + rot * sin


def test_rotary_pass_and_reference_is_transformers():
    r = ex.check_rotary(good_rotate)
    assert r, r.message
    assert "not yet" in ex.check_rotary(todo).message
    from transformers.models.mixtral.modeling_mixtral import MixtralRotaryEmbedding, apply_rotary_pos_emb
    for _, (x, pos), kw in ex._rot_cases():
        rope = MixtralRotaryEmbedding(x.shape[-1], max_position_embeddings=64, base=kw.get("base", 10000.0))
        cos, sin = rope(x, seq_len=64)
        hf, _ = apply_rotary_pos_emb(x[None, None], x[None, None], cos, sin, pos[None])
        torch.testing.assert_close(hf[0, 0], ex.rotate(x, pos, **kw))


def test_rotary_mistakes():
    def interleaved(x, positions, base=10000.0):
        d = x.shape[-1]
        inv = 1.0 / base ** (torch.arange(0, d, 2).float() / d)
        ang = positions.float()[:, None] * inv[None]
        x1, x2 = x[:, 0::2], x[:, 1::2]
        return torch.stack((x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()), -1).reshape(x.shape)

    def backwards(x, positions, base=10000.0):
        return good_rotate(x, -positions, base)

    def wrong_freq(x, positions, base=10000.0):
        d = x.shape[-1]
        inv = 1.0 / base ** (torch.arange(0, d // 2).float() / d)
        ang = positions.float()[:, None] * inv[None]
        cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
        return x * cos + torch.cat((-x[:, d // 2:], x[:, : d // 2]), -1) * sin

    def scaled(x, positions, base=10000.0):
        return 2 * good_rotate(x, positions, base)

    for fn, words in [(interleaved, "rotate_half"), (backwards, "other way"), (wrong_freq, "-2i / D"),
                      (scaled, "length")]:
        r = ex.check_rotary(fn)
        assert not r and words in r.message, (fn.__name__, r.message)


def good_attention(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        s = s + mask
    return s.softmax(-1) @ v


def test_attention_pass_and_reference_is_sdpa():
    r = ex.check_attention(good_attention)
    assert r, r.message
    assert "not yet" in ex.check_attention(todo).message
    for _, (q, k, v, m), _ in ex._attn_cases():
        torch.testing.assert_close(ex.reference_attention(q, k, v, m), F.scaled_dot_product_attention(q, k, v, attn_mask=m))


def test_attention_mistakes():
    def no_scale(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1)
        return (s if mask is None else s + mask).softmax(-1) @ v

    def by_d(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1) / q.shape[-1]
        return (s if mask is None else s + mask).softmax(-1) @ v

    def ignores_mask(q, k, v, mask=None):
        return good_attention(q, k, v, None)

    def multiplies(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return (s if mask is None else s * (mask == 0)).softmax(-1) @ v

    for fn, words in [(no_scale, "sqrt(D)"), (by_d, "not by D"), (ignores_mask, "add the mask"),
                      (multiplies, "ADDITIVE")]:
        r = ex.check_attention(fn)
        assert not r and words in r.message, (fn.__name__, r.message)
