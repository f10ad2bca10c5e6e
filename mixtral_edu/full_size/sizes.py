"""How big is a Mixtral? Parameters, KV-cache bytes, FLOPs per token and tensor shapes,
all worked out from the config alone (and cross-checked against real models in tests).

Shapes use the legend of `mixtral_edu.modeling.config`. Run `python -m mixtral_edu.full_size.sizes`
for a summary of the published models.

The one idea behind every number: a token passes through all of attention but
through only K of the E experts of each layer. So a Mixtral *stores* E experts'
weights per layer but *uses* K of them per token ("total" vs "active").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..modeling.cache import DynamicCache
from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.config import MixtralConfig
from ..observe.meta import routing_on_meta


# -- argument checks -------------------------------------------------------------

def _check_config(fn: str, config) -> None:
    if not isinstance(config, MixtralConfig):
        kind = type(config)
        hint = (" For a transformers config: MixtralConfig.from_dict(config.to_dict())."
                if kind.__module__.startswith("transformers") else "")
        raise TypeError(f"{fn}() needs a mixtral_edu MixtralConfig, got {kind.__module__}.{kind.__name__}. "
                        f"e.g. {fn}(mixtral_edu.presets.get_preset('mixtral-8x7b')).{hint}")


def _check_count(fn: str, name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{fn}(): `{name}` must be an int (a number of tokens or sequences), got {value!r} "
                        f"({type(value).__name__}). Pass e.g. {name}=4096 without quotes.")
    if value < minimum:
        raise ValueError(f"{fn}(): `{name}` must be >= {minimum}, got {value}.")


def _check_dtype(fn: str, dtype) -> None:
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"{fn}(): `dtype` must be a torch.dtype such as torch.bfloat16, got {dtype!r}.")


# -- parameters ------------------------------------------------------------------

@dataclass(frozen=True)
class ParameterCount:
    """total: every stored parameter; active: those one token uses (all but E-K experts per layer).

    breakdown: embeddings, lm_head (0 when tied to the embeddings), attention_per_layer,
    router_per_layer, experts_per_layer (all E), expert (one), norms (all 2L+1 of them).
    """
    total: int
    active: int
    breakdown: Dict[str, int]

    def __str__(self) -> str:
        return f"{format_count(self.total)} total, {format_count(self.active)} active"


def parameter_count(config: MixtralConfig) -> ParameterCount:
    """Count parameters by formula (no model is built). Linear layers have no biases."""
    _check_config("parameter_count", config)
    C, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    E, K = config.num_local_experts, config.num_experts_per_tok

    attention = C * H * D + 2 * C * Hkv * D + H * D * C   # q_proj, k_proj + v_proj (GQA: only Hkv heads), o_proj
    router = C * E                                        # gate: one score per expert
    expert = 3 * C * I                                    # w1 and w3 (I, C), w2 (C, I)
    breakdown = {
        "embeddings": V * C,
        "lm_head": 0 if config.tie_word_embeddings else V * C,  # tied: the same matrix, stored once
        "attention_per_layer": attention,
        "router_per_layer": router,
        "experts_per_layer": E * expert,
        "expert": expert,
        "norms": (2 * L + 1) * C,                         # two RMSNorms per layer + the final one
    }
    total = (breakdown["embeddings"] + breakdown["lm_head"] + breakdown["norms"]
             + L * (attention + router + E * expert))
    # per token only K experts run in each layer; everything else (router included) always runs
    active = total - L * (E - K) * expert
    return ParameterCount(total, active, breakdown)


def count_module_parameters(model: nn.Module) -> ParameterCount:
    """The same ParameterCount, counted from a real or meta-device model's parameters.

    Shared (tied) tensors are counted once, as `model.parameters()` yields them once.
    Per-layer entries come from layer 0; `active` drops experts K..E-1 of every layer.
    """
    cfg = model.config
    breakdown = dict.fromkeys(["embeddings", "lm_head", "attention_per_layer", "router_per_layer",
                               "experts_per_layer", "expert", "norms"], 0)
    total = inactive = 0
    for name, p in model.named_parameters():
        n = p.numel()
        total += n
        layer = re.search(r"layers\.(\d+)\.", name)
        expert = re.search(r"experts\.(\d+)\.", name)
        if expert and int(expert.group(1)) >= cfg.num_experts_per_tok:
            inactive += n
        if "embed_tokens" in name:
            breakdown["embeddings"] += n
        elif name.startswith("lm_head"):
            breakdown["lm_head"] += n
        elif name.endswith("norm.weight"):
            breakdown["norms"] += n
        elif layer is None or layer.group(1) != "0":
            continue  # the other layers repeat layer 0
        elif ".self_attn." in name:
            breakdown["attention_per_layer"] += n
        elif ".gate." in name:
            breakdown["router_per_layer"] += n
        elif expert:
            breakdown["experts_per_layer"] += n
            breakdown["expert"] += n if expert.group(1) == "0" else 0
        else:
            raise ValueError(f"Parameter {name!r} belongs to no known component.")
    return ParameterCount(total, total - inactive, breakdown)


# -- the KV cache ------------------------------------------------------------------

def kv_cache_bytes_per_token(config: MixtralConfig, dtype: torch.dtype = torch.bfloat16) -> int:
    """2 (key and value) x L x Hkv x D x bytes per element: what one more cached token costs.

    GQA is why this is small: 8 kv heads are cached, not all H query heads.
    """
    _check_config("kv_cache_bytes_per_token", config)
    _check_dtype("kv_cache_bytes_per_token", dtype)
    return 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * dtype.itemsize


def kv_cache_bytes(config: MixtralConfig, seq_len: int, batch_size: int = 1,
                   dtype: torch.dtype = torch.bfloat16, rolling_window: bool = False) -> int:
    """Bytes of keys and values cached for `batch_size` sequences of `seq_len` tokens.

    rolling_window=False: transformers 4.41.2's DynamicCache, which keeps every token
    even with a sliding window (the mask merely hides the old ones).
    rolling_window=True: Mistral's reference implementation, a rolling buffer of
    `sliding_window` slots, so the cache stops growing at W tokens. With
    sliding_window=None (Mixtral's published configs) both agree.
    """
    _check_config("kv_cache_bytes", config)
    _check_count("kv_cache_bytes", "seq_len", seq_len, 0)
    _check_count("kv_cache_bytes", "batch_size", batch_size, 1)
    tokens = seq_len
    if rolling_window and config.sliding_window is not None:
        tokens = min(seq_len, config.sliding_window)
    return batch_size * tokens * kv_cache_bytes_per_token(config, dtype)


def measure_cache_bytes(cache) -> int:
    """Sum the bytes of a filled cache's tensors: a DynamicCache (ours or transformers') or a legacy tuple."""
    if hasattr(cache, "key_cache"):
        tensors = list(cache.key_cache) + list(cache.value_cache)
    else:  # legacy: ((key, value), ...) one pair per layer
        tensors = [t for pair in cache for t in pair]
    return sum(t.numel() * t.element_size() for t in tensors)


# -- FLOPs -------------------------------------------------------------------------

@dataclass(frozen=True)
class FlopCount:
    """Forward FLOPs for one token (2 per multiply-add), matrix products only.

    breakdown (sums to `active`): attention_projections, attention_scores (q.k and
    weights.v over the keys), router, experts (the K chosen ones), lm_head.
    experts_dense: what the experts would cost if all E ran; dense = active with that instead.
    """
    active: int
    dense: int
    experts_dense: int
    breakdown: Dict[str, int]

    def __str__(self) -> str:
        return f"{format_flops(self.active)} active, {format_flops(self.dense)} dense"


def flops_per_token(config: MixtralConfig, context_len: int = 0) -> FlopCount:
    """FLOPs for one new token when `context_len` tokens are already in the cache.

    The token attends to S = context_len + 1 keys (itself included). transformers 4.41
    scores all S keys even with a sliding window (the mask hides old ones only after
    the product), so S is not capped at W here. Left out: the embedding lookup (no
    arithmetic) and element-wise work (norms, rotary, softmax, SiLU, routing weights),
    which is O(C + H*S) per layer against O(C^2) for the products.
    """
    _check_config("flops_per_token", config)
    _check_count("flops_per_token", "context_len", context_len, 0)
    C, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    E, K = config.num_local_experts, config.num_experts_per_tok
    S = context_len + 1

    one_expert = 2 * 3 * C * I                       # w1, w3: C -> I; w2: I -> C
    breakdown = {
        "attention_projections": L * 2 * (C * H * D + 2 * C * Hkv * D + H * D * C),
        # every query head scores every key (GQA shares k/v storage, not this work)
        "attention_scores": L * 2 * (H * D * S + H * S * D),   # q.k^T, then weights.v
        "router": L * 2 * C * E,
        "experts": L * K * one_expert,
        "lm_head": 2 * C * V,
    }
    active = sum(breakdown.values())
    experts_dense = L * E * one_expert
    return FlopCount(active, active - breakdown["experts"] + experts_dense, experts_dense, breakdown)


# -- the model on the meta device ---------------------------------------------------

class _SkipInitOnMeta(TorchFunctionMode):
    """Make in-place random/constant initialisation of meta tensors a no-op.

    A meta tensor has no values to initialise, yet each `normal_` still runs through
    torch's Python reference code: skipping it builds 8x7B about twice as fast.
    """
    INIT_OPS = {torch.Tensor.normal_, torch.Tensor.uniform_, torch.Tensor.zero_, torch.Tensor.fill_}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in self.INIT_OPS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


def build_on_meta(config: MixtralConfig) -> MixtralForCausalLM:
    """The whole model with shapes but no storage: 8x22B's 141B parameters cost no memory."""
    with torch.device("meta"), _SkipInitOnMeta():
        return MixtralForCausalLM(config).eval()


