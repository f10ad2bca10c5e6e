"""Plausible wrong answers to the exercises of notebook 05; each must get NOT YET with a hint naming it."""
import torch

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import decoder_layer as ex


# -- 05.1 find the bug: RMSNorm ----------------------------------------------------------------------

def given_broken(x, weight, eps):            # the notebook's stub: both bugs
    xf = x.to(torch.float32)
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)
    return (weight.float() * xf).to(x.dtype)


def only_eps_fixed(x, weight, eps):
    xf = x.to(torch.float32)
    return (weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def only_order_fixed(x, weight, eps):
    xf = x.to(torch.float32)
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)


def layernorm(x, weight, eps):
    xf = x.float()
    xf = (xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(xf.var(-1, keepdim=True, unbiased=False) + eps)
    return weight * xf.to(x.dtype)


def eps_outside(x, weight, eps):
    xf = x.float()
    return weight * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype)


def stays_float32(x, weight, eps):
    xf = x.float()
    return weight.float() * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))


def no_upcast(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def summed(x, weight, eps):
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype)


def no_eps(x, weight, eps):
    xf = x.float()
    return weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True))).to(x.dtype)


def nan_for_zero_vector(x, weight, eps):
    xf = x.float()
    return weight * (xf / xf.pow(2).mean(-1, keepdim=True).sqrt()).to(x.dtype)


# -- 05.2 implement: the layer's wiring ---------------------------------------------------------------

def _attn(layer, h, m, p):
    return layer.self_attn(h, attention_mask=m, position_ids=p)[0]


def post_norm(layer, x, m, p):
    h = layer.input_layernorm(x + _attn(layer, x, m, p))
    return layer.post_attention_layernorm(h + layer.block_sparse_moe(h)[0])


def no_moe_residual(layer, x, m, p):
    h = x + _attn(layer, layer.input_layernorm(x), m, p)
    return layer.block_sparse_moe(layer.post_attention_layernorm(h))[0]


def same_norm_twice(layer, x, m, p):
    h = x + _attn(layer, layer.input_layernorm(x), m, p)
    return h + layer.block_sparse_moe(layer.input_layernorm(h))[0]


def returns_tuple(layer, x, m, p):
    h = x + _attn(layer, layer.input_layernorm(x), m, p)
    return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[0], None


def residual_from_normed(layer, x, m, p):
    n = layer.input_layernorm(x)
    h = n + _attn(layer, n, m, p)
    return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[0]


def parallel_block(layer, x, m, p):
    return x + _attn(layer, layer.input_layernorm(x), m, p) + \
        layer.block_sparse_moe(layer.post_attention_layernorm(x))[0]


def mask_dropped(layer, x, m, p):
    h = x + _attn(layer, layer.input_layernorm(x), None, p)
    return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[0]


def router_logits_taken(layer, x, m, p):
    h = x + _attn(layer, layer.input_layernorm(x), m, p)
    return h + layer.block_sparse_moe(layer.post_attention_layernorm(h))[1]


# -- 05.3 implement: contributions to one logit ----------------------------------------------------------

def _parts(model, acts, b, t, names=("hook_attn_out", "block_sparse_moe.hook_out")):
    parts = [acts["model.layers.0.hook_resid_pre"][b, t]]
    for i in range(model.config.num_hidden_layers):
        parts += [acts[f"model.layers.{i}.{n}"][b, t] for n in names]
    return torch.stack(parts)


def _final_stream(model, acts, b, t):
    return acts[f"model.layers.{model.config.num_hidden_layers - 1}.hook_resid_post"][b, t]


def no_final_norm(model, acts, b, t, target_id):
    return _parts(model, acts, b, t) @ model.lm_head.weight[target_id]


def own_rms_each(model, acts, b, t, target_id):
    norm = model.model.norm
    return torch.stack([norm(p) for p in _parts(model, acts, b, t)]) @ model.lm_head.weight[target_id]


def no_norm_weight(model, acts, b, t, target_id):
    stream = _final_stream(model, acts, b, t)
    inv = torch.rsqrt(stream.pow(2).mean() + model.model.norm.variance_epsilon)
    return (_parts(model, acts, b, t) * inv) @ model.lm_head.weight[target_id]


