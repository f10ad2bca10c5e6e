"""mixtral_edu.observe.capture: hook points, run_with_cache, scoped hooks, disable_expert."""
from __future__ import annotations

import re

import pytest
import torch

import mixtral_edu
from mixtral_edu.observe.capture import ActivationCache, EagerOnlyError, disable_expert, run_with_cache
from mixtral_edu.modeling.hook_points import HookPoint

PAD, BOS, EOS = 0, 1, 2
TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
            rope_theta=10000.0, initializer_range=0.2, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)
IDS = torch.tensor([[PAD, PAD, 5, 9, 33, 40], [4, 7, 11, 8, 12, 70]])
MASK = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])


def build(attn: str = "eager") -> mixtral_edu.MixtralForCausalLM:
    torch.manual_seed(0)
    return mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**TINY, attn_implementation=attn)).eval()


@pytest.fixture(scope="module")
def model():
    return build("eager")


@pytest.fixture(scope="module")
def sdpa_model():
    return build("sdpa")


def assert_no_hook_fns(model) -> None:
    assert all(not p.fns for p in model.hook_points().values())
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def documented_shape(doc: str, sizes: dict) -> tuple:
    """'(B, H, T, D) queries ...' -> (2, 4, 6, 8); products like H*D multiply; n_e -> None (varies)."""
    symbols = re.match(r"\(([^)]*)\)", doc).group(1)
    dims = []
    for sym in filter(None, (s.strip() for s in symbols.split(","))):
        if sym == "n_e":
            dims.append(None)
        elif sym.isdigit():
            dims.append(int(sym))
        else:
            dims.append(int(torch.tensor([sizes[f] for f in sym.split("*")]).prod()))
    return tuple(dims)


def test_every_hook_point_fires_with_its_documented_shape_in_prefill_and_decode(model):
    docs = model.hook_names()
    out, cache = run_with_cache(model, lambda: model.generate(IDS, attention_mask=MASK, max_new_tokens=2))
    assert cache.n_calls == 2 and set(cache.keys()) == set(docs)  # eager + padding: every point fired
    c = model.config
    B, E, K = 2, c.num_local_experts, c.num_experts_per_tok
    for call, (T, P) in enumerate([(6, 0), (1, 6)]):
        sizes = dict(B=B, T=T, P=P, S=P + T, N=B * T, C=c.hidden_size, H=c.num_attention_heads,
                     Hkv=c.num_key_value_heads, D=c.head_dim, I=c.intermediate_size, E=E, K=K, V=c.vocab_size)
        step = cache.step(call)
        routed = 0
        for name, doc in docs.items():
            want = documented_shape(doc, sizes)
            got = tuple(step[name].shape)
            if None in want:  # an expert's tokens: n_e rows each, N * K rows over all experts of a layer
                assert got[1:] == want[1:], name
                routed += got[0] if ".layers.0." in name and name.endswith("hook_in") else 0
            else:
                assert got == want, f"{name}: {got} != documented {doc!r} = {want}"
        assert routed == B * T * K
    assert torch.equal(torch.stack(cache["hook_next_tokens"], 1), out[:, 6:])


def test_documented_hook_names_cover_the_interesting_tensors(model):
    names = set(model.hook_names())
    layer, moe = "model.layers.0.", "model.layers.0.block_sparse_moe."
    for want in ["model.hook_embed", "model.hook_mask", "model.hook_final_norm", "hook_logits", "hook_next_tokens",
                 layer + "hook_resid_pre", layer + "hook_resid_mid", layer + "hook_resid_post",
                 layer + "hook_attn_out", layer + "self_attn.hook_q", layer + "self_attn.hook_k",
                 layer + "self_attn.hook_v", layer + "self_attn.hook_attn_scores", layer + "self_attn.hook_pattern",
                 moe + "hook_router_logits", moe + "hook_router_probs", moe + "hook_topk_indices",
                 moe + "hook_topk_weights", moe + "experts.3.hook_in", moe + "experts.3.hook_out", moe + "hook_out"]:
        assert want in names, want


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_capture_never_changes_outputs(attn):
    m = build(attn)
    logits = m(IDS, attention_mask=MASK).logits
    gen = m.generate(IDS, attention_mask=MASK, max_new_tokens=3)
    out, _ = run_with_cache(m, IDS, attention_mask=MASK)
    gen2, cache = run_with_cache(m, lambda: m.generate(IDS, attention_mask=MASK, max_new_tokens=3))
    assert torch.equal(out.logits, logits) and torch.equal(gen2, gen)
    assert cache.n_calls == 3
    assert_no_hook_fns(m)