@torch.no_grad()
def meta_forward(config: MixtralConfig, batch_size: int = 1, seq_len: int = 16, past_len: int = 0,
                 model: Optional[MixtralForCausalLM] = None) -> Dict[str, object]:
    """Run a forward pass on meta tensors; return the output shapes.

    logits (B, T, V); past_key_values: L pairs of (B, Hkv, S, D); router_logits: L of (N, E).
    past_len > 0 starts from a cache of that many (meta) tokens, as in decoding.
    `model`: a meta model of this config to reuse (building 8x22B takes seconds).
    """
    model = build_on_meta(config) if model is None else model
    B, T, S = batch_size, seq_len, past_len + seq_len
    cache = DynamicCache()
    for layer in range(config.num_hidden_layers):
        shape = (B, config.num_key_value_heads, past_len, config.head_dim)
        cache.update(torch.empty(shape, device="meta"), torch.empty(shape, device="meta"), layer)
    input_ids = torch.zeros(B, T, dtype=torch.long, device="meta")
    with routing_on_meta():  # the MoE loop's per-expert row counts are placeholders, no shape here is
        out = model(input_ids, past_key_values=cache, use_cache=True, output_router_logits=True)
    assert out.past_key_values.get_seq_length() == S
    return {
        "logits": tuple(out.logits.shape),
        "past_key_values": [(tuple(k.shape), tuple(v.shape)) for k, v in out.past_key_values],
        "router_logits": [tuple(r.shape) for r in out.router_logits],
    }


