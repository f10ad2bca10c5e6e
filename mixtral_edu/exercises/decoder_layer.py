"""Exercises of notebook 05 (the decoder layer): RMSNorm, one layer's wiring, the stream as a sum.

    05.1 check_rms_norm(fn)             fn(x (..., C), weight (C,), eps) -> (..., C) in x's dtype
    05.2 check_decoder_layer(fn)        fn(layer, hidden_states (B, T, C), attention_mask (B, 1, T, T),
                                           position_ids (1, T)) -> (B, T, C)
    05.3 check_logit_contributions(fn)  fn(model, acts, b, t, target_id) -> (2L + 1,): what the embeddings and
                                           each sublayer's update add to the logit of target_id at (b, t)

The references are the package's MixtralRMSNorm and MixtralDecoderLayer (equal to transformers',
tests prove it) and the model's own logits. Hints name the mistake, never the values or the code.
"""
from __future__ import annotations

from typing import Callable

import torch

from . import ExerciseResult, NotYet, call, checker, expect_same, name_the_mistake, run_cases
from ..i18n import N_, _
from ..modeling.decoder import MixtralDecoderLayer, MixtralRMSNorm

# The user-facing sentences of this module, in one place: N_ marks them for the catalog, _() translates them
# where they are shown (ExerciseResult translates a message or hint given as one of these).
MSG = {
    "rms_what": "RMSNorm",
    "rms_dtype": N_("return the input's dtype: do the arithmetic in float32, then cast back with .to(input dtype) "
                    "before multiplying by the weight."),
    "rms_fixed_eps": N_("the result does not follow the eps argument: a number written into the code (1e-5, 1e-6) "
                        "is right for one model only. Use eps."),
    "rms_weight_first": N_("in bfloat16 the order shows: cast the normalised vector back to the input dtype FIRST, "
                           "then multiply by the weight (two roundings, as transformers does), not the other way."),
    "rms_layernorm": N_("RMSNorm does not subtract the mean (that is LayerNorm): it only divides by the "
                        "root-mean-square."),
    "rms_no_eps": N_("add eps inside the square root, to the mean of the squares."),
    "rms_eps_outside": N_("eps goes inside the square root (1 / sqrt(mean square + eps)), not after it."),
    "rms_sum": N_("use the MEAN of the squares over the last dim, not their sum."),
    "rms_no_weight": N_("multiply by the learned weight at the end."),
    "rms_no_upcast": N_("do the arithmetic in float32: squares and means of bfloat16 numbers lose digits "
                        "(bfloat16 stores 7 mantissa bits)."),
    "rms_wrong_dim": N_("normalise each vector over its C channels: the last dim, keepdim=True."),
    "rms_default": N_("follow the four steps of section 2 in order (upcast, mean square, times 1/sqrt(. + eps), "
                      "cast back then weight) and compare each with MixtralRMSNorm on this case."),

    "layer_what": N_("decoder layer"),
    "layer_tuple": N_("return only the hidden states (B, T, C), not a tuple."),
    "layer_shape": N_("the output has the input's shape (B, T, C). self_attn returns (output, weights, cache) and "
                      "block_sparse_moe returns (output, router_logits): take item [0] of each."),
    "layer_post_norm": N_("Mixtral is PRE-norm: each sublayer reads a normalised copy, and its raw output is added "
                          "to the un-normalised stream. Nothing normalises the stream itself inside a layer."),
    "layer_no_residual": N_("add each sublayer's output to the stream it read from: the stream is only ever added to."),
    "layer_no_attn_residual": N_("keep the residual around attention: its output is added to the layer's input."),
    "layer_no_moe_residual": N_("keep the residual around the MoE block: its output is added to the stream after "
                                "attention."),
    "layer_normed_residual": N_("the residual is the stream BEFORE the norm, not the normalised copy."),
    "layer_same_norm": N_("the MoE block has its own norm, layer.post_attention_layernorm."),
    "layer_moe_on_x": N_("the two sublayers run one after the other: the MoE block reads (a norm of) the stream after "
                         "attention's update, not the layer's input."),
    "layer_no_mask": N_("pass the attention mask to self_attn: without it every token sees the future."),
    "layer_default": N_("two steps: attention adds to the stream, then the MoE adds to the result; each reads its "
                        "own norm of the stream it adds to."),

    "dla_what": N_("contributions"),
    "dla_passed": N_("your contributions add up to the model's logits and match in all {n} cases."),
    "dla_type": N_("return a 1-D tensor of 2L + 1 numbers, got a {kind}."),
    "dla_shape": N_("return 2L + 1 numbers: the embeddings, then for every layer attention's update and the MoE's "
                    "update."),
    "dla_no_norm": N_("the final RMSNorm sits between the stream and lm_head: scale each part by the norm's weight and "
                      "by 1 / RMS of the whole stream."),
    "dla_own_rms": N_("RMSNorm divides the whole vector by ONE number, the RMS of the full stream at that token: "
                      "do not normalise each part by its own RMS."),
    "dla_no_weight": N_("the final norm also multiplies by its learned weight, channel by channel."),
    "dla_no_eps": N_("the final norm's RMS includes eps: 1 / sqrt(mean square + eps)."),
    "dla_order": N_("the order is: embeddings, then for each layer attention's update before the MoE's."),
    "dla_cumulative": N_("use the updates (hook_attn_out, block_sparse_moe.hook_out), not the stream after them: the "
                         "stream already contains every earlier part, so it would be counted again and again."),
    "dla_position": N_("read position t of row b: the contributions of one token's stream."),
    "dla_row": N_("read the lm_head row of target_id: the logit you explain is the one of that token."),
    "dla_default": N_("each part p contributes (p * norm.weight / rms(stream)) . lm_head.weight[target_id]; "
                      "together they must add up to the logit."),
}


