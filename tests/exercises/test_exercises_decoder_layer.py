"""Exercise checks of notebook 05: right answers pass, typical mistakes fail with a message naming them."""
import torch

from mixtral_edu.exercises import decoder_layer as ex


def todo(*args, **kwargs):
    raise NotImplementedError("your code here")


def good_rms(x, weight, eps):
    xf = x.to(torch.float32)
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def test_rms_reference_is_transformers():
    from transformers.models.mixtral.modeling_mixtral import MixtralRMSNorm as HF
    for _, (x, w, eps), _ in ex._rms_cases():
        hf = HF(x.shape[-1], eps=eps).to(w.dtype)
        with torch.no_grad():
            hf.weight.copy_(w)
            assert torch.equal(hf(x), ex.rms_norm(x, w, eps))


def test_rms_pass_and_not_yet():
    r = ex.check_rms_norm(good_rms)
    assert r, r.message
    assert "not yet" in ex.check_rms_norm(todo).message


def test_rms_mistakes():
    def layernorm(x, weight, eps):
        xf = x.float()
        xf = (xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(xf.var(-1, keepdim=True, unbiased=False) + eps)
        return weight * xf.to(x.dtype)

    def eps_outside(x, weight, eps):
        xf = x.float()
        return weight * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype)

    def weight_first(x, weight, eps):
        xf = x.float()
        return (weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def stays_fp32(x, weight, eps):
        xf = x.float()
        return weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)

    def no_upcast(x, weight, eps):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    def summed(x, weight, eps):
        xf = x.float()
        return weight * (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)

    for fn, words in [(layernorm, "mean"), (eps_outside, "inside the square root"), (weight_first, "FIRST"),
                      (stays_fp32, "dtype"), (no_upcast, "float32"), (summed, "MEAN")]:
        r = ex.check_rms_norm(fn)
        assert not r and words in r.message, (fn.__name__, r.message)


def good_layer(layer, x, mask, pos):
    h = x + layer.self_attn(layer.input_layernorm(x), attention_mask=mask, position_ids=pos)[0]
    return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[0]


def test_layer_pass_and_not_yet():
    r = ex.check_decoder_layer(good_layer)
    assert r, r.message
    assert "not yet" in ex.check_decoder_layer(todo).message


def test_layer_mistakes():
    attn = lambda layer, h, m, p: layer.self_attn(h, attention_mask=m, position_ids=p)[0]  # noqa: E731

    def post_norm(layer, x, m, p):
        h = layer.input_layernorm(x + attn(layer, x, m, p))
        return layer.post_attention_layernorm(h + layer.block_sparse_moe(h)[0])

    def no_moe_residual(layer, x, m, p):
        h = x + attn(layer, layer.input_layernorm(x), m, p)
        return layer.block_sparse_moe(layer.post_attention_layernorm(h))[0]

    def same_norm(layer, x, m, p):
        h = x + attn(layer, layer.input_layernorm(x), m, p)
        return h + layer.block_sparse_moe(layer.input_layernorm(h))[0]

    def tuple_out(layer, x, m, p):
        h = x + attn(layer, layer.input_layernorm(x), m, p)
        return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[0], None

    def normed_residual(layer, x, m, p):
        n = layer.input_layernorm(x)
        h = n + attn(layer, n, m, p)
        return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[0]

    for fn, words in [(post_norm, "PRE-norm"), (no_moe_residual, "around the MoE"), (same_norm, "its own norm"),
                      (tuple_out, "not a tuple"), (normed_residual, "BEFORE the norm")]:
        r = ex.check_decoder_layer(fn)
        assert not r and words in r.message, (fn.__name__, r.message)