# -- a shape table for teaching ----------------------------------------------------

def shape_table(config: MixtralConfig, batch_size: int = 1, seq_len: int = 16,
                past_len: int = 0) -> List[dict]:
    """Rows describing every parameter and every intermediate tensor, in forward order.

    Each row is a dict: kind ("parameter" or "activation"), name (parameter path or
    hook point, `{i}` = layer, `{e}` = expert), symbols (e.g. "(B, T, C)"), shape (ints;
    -1 where the size depends on routing), numel, repeat (how many such tensors the
    model holds; parameters only), total (numel * repeat) and note.
    """
    _check_config("shape_table", config)
    for name, value, low in (("batch_size", batch_size, 1), ("seq_len", seq_len, 1), ("past_len", past_len, 0)):
        _check_count("shape_table", name, value, low)
    c = config
    B, T, P = batch_size, seq_len, past_len
    sizes = {"B": B, "T": T, "S": P + T, "N": B * T, "C": c.hidden_size, "I": c.intermediate_size,
             "H": c.num_attention_heads, "Hkv": c.num_key_value_heads, "D": c.head_dim,
             "E": c.num_local_experts, "K": c.num_experts_per_tok, "V": c.vocab_size, "n_e": -1, "1": 1}
    L, E = c.num_hidden_layers, c.num_local_experts

    def dims(symbols: str) -> Tuple[int, ...]:
        out = []
        for part in symbols.strip("()").split(","):
            value = 1
            for factor in part.strip().split("*"):
                value *= sizes[factor.strip()]
            out.append(value)
        return tuple(out)

    def row(kind, name, symbols, repeat=None, note=""):
        shape = dims(symbols)
        numel = 0 if -1 in shape else int(torch.Size(shape).numel())
        total = None if repeat is None else numel * repeat
        return {"kind": kind, "name": name, "symbols": symbols, "shape": shape, "numel": numel,
                "repeat": repeat, "total": total, "note": note}

    def param(name, symbols, repeat=1, note=""):
        return row("parameter", name, symbols, repeat, note)

    def act(name, symbols, note=""):
        return row("activation", name, symbols, None, note)

    layer, attn, moe = "model.layers.{i}", "model.layers.{i}.self_attn", "model.layers.{i}.block_sparse_moe"
    expert = moe + ".experts.{e}"
    rows = [
        act("input_ids", "(B, T)", "token ids"),
        param("model.embed_tokens.weight", "(V, C)"),
        act("model.hook_embed", "(B, T, C)", "one row of embed_tokens per token"),
        act("model.hook_mask", "(B, 1, T, S)", "additive mask; None when nothing is hidden"),
        act(layer + ".hook_resid_pre", "(B, T, C)", "residual stream entering layer i"),
        param(layer + ".input_layernorm.weight", "(C)", L),
        param(attn + ".q_proj.weight", "(H*D, C)", L),
        param(attn + ".k_proj.weight", "(Hkv*D, C)", L, "GQA: only Hkv heads of keys"),
        param(attn + ".v_proj.weight", "(Hkv*D, C)", L),
        act(attn + ".hook_q", "(B, H, T, D)", "q_proj output split into heads, rotated"),
        act(attn + ".hook_k", "(B, Hkv, T, D)", "new keys, rotated"),
        act(attn + ".hook_v", "(B, Hkv, T, D)", "new values"),
        act("past_key_values[i]", "(B, Hkv, S, D)", "cached keys (and values) after this call"),
        act(attn + ".hook_attn_scores", "(B, H, T, S)", "eager only; k/v repeated G times first"),
        act(attn + ".hook_pattern", "(B, H, T, S)", "softmax over keys"),
        act(attn + ".hook_z", "(B, T, H*D)", "heads side by side"),
        param(attn + ".o_proj.weight", "(C, H*D)", L),
        act(layer + ".hook_attn_out", "(B, T, C)", "added to the residual stream"),
        act(layer + ".hook_resid_mid", "(B, T, C)"),
        param(layer + ".post_attention_layernorm.weight", "(C)", L),
        param(moe + ".gate.weight", "(E, C)", L, "the router"),
        act(moe + ".hook_router_logits", "(N, E)", "tokens flattened: N = B*T"),
        act(moe + ".hook_router_probs", "(N, E)"),
        act(moe + ".hook_topk_indices", "(N, K)"),
        act(moe + ".hook_topk_weights", "(N, K)", "renormalised to sum to 1"),
        param(expert + ".w1.weight", "(I, C)", L * E),
        param(expert + ".w3.weight", "(I, C)", L * E),
        param(expert + ".w2.weight", "(C, I)", L * E),
        act(expert + ".hook_in", "(n_e, C)", "n_e tokens chose expert e; sum over e is N*K"),
        act(expert + ".hook_out", "(n_e, C)", "w2(silu(w1 x) * w3 x); w1 x, w3 x are (n_e, I)"),
        act(moe + ".hook_out", "(B, T, C)", "weighted sum of the K experts' outputs"),
        act(layer + ".hook_resid_post", "(B, T, C)", "residual stream leaving layer i"),
        param("model.norm.weight", "(C)"),
        act("model.hook_final_norm", "(B, T, C)"),
        param("lm_head.weight", "(V, C)", 0 if c.tie_word_embeddings else 1,
              "tied: the embedding matrix, not stored again" if c.tie_word_embeddings else ""),
        act("hook_logits", "(B, T, V)", "fp32"),
    ]
    return rows