def _bf16_exact(label: str, args: tuple, kwargs: dict) -> float:
    return 0.0 if "bfloat16" in label else 1e-5  # bf16 must match bit for bit: the order of casts shows


# -- 05.1 find the bug: RMSNorm ------------------------------------------------------------------------

def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """The package's MixtralRMSNorm with the given weight and eps."""
    norm = MixtralRMSNorm(x.shape[-1], eps=eps).to(weight.dtype)
    with torch.no_grad():
        norm.weight.copy_(weight)
        return norm(x)


def rms_cases():
    g = torch.Generator().manual_seed(7)
    w = torch.randn(16, generator=g) * 0.3 + 1.0
    return [
        ("float32, (3, 16), eps 1e-5", (torch.randn(3, 16, generator=g), w, 1e-5), {}),
        (N_("float32, (B, T, C) = (2, 3, 16), non-zero mean, eps 1e-6"),
         (torch.randn(2, 3, 16, generator=g) * 3 + 0.5, w, 1e-6), {}),
        (N_("float32, small inputs where eps matters, eps 1e-3"), (torch.randn(2, 16, generator=g) * 3e-2, w, 1e-3),
         {}),
        (N_("float32, a zero vector (a pad's embedding) and eps 0.1"),
         (torch.cat([torch.zeros(1, 16), torch.randn(1, 16, generator=g) * 0.2]), w, 0.1), {}),
        (N_("bfloat16 input and weight (as in a bfloat16 model), eps 1e-5"),
         ((torch.randn(4, 64, generator=g) * 5).bfloat16(), (torch.randn(64, generator=g) * 0.5 + 1).bfloat16(),
          1e-5), {}),
    ]


