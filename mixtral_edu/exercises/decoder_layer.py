"""Checks for notebook 05 (the decoder layer): RMSNorm, and one layer's residual wiring.

    check_rms_norm(fn)        fn(x (..., C), weight (C,), eps) -> (..., C) in x's dtype
    check_decoder_layer(fn)   fn(layer, hidden_states (B, T, C), attention_mask (B, 1, T, T), position_ids (1, T))
                                -> (B, T, C), built from layer.input_layernorm, layer.self_attn,
                                   layer.post_attention_layernorm and layer.block_sparse_moe

Each check compares the learner's function with the package's on several cases
and, when they differ, names the likely mistake.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import ExerciseResult, close, run_cases
from ..modeling.decoder import MixtralDecoderLayer, MixtralRMSNorm


def _tolerance(label: str, args: tuple, kwargs: dict) -> float:
    return 0.0 if "bfloat16" in label else 1e-5  # bf16 must match bit for bit: the order of casts shows


# -- 1. RMSNorm ---------------------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The package's MixtralRMSNorm with the given weight and eps."""
    norm = MixtralRMSNorm(x.shape[-1], eps=eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def _rms_cases():
    g = torch.Generator().manual_seed(7)
    w = torch.randn(16, generator=g) * 0.3 + 1.0
    x3 = torch.randn(2, 3, 16, generator=g) * 3 + 0.5
    return [
        ("fp32, (3, 16)", (torch.randn(3, 16, generator=g), w, 1e-5), {}),
        ("fp32, (B, T, C) = (2, 3, 16), non-zero mean", (x3, w, 1e-5), {}),
        ("fp32, tiny inputs where eps matters", (torch.randn(2, 16, generator=g) * 1e-3, w, 1e-5), {}),
        ("bfloat16 input and weight (as in a bf16 model)",
         ((torch.randn(4, 64, generator=g) * 5).bfloat16(), (torch.randn(64, generator=g) * 0.5 + 1).bfloat16(),
          1e-5), {}),
    ]


def _diagnose_rms(got, want, x, weight, eps) -> str:
    if not isinstance(got, torch.Tensor):
        return "return a tensor shaped like x."
    if got.dtype != want.dtype:
        return (f"return the input's dtype ({x.dtype}): upcast to float32 for the arithmetic, then cast back "
                "with .to(input_dtype) before multiplying by the weight.")
    xf = x.float()
    candidates = {
        "layernorm": lambda: weight * ((xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(
            xf.var(-1, keepdim=True, unbiased=False) + eps)).to(x.dtype),
        "no eps": lambda: weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True))).to(x.dtype),
        "eps outside": lambda: weight * (xf / (xf.pow(2).mean(-1, keepdim=True).sqrt() + eps)).to(x.dtype),
        "norm not rms": lambda: weight * (xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps)).to(x.dtype),
        "no weight": lambda: (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype),
        "weight before cast": lambda: (weight.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
                                       ).to(x.dtype),
        "no upcast": lambda: weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)),
    }
    hints = {
        "layernorm": "RMSNorm does not subtract the mean (that is LayerNorm): divide x by sqrt(mean(x**2) + eps).",
        "no eps": "add eps inside the square root: rsqrt(mean(x**2) + eps).",
        "eps outside": "eps goes inside the square root: x * rsqrt(mean(x**2) + eps), not x / (rms + eps).",
        "norm not rms": "use the MEAN of the squares over the last dim (mean(-1)), not their sum.",
        "no weight": "multiply by the learned weight at the end.",
        "weight before cast": ("cast back to the input dtype FIRST, then multiply by the weight "
                               "(weight * x.to(input_dtype)): in bf16 the other order rounds differently."),
        "no upcast": ("do the arithmetic in float32 (x.to(torch.float32)); bf16 squares and means lose "
                      "precision. Cast back before the weight."),
    }
    for name, make in candidates.items():
        try:
            if close(got, make(), 0.0 if x.dtype == torch.bfloat16 else 1e-5):
                return hints[name]
        except RuntimeError:
            continue
    return "x_f = x.float(); y = x_f * rsqrt(x_f.pow(2).mean(-1, keepdim=True) + eps); return weight * y.to(x.dtype)."


def check_rms_norm(fn: Callable) -> ExerciseResult:
    """fn(x (..., C), weight (C,), eps) -> RMSNorm(x), in x's dtype, bit for bit in bf16."""
    return run_cases(fn, rms_norm, _rms_cases(), _diagnose_rms, "RMSNorm", atol=_tolerance)