# -- printing ----------------------------------------------------------------------

def _scaled(value: float, units: List[Tuple[float, str]], digits: int = 4) -> str:
    """`digits` significant figures with the largest unit that keeps the value >= 1."""
    for scale, unit in units:
        if abs(value) >= scale:
            x = value / scale
            decimals = max(0, digits - len(str(int(abs(x)))))
            return f"{x:.{decimals}f}{unit}"
    return f"{value:g}"


def format_count(n: int) -> str:
    """46702792704 -> '46.70B' (four significant figures)."""
    return _scaled(n, [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K"), (1, "")])


def format_bytes(n: int) -> str:
    """131072 -> '128.0 KiB' (binary units)."""
    return _scaled(n, [(2**40, " TiB"), (2**30, " GiB"), (2**20, " MiB"), (2**10, " KiB"), (1, " B")])


def format_flops(n: int) -> str:
    """25500000000 -> '25.50 GFLOP'."""
    return _scaled(n, [(1e12, " TFLOP"), (1e9, " GFLOP"), (1e6, " MFLOP"), (1e3, " KFLOP"), (1, " FLOP")])


def summary(config: MixtralConfig, context_len: Optional[int] = None, dtype: torch.dtype = torch.bfloat16) -> str:
    """A few lines: parameters, KV cache per token and at `context_len` (default: the max), FLOPs per token."""
    context_len = config.max_position_embeddings if context_len is None else context_len
    p = parameter_count(config)
    f0, fc = flops_per_token(config), flops_per_token(config, context_len)
    name = str(dtype).replace("torch.", "")
    return "\n".join([
        f"parameters: {p}",
        f"KV cache ({name}): {format_bytes(kv_cache_bytes_per_token(config, dtype))} per token, "
        f"{format_bytes(kv_cache_bytes(config, context_len, dtype=dtype))} at {context_len} tokens",
        f"FLOPs per token, empty cache: {f0}",
        f"FLOPs per token, {context_len} tokens cached: {fc}",
    ])


if __name__ == "__main__":
    from .presets import PRESETS
    for preset_name, make in PRESETS.items():
        cfg = make()
        print(f"== {preset_name}")
        print(summary(cfg))
        if cfg.max_position_embeddings != 32768:
            print(f"KV cache at 32768 tokens: {format_bytes(kv_cache_bytes(cfg, 32768))}")