def moe_before_attention(model, acts, b, t, target_id):
    norm = model.model.norm
    stream = _final_stream(model, acts, b, t)
    parts = _parts(model, acts, b, t, names=("block_sparse_moe.hook_out", "hook_attn_out"))
    return (parts * torch.rsqrt(stream.pow(2).mean() + norm.variance_epsilon) * norm.weight) @ \
        model.lm_head.weight[target_id]


def stream_not_updates(model, acts, b, t, target_id):
    norm = model.model.norm
    stream = _final_stream(model, acts, b, t)
    parts = _parts(model, acts, b, t, names=("hook_resid_mid", "hook_resid_post"))
    return (parts * torch.rsqrt(stream.pow(2).mean() + norm.variance_epsilon) * norm.weight) @ \
        model.lm_head.weight[target_id]


def embeddings_left_out(model, acts, b, t, target_id):
    norm = model.model.norm
    stream = _final_stream(model, acts, b, t)
    parts = _parts(model, acts, b, t)[1:]
    return (parts * torch.rsqrt(stream.pow(2).mean() + norm.variance_epsilon) * norm.weight) @ \
        model.lm_head.weight[target_id]


def last_token_always(model, acts, b, t, target_id):
    T = acts["model.layers.0.hook_resid_pre"].shape[1]
    return ex.logit_contributions(model, acts, b, T - 1, target_id) if t != T - 1 else \
        ex.logit_contributions(model, acts, b, 0, target_id)


def all_logits(model, acts, b, t, target_id):
    norm = model.model.norm
    stream = _final_stream(model, acts, b, t)
    parts = _parts(model, acts, b, t)
    return (parts * torch.rsqrt(stream.pow(2).mean() + norm.variance_epsilon) * norm.weight) @ model.lm_head.weight.T


MUTANTS = [
    Mutant("05.1", "the given function (eps written in, weight first)", given_broken, mentions=["eps argument"]),
    Mutant("05.1", "eps fixed, weight still first", only_eps_fixed, mentions=["FIRST"]),
    Mutant("05.1", "order fixed, eps written in as 1e-6", only_order_fixed, mentions=["eps argument"]),
    Mutant("05.1", "LayerNorm", layernorm, mentions=["LayerNorm"]),
    Mutant("05.1", "eps outside the root", eps_outside, mentions=["inside the square root"]),
    Mutant("05.1", "returns float32", stays_float32, mentions=["dtype"]),
    Mutant("05.1", "no upcast", no_upcast, mentions=["float32"]),
    Mutant("05.1", "sum of squares", summed, mentions=["MEAN"]),
    Mutant("05.1", "no eps at all", no_eps, mentions=["eps"]),
    Mutant("05.1", "no eps: NaN for a zero vector", nan_for_zero_vector, mentions=["eps inside"]),
    Mutant("05.2", "post-norm", post_norm, mentions=["PRE-norm"]),
    Mutant("05.2", "no residual around the MoE", no_moe_residual, mentions=["around the MoE"]),
    Mutant("05.2", "input_layernorm twice", same_norm_twice, mentions=["its own norm"]),
    Mutant("05.2", "returns a tuple", returns_tuple, mentions=["not a tuple"]),
    Mutant("05.2", "residual from the normalised copy", residual_from_normed, mentions=["BEFORE the norm"]),
    Mutant("05.2", "parallel block (the MoE reads the layer's input)", parallel_block,
           mentions=["one after the other"]),
    Mutant("05.2", "mask dropped", mask_dropped, mentions=["mask"]),
    Mutant("05.2", "router logits instead of the MoE output", router_logits_taken, mentions=["[0]"]),
    Mutant("05.3", "no final norm", no_final_norm, mentions=["final RMSNorm"]),
    Mutant("05.3", "each part normalised by its own RMS", own_rms_each, mentions=["ONE number"]),
    Mutant("05.3", "no norm weight", no_norm_weight, mentions=["weight"]),
    Mutant("05.3", "MoE before attention", moe_before_attention, mentions=["order"]),
    Mutant("05.3", "the stream instead of the updates", stream_not_updates, mentions=["updates"]),
    Mutant("05.3", "embeddings left out", embeddings_left_out, mentions=["2L + 1", "embeddings"]),
    Mutant("05.3", "another token's stream", last_token_always, mentions=["position t"]),
    Mutant("05.3", "every logit instead of one", all_logits, mentions=["2L + 1"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)