# -- 2. one decoder layer's residual wiring -------------------------------------------------------------

_LAYERS = {}


def _layer(seed: int) -> MixtralDecoderLayer:
    """A small random eager decoder layer (weights large enough that every wiring mistake shows)."""
    if seed not in _LAYERS:
        from ..modeling.config import MixtralConfig
        state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        config = MixtralConfig(vocab_size=16, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                               num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                               num_experts_per_tok=2, max_position_embeddings=32, rope_theta=1e4,
                               attn_implementation="eager")
        layer = MixtralDecoderLayer(config, 0).eval()
        with torch.no_grad():
            for name, p in layer.named_parameters():
                if name.endswith("layernorm.weight"):
                    p.copy_(1.0 + 0.3 * torch.randn_like(p))
                else:
                    p.normal_(0.0, 0.25)
        torch.random.set_rng_state(state)
        _LAYERS[seed] = layer
    return _LAYERS[seed]


def reference_decoder_layer(layer, hidden_states, attention_mask, position_ids):
    """The package's MixtralDecoderLayer.forward, output hidden states only."""
    with torch.no_grad():
        return layer(hidden_states, attention_mask=attention_mask, position_ids=position_ids)[0]


def _causal(b: int, t: int) -> torch.Tensor:
    hidden = torch.ones(t, t, dtype=torch.bool).triu(1)
    return torch.zeros(b, 1, t, t).masked_fill(hidden, torch.finfo(torch.float32).min)


def _layer_cases():
    g = torch.Generator().manual_seed(11)
    out = []
    for label, seed, (b, t) in [("B=1, T=4", 0, (1, 4)), ("B=2, T=6", 1, (2, 6)), ("B=2, T=5, another layer", 2, (2, 5))]:
        x = torch.randn(b, t, 16, generator=g) * 2
        out.append((label, (_layer(seed), x, _causal(b, t), torch.arange(t)[None]), {}))
    return out


def _diagnose_layer(got, want, layer, x, mask, pos) -> str:
    if isinstance(got, tuple):
        return "return only the hidden states (B, T, C), not a tuple."
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return ("the output has the input's shape (B, T, C). Note: self_attn returns a tuple "
                "(output, weights, cache) and block_sparse_moe returns (output, router_logits): take [0].")
    with torch.no_grad():
        attn = lambda h: layer.self_attn(h, attention_mask=mask, position_ids=pos)[0]  # noqa: E731
        moe = lambda h: layer.block_sparse_moe(h)[0]  # noqa: E731
        ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
        h = x + attn(ln1(x))
        candidates = {
            "post-norm": lambda: ln2((y := ln1(x + attn(x))) + moe(y)),
            "no residual": lambda: moe(ln2(attn(ln1(x)))),
            "no attention residual": lambda: (a := attn(ln1(x))) + moe(ln2(a)),
            "no moe residual": lambda: moe(ln2(h)),
            "residual from normed": lambda: (n := ln1(x)) + attn(n) + moe(ln2(n + attn(n))),
            "same norm twice": lambda: h + moe(ln1(h)),
            "moe on x": lambda: h + moe(ln2(x)),
        }
        hints = {
            "post-norm": "Mixtral is PRE-norm: normalise the sublayer's input, and add the raw sublayer output "
                         "to the un-normalised residual: h = x + attn(ln1(x)); y = h + moe(ln2(h)).",
            "no residual": "add each sublayer's output to the residual stream: h = x + attn(...), y = h + moe(...).",
            "no attention residual": "keep the residual around attention: h = x + attn(ln1(x)).",
            "no moe residual": "keep the residual around the MoE block: y = h + moe(ln2(h)).",
            "residual from normed": "the residual is the stream BEFORE the norm (x), not the normalised x.",
            "same norm twice": "the MoE block has its own norm: layer.post_attention_layernorm.",
            "moe on x": "the MoE block reads the stream after attention (h), not the layer's input x.",
        }
        for name, make in candidates.items():
            if close(got, make(), 1e-5):
                return hints[name]
    return "h = x + self_attn(input_layernorm(x))[0]; return h + block_sparse_moe(post_attention_layernorm(h))[0]."


def check_decoder_layer(fn: Callable) -> ExerciseResult:
    """fn(layer, hidden_states, attention_mask, position_ids) -> the layer's output hidden states."""
    return run_cases(fn, reference_decoder_layer, _layer_cases(), _diagnose_layer, "decoder layer", atol=_tolerance)