def _rms_variants(x, weight, eps):
    xf = x.float()
    ms = xf.pow(2).mean(-1, keepdim=True)
    back = lambda y: y.to(x.dtype)  # noqa: E731
    return [
        (MSG["rms_fixed_eps"], lambda: rms_norm(x, weight, 1e-5)),
        (MSG["rms_fixed_eps"], lambda: rms_norm(x, weight, 1e-6)),
        (MSG["rms_weight_first"], lambda: back(weight.float() * xf * torch.rsqrt(ms + eps))),
        (MSG["rms_layernorm"], lambda: weight * back((xf - xf.mean(-1, keepdim=True)) * torch.rsqrt(
            xf.var(-1, keepdim=True, unbiased=False) + eps))),
        (MSG["rms_no_eps"], lambda: weight * back(xf * torch.rsqrt(ms))),
        (MSG["rms_eps_outside"], lambda: weight * back(xf / (ms.sqrt() + eps))),
        (MSG["rms_sum"], lambda: weight * back(xf * torch.rsqrt(xf.pow(2).sum(-1, keepdim=True) + eps))),
        (MSG["rms_no_weight"], lambda: back(xf * torch.rsqrt(ms + eps))),
        (MSG["rms_no_upcast"], lambda: weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))),
        (MSG["rms_wrong_dim"], lambda: weight * back(xf * torch.rsqrt(xf.pow(2).mean(0, keepdim=True) + eps))),
    ]


def _diagnose_rms(got, want, x, weight, eps):
    if got.shape == want.shape and got.dtype != want.dtype:
        return MSG["rms_dtype"]
    return name_the_mistake(got, _rms_variants(x, weight, eps), atol=0.0 if x.dtype == torch.bfloat16 else 1e-6,
                            default=MSG["rms_default"])


@checker
def check_rms_norm(fn: Callable) -> ExerciseResult:
    """fn(x (..., C), weight (C,), eps) -> RMSNorm(x), in x's dtype, bit for bit in bfloat16; eps varies."""
    return run_cases(fn, rms_norm, rms_cases(), _diagnose_rms, MSG["rms_what"], atol=_bf16_exact)


# -- 05.2 implement: one decoder layer's wiring -----------------------------------------------------------

_LAYERS = {}


def _small_config(**overrides):
    from ..modeling.config import MixtralConfig
    kw = dict(vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=1, num_attention_heads=4,
              num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=32,
              rope_theta=1e4, attn_implementation="eager")
    kw.update(overrides)
    return MixtralConfig(**kw)


def _randomise(module: torch.nn.Module) -> None:
    """Weights large enough that every wiring mistake shows; norm weights away from 1."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25)


def _layer(seed: int) -> MixtralDecoderLayer:
    """A small random eager decoder layer, made once per seed without touching the global RNG."""
    if seed not in _LAYERS:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            layer = MixtralDecoderLayer(_small_config(), 0).eval()
            _randomise(layer)
        _LAYERS[seed] = layer
    return _LAYERS[seed]


def reference_decoder_layer(layer, hidden_states, attention_mask, position_ids):
    """The package's MixtralDecoderLayer.forward, output hidden states only."""
    with torch.no_grad():
        return layer(hidden_states, attention_mask=attention_mask, position_ids=position_ids)[0]


def _causal(b: int, t: int) -> torch.Tensor:
    hidden = torch.ones(t, t, dtype=torch.bool).triu(1)
    return torch.zeros(b, 1, t, t).masked_fill(hidden, torch.finfo(torch.float32).min)   # (B, 1, T, T)


def layer_cases():
    g = torch.Generator().manual_seed(11)
    out = []
    for label, seed, (b, t) in [("B=1, T=4", 0, (1, 4)), ("B=2, T=6", 1, (2, 6)),
                                (N_("B=2, T=5, another layer"), 2, (2, 5))]:
        x = torch.randn(b, t, 16, generator=g) * 2
        out.append((label, (_layer(seed), x, _causal(b, t), torch.arange(t)[None]), {}))
    return out