def test_activation_cache_api(model):
    out, cache = run_with_cache(model, IDS, attention_mask=MASK, names=["hook_logits", "*.hook_resid_post"])
    assert isinstance(cache, ActivationCache) and len(cache) == 3
    assert cache.keys() == ["model.layers.0.hook_resid_post", "model.layers.1.hook_resid_post", "hook_logits"]
    assert torch.equal(cache["hook_logits"], out.logits)
    assert cache["hook_logits"].data_ptr() != out.logits.data_ptr()       # a copy, not the model's tensor
    assert "hook_logits" in cache and dict(cache.items()).keys() == set(cache.keys())
    with pytest.raises(KeyError, match="not among the `names`"):
        cache["model.hook_embed"]

    _, cache = run_with_cache(model, lambda: model.generate(IDS, attention_mask=MASK, max_new_tokens=3),
                              names=lambda n: n.endswith(("hook_embed", "hook_mask")))
    embeds = cache["model.hook_embed"]
    assert isinstance(embeds, list) and [e.shape[1] for e in embeds] == [6, 1, 1]   # one per forward call
    assert cache.calls("model.hook_embed")[2] is embeds[2] and set(cache.step(1)) == set(cache.keys())


def test_a_point_that_does_not_fire_in_some_call_gives_none(sdpa_model):
    # sdpa without padding needs a 4D mask for the prefill only (decode: one token sees all keys).
    ids = IDS[1:]
    _, cache = run_with_cache(sdpa_model, lambda: sdpa_model.generate(ids, max_new_tokens=2), names="model.hook_mask")
    assert cache.n_calls == 2 and "model.hook_mask" not in cache  # never fired at all
    ids_long = torch.tensor([[4, 7, 11]])
    cache_obj = mixtral_edu.DynamicCache()
    sdpa_model(ids_long, past_key_values=cache_obj, use_cache=True)
    _, cache = run_with_cache(sdpa_model, lambda: [sdpa_model(torch.tensor([[5, 6]]), past_key_values=cache_obj,
                                                              use_cache=True), sdpa_model(torch.tensor([[9]]))],
                              names=["model.hook_mask"])
    masks = cache["model.hook_mask"]
    assert masks[0].shape == (1, 1, 2, 5) and masks[1] is None


def test_unknown_names_suggest_close_matches(model):
    with pytest.raises(KeyError, match="hook_resid_post"):
        run_with_cache(model, IDS, names=["model.layers.0.hook_resid_pots"])
    with pytest.raises(KeyError, match="Did you mean"):
        with mixtral_edu.hooks(model, {"model.layers.0.block_sparse_moe.hook_router_logit": lambda x, h: None}):
            pass
    with pytest.raises(KeyError, match="No hook point"):
        run_with_cache(model, IDS, names="*.no_such_point")
    assert_no_hook_fns(model)


def test_eager_only_points_on_sdpa_give_a_clear_error(sdpa_model):
    name = "model.layers.0.self_attn.hook_pattern"
    with pytest.raises(EagerOnlyError, match="attn_implementation='eager'.*output_attentions=True"):
        run_with_cache(sdpa_model, IDS, attention_mask=MASK, names=[name])
    with pytest.raises(EagerOnlyError, match="eager"):
        with mixtral_edu.hooks(sdpa_model, {name: lambda x, h: None}):
            pass
    # output_attentions=True makes sdpa fall back to eager for the call: then the pattern exists.
    out, cache = run_with_cache(sdpa_model, IDS, attention_mask=MASK, names=[name], output_attentions=True)
    assert torch.equal(cache[name], out.attentions[0])
    # Capturing "everything" leaves them out quietly, and asking for them later explains why.
    _, cache = run_with_cache(sdpa_model, IDS, attention_mask=MASK)
    assert name not in cache and "model.layers.0.self_attn.hook_q" in cache
    with pytest.raises(KeyError, match="only fire with eager attention"):
        cache[name]
    assert_no_hook_fns(sdpa_model)


