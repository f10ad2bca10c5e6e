"""The references of notebook 06's exercises are the package's (and transformers') own attention
(the wrong answers are in tests/exercises/test_mutations_06_attention.py)."""
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

from mixtral_edu.exercises import attention as ex
from mixtral_edu.full_size.presets import get_preset
from mixtral_edu.modeling.attention import MixtralAttention
from mixtral_edu.modeling.cache import DynamicCache
from mixtral_edu.modeling.config import MixtralConfig
from mixtral_edu.modeling.masks import prepare_4d_causal_attention_mask


def solutions(stem):
    path = Path(__file__).resolve().parents[2] / "notebooks" / "solutions" / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"solutions_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _capture(attn, names):
    seen = {}
    for name in names:
        getattr(attn, name).fns.append(lambda x, point, name=name: seen.setdefault(name, []).append(x))
    return seen


def test_decode_step_shapes_are_those_of_the_package_on_mixtral_8x7b():
    """A decode step of the real Mixtral 8x7B attention, run on the meta device (shapes only)."""
    c = ex.SHAPE_CASE
    config = get_preset("mixtral-8x7b")
    config._attn_implementation = "eager"
    assert (config.hidden_size, config.num_attention_heads, config.num_key_value_heads, config.head_dim) == \
        (c["C"], c["H"], c["Hkv"], c["D"])
    with torch.device("meta"):
        attn = MixtralAttention(config, 0)
        cache = DynamicCache()
        cache.update(torch.empty(c["B"], c["Hkv"], c["P"], c["D"]), torch.empty(c["B"], c["Hkv"], c["P"], c["D"]), 0)
        x = torch.empty(c["B"], c["T"], c["C"])
        mask = prepare_4d_causal_attention_mask(torch.ones(c["B"], c["P"] + c["T"], dtype=torch.long),
                                                (c["B"], c["T"]), x, c["P"])
        pos = torch.full((c["B"], c["T"]), c["P"])
    seen = _capture(attn, ["hook_q", "hook_pattern", "hook_z"])
    attn(x, attention_mask=mask, position_ids=pos, past_key_value=cache, output_attentions=True)
    want = ex.decode_step_shapes()
    scores = tuple(seen["hook_pattern"][0].shape)
    got = {"q": tuple(seen["hook_q"][0].shape), "k_cached": tuple(cache.key_cache[0].shape),
           "k_repeated": scores[:2] + (scores[3], c["D"]), "scores": scores, "mask": tuple(mask.shape),
           "z": tuple(seen["hook_z"][0].shape)}
    assert got == want
    assert ex.check_decode_step_shapes(solutions("06_attention").decode_step_shapes)


def test_rotary_reference_is_transformers():
    from transformers.models.mixtral.modeling_mixtral import MixtralRotaryEmbedding, apply_rotary_pos_emb
    for _, (x, pos), kw in ex.rot_cases():
        rope = MixtralRotaryEmbedding(x.shape[-1], max_position_embeddings=64, base=kw.get("base", 10000.0))
        cos, sin = rope(x, seq_len=64)
        hf, _ = apply_rotary_pos_emb(x[None, None], x[None, None], cos, sin, pos[None])
        torch.testing.assert_close(hf[0, 0], ex.rotate(x, pos, **kw))


def test_attention_reference_is_sdpa():
    """float32: equal to rounding; bfloat16 (the fused kernel rounds in another order): within the check's
    tolerance, so an answer that calls scaled_dot_product_attention passes too."""
    for label, (q, k, v, m), kw in ex.attn_cases():
        tol = dict(atol=ex._attn_atol(label, (q, k, v, m), kw), rtol=0) if q.dtype == torch.bfloat16 else {}
        torch.testing.assert_close(ex.reference_attention(q, k, v, m), F.scaled_dot_product_attention(q, k, v, attn_mask=m),
                                   **tol)


def test_window_reference_and_solution_are_the_models_attention():
    """Run a real eager attention layer call by call with a DynamicCache and sliding_window = W; feed the
    q, k, v it formed to the reference and to the solution (which evicts): both give its output."""
    solution = solutions("06_attention").attend_with_window_cache
    w, counts = 3, [6, 1, 1, 3, 1]
    config = MixtralConfig(vocab_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=16, num_local_experts=2, num_experts_per_tok=1,
                           max_position_embeddings=32, sliding_window=w, attn_implementation="eager")
    torch.manual_seed(0)
    attn = MixtralAttention(config, 0).eval()
    seen = _capture(attn, ["hook_q", "hook_k", "hook_v", "hook_z"])
    cache, past, kept = DynamicCache(), 0, None
    for t in counts:
        x = torch.randn(1, t, 16)
        mask = prepare_4d_causal_attention_mask(None if t == 1 else torch.ones(1, past + t, dtype=torch.long),
                                                (1, t), x, past, sliding_window=w)
        with torch.no_grad():
            attn(x, attention_mask=mask, position_ids=torch.arange(past, past + t)[None], past_key_value=cache)
        q, k, v, z = (seen[n][-1] for n in ("hook_q", "hook_k", "hook_v", "hook_z"))
        model_out = z.view(1, t, 4, 4).transpose(1, 2)                                  # (B, H, T, D)
        ref = ex.full_cache_attention(q, cache.key_cache[0], cache.value_cache[0], past, w)
        out, kept = solution(kept, q, k, v, w)
        torch.testing.assert_close(ref, model_out)
        torch.testing.assert_close(out, model_out)
        assert kept[0].shape[-2] <= w
        past += t
    assert cache.get_seq_length() == sum(counts) > w     # the DynamicCache kept everything; the solution W
