"""Every figure of mixtral_edu.full_size.sizes checked against something computed another way:
the published sizes, a real or meta-device model, a real cache, torch's FLOP counter."""
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from mixtral_edu import DynamicCache, MixtralConfig, MixtralForCausalLM
from mixtral_edu.full_size.presets import PRESETS, get_preset, mixtral_8x7b, mixtral_8x22b, tiny
from mixtral_edu.full_size.sizes import (build_on_meta, count_module_parameters, flops_per_token, format_count,
                               kv_cache_bytes, kv_cache_bytes_per_token, measure_cache_bytes, meta_forward,
                               parameter_count, shape_table)


def small(**overrides) -> MixtralConfig:
    fields = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2,
                  sliding_window=6, max_position_embeddings=64)
    fields.update(overrides)
    return MixtralConfig(**fields)


# Different GQA groupings (MHA, GQA, MQA), tied embeddings, top-1 and top-all routing.
SMALL_CONFIGS = {
    "gqa": small(),
    "mha": small(num_key_value_heads=4),
    "mqa": small(num_key_value_heads=1),
    "tied": small(tie_word_embeddings=True),
    "top1_of_3": small(num_local_experts=3, num_experts_per_tok=1, num_hidden_layers=3),
    "dense_moe": small(num_local_experts=2, num_experts_per_tok=2),
    "tiny": tiny(),
}


@pytest.fixture(scope="module")
def meta_8x7b():
    return build_on_meta(mixtral_8x7b())


@pytest.fixture(scope="module")
def meta_8x22b():
    return build_on_meta(mixtral_8x22b())


def real_model(config: MixtralConfig, dtype=torch.float32) -> MixtralForCausalLM:
    torch.manual_seed(0)
    return MixtralForCausalLM(config).eval().to(dtype)


# -- presets ----------------------------------------------------------------------

def test_presets_are_fresh_and_named():
    a, b = get_preset("mixtral-8x7b"), get_preset("Mixtral_8x7B")
    a.num_hidden_layers = 1
    assert b.num_hidden_layers == 32 and set(PRESETS) == {"mixtral-8x7b", "mixtral-8x22b", "tiny"}
    with pytest.raises(ValueError, match="mixtral-8x22b, mixtral-8x7b, tiny"):
        get_preset("mixtral-7x8b")
    big = mixtral_8x22b()
    assert (big.hidden_size, big.num_hidden_layers, big.head_dim, big.max_position_embeddings) == (6144, 56, 128, 65536)


# -- parameters -------------------------------------------------------------------

def test_published_parameter_counts():
    # the published figures, to the precision they are printed with
    p7, p22 = parameter_count(mixtral_8x7b()), parameter_count(mixtral_8x22b())
    assert (format_count(p7.total), format_count(p7.active)) == ("46.70B", "12.88B")
    assert (format_count(p22.total), format_count(p22.active)) == ("140.6B", "39.15B")
    assert (p7.total, p7.active) == (46_702_792_704, 12_879_925_248)
    assert (p22.total, p22.active) == (140_620_634_112, 39_152_031_744)


def test_8x22b_vocab_choice():
    # 32768 (32000 + 768 control tokens) would not reproduce the published 39.15B active
    cfg = mixtral_8x22b()
    cfg.vocab_size = 32768
    assert format_count(parameter_count(cfg).active) == "39.16B"


def test_parameter_count_matches_meta_8x7b(meta_8x7b):
    assert count_module_parameters(meta_8x7b) == parameter_count(mixtral_8x7b())


def test_parameter_count_matches_meta_8x22b(meta_8x22b):
    assert count_module_parameters(meta_8x22b) == parameter_count(mixtral_8x22b())


@pytest.mark.parametrize("name", SMALL_CONFIGS)
def test_parameter_count_matches_small_models(name):
    cfg = SMALL_CONFIGS[name]
    counted = count_module_parameters(build_on_meta(cfg))
    assert counted == parameter_count(cfg)
    # and against transformers' own model, an independent implementation
    import transformers
    hf_cfg = transformers.MixtralConfig(**{k: v for k, v in cfg.to_dict().items() if k != "architectures"})
    with torch.device("meta"):
        hf = transformers.MixtralForCausalLM(hf_cfg)
    assert sum(p.numel() for p in hf.parameters()) == counted.total
    if cfg.tie_word_embeddings:
        assert counted.breakdown["lm_head"] == 0


def test_count_on_a_real_model_equals_meta():
    cfg = SMALL_CONFIGS["tied"]
    assert count_module_parameters(real_model(cfg)) == count_module_parameters(build_on_meta(cfg))


# -- the KV cache -------------------------------------------------------------------