def test_disable_expert_changes_routing_and_never_picks_it(model):
    prompt = torch.randint(3, 97, (3, 12), generator=torch.Generator().manual_seed(1))
    topk = "model.layers.0.block_sparse_moe.hook_topk_indices"
    _, before = run_with_cache(model, prompt, names=[topk, "model.layers.1.block_sparse_moe.hook_topk_indices"])
    busiest = int(torch.bincount(before[topk].reshape(-1), minlength=4).argmax())
    with mixtral_edu.hooks(model, disable_expert(layer=0, expert=busiest)):
        out, after = run_with_cache(model, lambda: model.generate(prompt, max_new_tokens=2), names=["*topk_indices"])
    for step in after.calls(topk):
        assert not (step == busiest).any()                                # never chosen in layer 0
    assert not torch.equal(after.calls(topk)[0], before[topk])            # routing really changed
    assert sum(bool((s == busiest).any()) for s in after.calls("model.layers.1.block_sparse_moe.hook_topk_indices"))
    assert_no_hook_fns(model)

    # Every layer, and two experts at once: specs add up.
    with mixtral_edu.hooks(model, disable_expert(None, 0), disable_expert(None, 1)):
        _, cache = run_with_cache(model, prompt, names="*topk_indices")
    for name in cache:
        assert set(cache[name].unique().tolist()) == {2, 3}
    with pytest.raises(IndexError, match="4 experts"):
        with mixtral_edu.hooks(model, disable_expert(0, 7)):
            model(prompt)
    assert_no_hook_fns(model)


def test_hooks_can_replace_a_tensor_and_are_removed_after_an_exception(model):
    plain = model(IDS, attention_mask=MASK).logits
    seen = []

    def zero_attention(x, point: HookPoint):
        seen.append(point.name)
        return torch.zeros_like(x)

    with mixtral_edu.hooks(model, {"model.layers.*.hook_attn_out": zero_attention}):
        changed = model(IDS, attention_mask=MASK).logits
    assert seen == ["model.layers.0.hook_attn_out", "model.layers.1.hook_attn_out"]
    assert not torch.equal(changed, plain)
    with pytest.raises(RuntimeError, match="boom"):
        with mixtral_edu.hooks(model, {"hook_logits": zero_attention}):
            raise RuntimeError("boom")
    assert_no_hook_fns(model)
    assert torch.equal(model(IDS, attention_mask=MASK).logits, plain)


def test_hooks_module_is_both_importable_and_callable(model):
    assert mixtral_edu.modeling.hook_points.HookPoint is HookPoint                       # still the module
    with mixtral_edu.hooks(model, {"hook_logits": lambda x, h: x * 0}):  # and the scoping call
        assert torch.count_nonzero(model(IDS[:, :2]).logits) == 0
    assert_no_hook_fns(model)


def test_globs_on_sdpa_skip_eager_only_points(sdpa_model):
    _, cache = run_with_cache(sdpa_model, IDS, attention_mask=MASK, names=["model.layers.0.self_attn.hook_*"])
    assert [n.rsplit(".", 1)[1] for n in cache] == ["hook_q", "hook_k", "hook_v", "hook_z"]
    with pytest.raises(EagerOnlyError):  # a glob that matches only eager-only points is an error too
        run_with_cache(sdpa_model, IDS, names="*.hook_pattern")
    with mixtral_edu.hooks(sdpa_model, {"*self_attn.hook_*": lambda x, h: None}):
        assert not sdpa_model.get_submodule("model.layers.0.self_attn.hook_pattern").fns
        assert sdpa_model.get_submodule("model.layers.0.self_attn.hook_q").fns
    assert_no_hook_fns(sdpa_model)