def _diagnose_layer(got, want, layer, x, mask, pos):
    if isinstance(got, tuple):
        return MSG["layer_tuple"]
    if not isinstance(got, torch.Tensor) or got.shape != x.shape:
        return MSG["layer_shape"]
    attn = lambda h, m=mask: layer.self_attn(h, attention_mask=m, position_ids=pos)[0]  # noqa: E731
    moe = lambda h: layer.block_sparse_moe(h)[0]  # noqa: E731
    ln1, ln2 = layer.input_layernorm, layer.post_attention_layernorm
    with torch.no_grad():
        h = x + attn(ln1(x))
        return name_the_mistake(got, [
            (MSG["layer_post_norm"], lambda: ln2((y := ln1(x + attn(x))) + moe(y))),
            (MSG["layer_post_norm"], lambda: ln2((y := ln1(x + attn(ln1(x)))) + moe(ln2(y)))),
            (MSG["layer_no_residual"], lambda: moe(ln2(attn(ln1(x))))),
            (MSG["layer_no_attn_residual"], lambda: (a := attn(ln1(x))) + moe(ln2(a))),
            (MSG["layer_no_moe_residual"], lambda: moe(ln2(h))),
            (MSG["layer_normed_residual"], lambda: (n := ln1(x)) + attn(n) + moe(ln2(n + attn(n)))),
            (MSG["layer_same_norm"], lambda: h + moe(ln1(h))),
            (MSG["layer_moe_on_x"], lambda: h + moe(ln2(x))),
            (MSG["layer_no_mask"], lambda: (h0 := x + attn(ln1(x), None)) + moe(ln2(h0))),
        ], atol=1e-5, default=MSG["layer_default"])


@checker
def check_decoder_layer(fn: Callable) -> ExerciseResult:
    """fn(layer, hidden_states, attention_mask, position_ids) -> the layer's output hidden states."""
    result = run_cases(fn, reference_decoder_layer, layer_cases(), _diagnose_layer, MSG["layer_what"], atol=1e-5)
    if not result and "must match the size" in result.message:   # a shape clash: a whole tuple, or its wrong item
        return ExerciseResult(False, result.message.split("\n" + _("Hint: "))[0], MSG["layer_shape"])
    return result


# -- 05.3 implement: what each part of the stream adds to one logit (direct logit attribution) -----------

_MODELS = {}


def _model(seed: int):
    """A small random eager MixtralForCausalLM (L = 2), made once per seed without touching the global RNG."""
    if seed not in _MODELS:
        from ..modeling.causal_lm import MixtralForCausalLM
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = MixtralForCausalLM(_small_config(num_hidden_layers=2, rms_norm_eps=1e-2)).eval()
            _randomise(model)
        _MODELS[seed] = model
    return _MODELS[seed]


ACT_NAMES = ["model.layers.0.hook_resid_pre", "*.hook_attn_out", "*.block_sparse_moe.hook_out", "*.hook_resid_post",
             "*.hook_resid_mid", "model.hook_final_norm"]


def _acts(model, seed: int):
    from ..observe.capture import run_with_cache
    ids = torch.randint(4, model.config.vocab_size, (2, 5), generator=torch.Generator().manual_seed(seed))
    out, acts = run_with_cache(model, ids, names=ACT_NAMES)
    return out.logits, acts


def _parts(model, acts, b, t, cumulative=False, order=("hook_attn_out", "block_sparse_moe.hook_out")):
    L = model.config.num_hidden_layers
    parts = [acts["model.layers.0.hook_resid_pre"][b, t]]
    for i in range(L):
        if cumulative:
            parts += [acts[f"model.layers.{i}.hook_resid_mid"][b, t], acts[f"model.layers.{i}.hook_resid_post"][b, t]]
        else:
            parts += [acts[f"model.layers.{i}.{name}"][b, t] for name in order]
    return torch.stack(parts)                                                     # (2L + 1, C)