def test_kv_bytes_per_token_published():
    # 2 (k, v) * 32 layers * 8 kv heads * 128 dims * 2 bytes = 128 KiB per token
    assert kv_cache_bytes_per_token(mixtral_8x7b()) == 2 * 32 * 8 * 128 * 2 == 128 * 1024
    assert kv_cache_bytes(mixtral_8x7b(), 32768) == 4 * 2**30
    assert kv_cache_bytes_per_token(mixtral_8x22b(), torch.float32) == 2 * 56 * 8 * 128 * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_bytes_match_a_real_cache(dtype):
    cfg = tiny()
    model = real_model(cfg, dtype)
    B, T = 2, cfg.sliding_window + 8   # longer than the window: 4.41's DynamicCache keeps everything
    cache = DynamicCache()
    with torch.no_grad():
        out = model(torch.randint(0, cfg.vocab_size, (B, T)), past_key_values=cache, use_cache=True)
        assert out.past_key_values is cache and cache.key_cache[0].dtype == dtype
        assert measure_cache_bytes(cache) == kv_cache_bytes(cfg, T, B, dtype) == cache.nbytes()
        assert measure_cache_bytes(cache.to_legacy_cache()) == measure_cache_bytes(cache)
        # a rolling buffer (Mistral's reference) would hold only the last W tokens
        assert kv_cache_bytes(cfg, T, B, dtype, rolling_window=True) == kv_cache_bytes(cfg, cfg.sliding_window, B, dtype)
        model(torch.randint(0, cfg.vocab_size, (B, 1)), past_key_values=cache, use_cache=True)
    assert measure_cache_bytes(cache) == kv_cache_bytes(cfg, T + 1, B, dtype)
    assert measure_cache_bytes(cache) - kv_cache_bytes(cfg, T, B, dtype) == B * kv_cache_bytes_per_token(cfg, dtype)


# -- FLOPs ------------------------------------------------------------------------

@pytest.mark.parametrize("make", [mixtral_8x7b, mixtral_8x22b, tiny, small])
@pytest.mark.parametrize("context_len", [0, 1000])
def test_flops_dense_vs_active(make, context_len):
    cfg = make()
    f, p = flops_per_token(cfg, context_len), parameter_count(cfg)
    assert 0 < f.active < f.dense and sum(f.breakdown.values()) == f.active
    E, K = cfg.num_local_experts, cfg.num_experts_per_tok
    assert f.dense - f.active == cfg.num_hidden_layers * (E - K) * p.breakdown["expert"] * 2
    # independent rule of thumb: 2 FLOPs per weight a token meets in a matrix product
    # (all active parameters but the embedding lookup and the norms), plus attention over S keys
    matmul_weights = p.active - p.breakdown["embeddings"] - p.breakdown["norms"]
    if cfg.tie_word_embeddings:
        matmul_weights += p.breakdown["embeddings"]  # the tied matrix is also the lm_head
    H, D, S = cfg.num_attention_heads, cfg.head_dim, context_len + 1
    assert f.active == 2 * matmul_weights + cfg.num_hidden_layers * 4 * H * D * S


def _counted_by_component(counter: FlopCounterMode) -> dict:
    """Sum FlopCounterMode's per-module totals into our breakdown's components."""
    parts = dict.fromkeys(["attention_projections", "attention_scores", "router", "experts", "lm_head"], 0)
    for module, ops in counter.get_flop_counts().items():
        n = sum(ops.values())
        if re.search(r"self_attn\.[qkvo]_proj$", module):
            parts["attention_projections"] += n
        elif module.endswith("self_attn"):
            parts["attention_scores"] += n  # everything in self_attn ...
        elif module.endswith("block_sparse_moe.gate"):
            parts["router"] += n
        elif re.search(r"experts\.\d+$", module):
            parts["experts"] += n
        elif module.endswith("lm_head"):
            parts["lm_head"] += n
    parts["attention_scores"] -= parts["attention_projections"]  # ... minus its projections: the two bmm
    return parts


@pytest.mark.parametrize("name,context_len", [("gqa", 0), ("mqa", 3), ("tied", 0), ("gqa", 11)])
def test_flops_match_torch_flop_counter(name, context_len):
    # FlopCounterMode counts matrix products only (mm, bmm, ...), at 2 FLOPs per
    # multiply-add, which is exactly what flops_per_token models; the element-wise
    # work both leave out (norms, rotary, softmax, SiLU, routing weights) is why the
    # true op count is a little higher. With one token exactly K experts run.
    # context_len 11 > sliding_window 6: 4.41 still scores all 12 keys (mask after the product).
    cfg = SMALL_CONFIGS[name]
    model = real_model(cfg)
    cache = DynamicCache()
    with torch.no_grad():
        if context_len:
            model(torch.randint(0, cfg.vocab_size, (1, context_len)), past_key_values=cache, use_cache=True)
        with FlopCounterMode(display=False) as counter:
            model(torch.randint(0, cfg.vocab_size, (1, 1)), past_key_values=cache, use_cache=True)
    expected = flops_per_token(cfg, context_len)
    assert _counted_by_component(counter) == expected.breakdown
    assert counter.get_total_flops() == expected.active


