"""The "proof of equality" helpers: pairs of models, ours and transformers 4.41.2's, with the very same weights.

Ours is initialised from a seed, then loaded into transformers' model with strict=True, so any difference in
the outputs is a difference in the code. Import them as `from pairs import make_pair` (a module of its own:
several test folders have a conftest.py, so `conftest` names no one module).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

import mixtral_edu


def _transformers():
    """transformers, imported on first use (deprecation chatter such as seen_tokens is expected)."""
    import transformers
    transformers.logging.set_verbosity_error()
    return transformers


PAD, BOS, EOS = 0, 1, 2

# The tiny model every test starts from. initializer_range is raised from 0.02 to
# 0.2 on purpose: with 0.02 and hidden_size 32 the attention would be almost
# uniform and the router almost indifferent, so positional, masking or routing
# bugs could hide below the tolerance. rope_theta 1e4 (not 1e6) gives head_dim 8
# rotations that change noticeably over a few dozen positions for the same reason.
TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=256,
    rope_theta=10000.0,
    initializer_range=0.2,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
    attn_implementation="eager",
)


def tiny_kwargs(**overrides) -> dict:
    kw = dict(TINY)
    kw.update(overrides)
    return kw


def make_pair(seed: int = 0, **config_overrides) -> Tuple[mixtral_edu.MixtralForCausalLM,
                                                          "transformers.MixtralForCausalLM"]:
    """(ours, theirs): MixtralForCausalLM in eval mode with identical weights.

    The attention implementation is always passed explicitly to transformers:
    left unset, transformers 4.41.2 picks "sdpa" by itself while ours defaults to "eager".
    """
    transformers = _transformers()
    kw = tiny_kwargs(**config_overrides)
    torch.manual_seed(seed)
    ours = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**kw)).eval()
    theirs = transformers.MixtralForCausalLM(transformers.MixtralConfig(**kw)).eval()
    assert theirs.config._attn_implementation == kw["attn_implementation"]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def random_ids(batch: int, length: int, seed: int = 0, low: int = 3, high: int = TINY["vocab_size"]) -> torch.Tensor:
    """(B, T) token ids that are never pad/bos/eos (so no prompt looks right-padded)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (batch, length), generator=g)


def left_padded(batch: int, length: int, pads: Optional[list] = None, seed: int = 0
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T); row b starts with pads[b] pad tokens."""
    if pads is None:
        pads = [(2 * b) % max(length - 1, 1) for b in range(batch)]
    ids = random_ids(batch, length, seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b, p in enumerate(pads):
        ids[b, :p] = PAD
        mask[b, :p] = 0
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as generation computes them: first real token is 0, pads get 1."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def to_hf_cache(cache) -> "transformers.DynamicCache":
    """A transformers DynamicCache holding (clones of) the same tensors as our cache or legacy tuple."""
    transformers = _transformers()
    legacy = cache.to_legacy_cache() if isinstance(cache, mixtral_edu.Cache) else cache
    return transformers.DynamicCache.from_legacy_cache(
        tuple((k.clone(), v.clone()) for k, v in legacy))


def assert_legacy_equal(a, b, atol: float = 1e-5) -> None:
    """Two legacy caches: tuples of (key, value) tuples of equal tensors."""
    assert type(a) is tuple and type(b) is tuple
    assert len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a, b):
        torch.testing.assert_close(ka, kb, atol=atol, rtol=0)
        torch.testing.assert_close(va, vb, atol=atol, rtol=0)