def logit_contributions(model, acts, b: int, t: int, target_id: int) -> torch.Tensor:
    """The reference: each part, scaled as the final norm scales the whole stream, dotted with lm_head's row."""
    norm = model.model.norm
    parts = _parts(model, acts, b, t)                                             # (2L + 1, C)
    stream = acts[f"model.layers.{model.config.num_hidden_layers - 1}.hook_resid_post"][b, t]   # (C,)
    inv_rms = torch.rsqrt(stream.pow(2).mean() + norm.variance_epsilon)
    return (parts * inv_rms * norm.weight) @ model.lm_head.weight[target_id]


def _dla_variants(model, acts, b, t, target_id):
    norm, row = model.model.norm, model.lm_head.weight[target_id]
    parts = _parts(model, acts, b, t)
    stream = parts.sum(0)
    inv = torch.rsqrt(stream.pow(2).mean() + norm.variance_epsilon)
    own = torch.rsqrt(parts.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    swapped = _parts(model, acts, b, t, order=("block_sparse_moe.hook_out", "hook_attn_out"))
    return [
        (MSG["dla_no_norm"], lambda: parts @ row),
        (MSG["dla_no_norm"], lambda: (parts * norm.weight) @ row),
        (MSG["dla_own_rms"], lambda: (parts * own * norm.weight) @ row),
        (MSG["dla_no_weight"], lambda: (parts * inv) @ row),
        (MSG["dla_no_eps"], lambda: (parts * torch.rsqrt(stream.pow(2).mean()) * norm.weight) @ row),
        (MSG["dla_order"], lambda: (swapped * inv * norm.weight) @ row),
        (MSG["dla_cumulative"], lambda: (_parts(model, acts, b, t, cumulative=True) * inv * norm.weight) @ row),
        (MSG["dla_row"], lambda: (parts * inv * norm.weight) @ model.lm_head.weight[(target_id + 1) % row.numel()]),
    ]


DLA_CASES = [(N_("row 0, token 4"), 0, 0, 4, 7), (N_("row 1, token 2"), 1, 1, 2, 19),
             (N_("row 1, token 0"), 2, 1, 0, 5)]


@checker
def check_logit_contributions(fn: Callable) -> ExerciseResult:
    """fn(model, acts, b, t, target_id) -> (2L + 1,) contributions that add up to logits[b, t, target_id]."""
    for label, seed, b, t, target in DLA_CASES:
        model = _model(seed)
        logits, acts = _acts(model, seed)
        with torch.no_grad():
            want = logit_contributions(model, acts, b, t, target)
            got = call(fn, model, _acts(model, seed)[1], b, t, target, label=label)   # fresh acts for the learner
            if not isinstance(got, torch.Tensor):
                raise NotYet(_(MSG["dla_type"]).format(kind=type(got).__name__), MSG["dla_shape"])
            hint = lambda: (MSG["dla_shape"] if got.shape != want.shape else  # noqa: E731
                            name_the_mistake(got, _dla_variants(model, acts, b, t, target), atol=1e-4,
                                             default=MSG["dla_position"] if _other_token(got, model, acts, b, t, target)
                                             else MSG["dla_default"]))
            expect_same(got, want, label, hint, atol=1e-4, what=MSG["dla_what"], check_dtype=False)
    return ExerciseResult(True, _(MSG["dla_passed"]).format(n=len(DLA_CASES)))


def _other_token(got, model, acts, b, t, target) -> bool:
    """Did the learner explain another token's stream (a wrong b or t)?"""
    B, T = acts["model.layers.0.hook_resid_pre"].shape[:2]
    return any(name_the_mistake(got, [("x", lambda bb=bb, tt=tt: logit_contributions(model, acts, bb, tt, target))],
                                atol=1e-4) for bb in range(B) for tt in range(T) if (bb, tt) != (b, t))


EXERCISES = {
    "05.1": ("rms_norm", check_rms_norm),
    "05.2": ("decoder_layer", check_decoder_layer),
    "05.3": ("logit_contributions", check_logit_contributions),
}