# -- the meta device ---------------------------------------------------------------

def _expected_shapes(cfg, B, T, P):
    S, N = P + T, B * T
    kv = (B, cfg.num_key_value_heads, S, cfg.head_dim)
    return {"logits": (B, T, cfg.vocab_size),
            "past_key_values": [(kv, kv)] * cfg.num_hidden_layers,
            "router_logits": [(N, cfg.num_local_experts)] * cfg.num_hidden_layers}


def test_meta_forward_8x7b(meta_8x7b):
    cfg = mixtral_8x7b()
    assert all(p.is_meta for p in meta_8x7b.parameters())
    assert meta_forward(cfg, batch_size=2, seq_len=3, past_len=5, model=meta_8x7b) == _expected_shapes(cfg, 2, 3, 5)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("B,T,P", [(1, 16, 0), (3, 1, 7)])
def test_meta_forward_matches_a_real_forward(attn, B, T, P):
    cfg = small(attn_implementation=attn)
    shapes = meta_forward(cfg, batch_size=B, seq_len=T, past_len=P)
    assert shapes == _expected_shapes(cfg, B, T, P)
    model, cache = real_model(cfg), DynamicCache()
    with torch.no_grad():
        if P:
            model(torch.zeros(B, P, dtype=torch.long), past_key_values=cache, use_cache=True)
        out = model(torch.zeros(B, T, dtype=torch.long), past_key_values=cache, use_cache=True,
                    output_router_logits=True)
    assert tuple(out.logits.shape) == shapes["logits"]
    assert [(tuple(k.shape), tuple(v.shape)) for k, v in out.past_key_values] == shapes["past_key_values"]
    assert [tuple(r.shape) for r in out.router_logits] == shapes["router_logits"]


# -- the shape table ---------------------------------------------------------------

@pytest.mark.parametrize("name", ["gqa", "tied", "top1_of_3"])
def test_shape_table_parameters_match_the_model(name):
    cfg = SMALL_CONFIGS[name]
    rows = [r for r in shape_table(cfg) if r["kind"] == "parameter"]
    assert sum(r["total"] for r in rows) == parameter_count(cfg).total
    expanded = {}
    for r in rows:
        if r["repeat"] == 0:
            continue  # tied lm_head: not a parameter of its own
        for i in range(cfg.num_hidden_layers):
            for e in range(cfg.num_local_experts):
                expanded[r["name"].format(i=i, e=e)] = r["shape"]
    real = {n: tuple(p.shape) for n, p in build_on_meta(cfg).named_parameters()}
    assert expanded == real


def test_shape_table_activations_match_hooks():
    cfg = SMALL_CONFIGS["gqa"]
    B, T, P = 2, 5, 3
    model = real_model(cfg)
    seen = {}
    for name, point in model.hook_points().items():
        point.fns.append(lambda x, hp: seen.setdefault(hp.name, []).append(tuple(x.shape)))
    cache = DynamicCache()
    try:
        with torch.no_grad():
            model(torch.zeros(B, P, dtype=torch.long), past_key_values=cache, use_cache=True)
            seen.clear()
            model(torch.randint(0, cfg.vocab_size, (B, T)), past_key_values=cache, use_cache=True)
    finally:
        model.reset_hooks()
    rows = [r for r in shape_table(cfg, batch_size=B, seq_len=T, past_len=P) if r["kind"] == "activation"]
    checked = 0
    for r in rows:
        if "{e}" in r["name"]:  # per expert: n_e rows each, N*K in all
            pattern = re.escape(r["name"].format(i=0, e="@")).replace("@", r"\d+")
            shapes = [s for n, ss in seen.items() if re.fullmatch(pattern, n) for s in ss]
            assert all(s[1:] == r["shape"][1:] for s in shapes)
            assert sum(s[0] for s in shapes) == B * T * cfg.num_experts_per_tok
        elif r["name"] == "past_key_values[i]":
            assert tuple(cache.key_cache[0].shape) == r["shape"] == tuple(cache.value_cache[0].shape)
        elif r["name"] == "input_ids":
            assert r["shape"] == (B, T)
        else:
            assert seen[r["name"].format(i=0)] == [r["shape"]], r["name"]
        checked += 1
    assert checked == len(rows) > 20
