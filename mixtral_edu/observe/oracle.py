"""Ours beside transformers 4.41.2, on the same inputs: the live oracle the notebooks show.

    hf_twin(model)                 transformers' MixtralForCausalLM with the same config and weights (strict)
    hf_cache(cache)                the transformers cache holding the same keys and values as ours
    prepare_both(model, hf_model, input_ids, past_key_values, **kw) -> (model_inputs, branch)
                                   both prepare_inputs_for_generation, every entry asserted equal
    describe(value)                a short text for a tensor, a cache or a tuple of them (shapes only)
    same(a, b, atol)               nested tuples/lists of tensors equal within atol
    fed_one_by_one(cache, tokens)  zeros fed one token at a time, to show a cache's lengths

transformers is imported only when one of these runs.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import torch

from ..modeling.cache import Cache, DynamicCache, SinkCache


def hf_twin(model):
    """transformers.MixtralForCausalLM built from model's config, holding model's weights (strict), in eval mode."""
    import transformers
    twin = transformers.MixtralForCausalLM(transformers.MixtralConfig(**model.config.to_dict())).eval()
    twin.load_state_dict(model.state_dict(), strict=True)
    return twin.to(next(model.parameters()).dtype)


def hf_cache(cache: Any) -> Any:
    """The transformers twin of one of our caches: a legacy tuple is shared as is; a DynamicCache is copied.

    A SinkCache cannot be copied mid-way (its rotation tables live inside); run a transformers SinkCache
    beside it from the start instead (notebook 02 does).
    """
    import transformers
    if cache is None or isinstance(cache, tuple):
        return cache
    if isinstance(cache, DynamicCache):
        return transformers.DynamicCache.from_legacy_cache(cache.to_legacy_cache())
    if isinstance(cache, SinkCache):
        raise ValueError("A SinkCache has no transformers copy: build transformers.SinkCache(window_length, "
                         "num_sink_tokens) beside it and feed both the same steps.")
    raise TypeError(f"hf_cache: unknown cache type {type(cache).__name__}; pass a tuple or a DynamicCache.")


def prepare_both(model, hf_model, input_ids: torch.Tensor, past_key_values: Any = None,
                 hf_past_key_values: Any = "twin", **kwargs) -> Tuple[Dict[str, Any], str]:
    """Run our prepare_inputs_for_generation (traced, to read its branch) and transformers' on the same inputs.

    Every entry of the two dicts must agree (the caches are handed on untouched); returns our dict and the
    branch the trace recorded. hf_past_key_values defaults to hf_cache(past_key_values).
    """
    from .tracer import trace
    theirs_past = hf_cache(past_key_values) if isinstance(hf_past_key_values, str) else hf_past_key_values
    with trace(model) as t:
        ours = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values, **kwargs)
    theirs = hf_model.prepare_inputs_for_generation(input_ids, past_key_values=theirs_past, **kwargs)
    if list(ours) != list(theirs):
        raise AssertionError(f"prepare_inputs_for_generation keys differ: ours {list(ours)}, "
                             f"transformers {list(theirs)}")
    for key in ours:
        if key == "past_key_values":
            if ours[key] is not past_key_values or theirs[key] is not theirs_past:
                raise AssertionError("the cache must be handed on untouched")
        elif torch.is_tensor(theirs[key]):
            if not (torch.is_tensor(ours[key]) and torch.equal(ours[key], theirs[key])):
                raise AssertionError(f"prepare_inputs_for_generation: {key} differs from transformers'")
        elif ours[key] != theirs[key]:
            raise AssertionError(f"prepare_inputs_for_generation: {key} differs from transformers'")
    # called by hand, not by generate: the trace shows it as a node of its own (no generation step)
    return ours, t.find("prepare_inputs_for_generation")[0].info["branch"]


def describe(value: Any) -> Any:
    """Shapes for tensors, a short name for caches and tuples of them; small Python values as they are."""
    if torch.is_tensor(value):
        return "()" if value.dim() == 0 else tuple(value.shape)
    if isinstance(value, Cache):
        return f"{type(value).__name__} holding {value.get_seq_length()} tokens"
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return f"{len(value)} layers x (key, value) {tuple(value[0][0].shape)}"
    if isinstance(value, tuple) and value and torch.is_tensor(value[0]):
        return f"{len(value)} x {tuple(value[0].shape)}"
    return value if value is None or isinstance(value, (bool, int, float, str)) else type(value).__name__


def same(a: Any, b: Any, atol: float = 1e-5) -> bool:
    """Nested tuples/lists of tensors (caches come back as tuples of (key, value) pairs) equal within atol."""
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.shape == b.shape and bool(torch.allclose(a, b, atol=atol))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y, atol) for x, y in zip(a, b))
    return a == b



def fed_one_by_one(cache: Any, tokens: int, batch: int = 1, heads: int = 1, head_dim: int = 2) -> Any:
    """Feed `tokens` single tokens of zero keys/values to layer 0 of a cache (ours or transformers'), as that
    many decode forwards would: for showing its lengths. No RoPE tables are passed, so nothing is re-rotated."""
    for _ in range(tokens):
        zeros = torch.zeros(batch, heads, 1, head_dim)
        cache.update(zeros, zeros.clone(), 0, {})
    return cache
