"""What chapter 11 and its tests measure: small random models, logit gaps, mask cells, one hook.

Random models are built and initialised here by mixtral_edu, saved with our save_pretrained
and loaded by 5.23 from that folder, so every comparison also exercises the checkpoint path.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch

from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.config import MixtralConfig
from ..modeling.hook_points import HookPoint

# Small configs that each stress one difference. initializer_range 0.2 (not 0.02) keeps attention
# and routing far from uniform, so a wrong mask or route cannot hide below the tolerance.
BASE = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=4, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
            rope_theta=10000.0, initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            attn_implementation="eager")
RANDOM_CONFIGS: Dict[str, dict] = {
    "gqa": dict(num_attention_heads=8, num_key_value_heads=2),          # G = 4 query heads per kv head
    "top1": dict(num_experts_per_tok=1),                                # Switch-style routing
    "top3": dict(num_local_experts=6, num_experts_per_tok=3, num_hidden_layers=3),
    "window_binds": dict(sliding_window=6),                             # a 16-token prompt passes it
    "window_free": dict(sliding_window=64),                             # prompt + generation stay below
}


def random_config(name: str, **overrides) -> MixtralConfig:
    """One of RANDOM_CONFIGS on top of BASE."""
    if name not in RANDOM_CONFIGS:
        raise KeyError(f"unknown random config {name!r}; choose one of {sorted(RANDOM_CONFIGS)}.")
    return MixtralConfig(**{**BASE, **RANDOM_CONFIGS[name], **overrides})


def random_model(name: str, seed: int = 0, **overrides) -> MixtralForCausalLM:
    """A MixtralForCausalLM with that config, initialised from `seed`, in eval mode."""
    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        torch.manual_seed(seed)
        return MixtralForCausalLM(random_config(name, **overrides)).eval()


def random_ids(batch: int, length: int, vocab_size: int, seed: int = 0, low: int = 3) -> torch.Tensor:
    """(B, T) ids that are never pad, bos or eos."""
    return torch.randint(low, vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def gap_by_position(a: torch.Tensor, b: torch.Tensor, attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(T,) largest |a - b| at each position over batch and vocabulary; padded positions count 0."""
    diff = (a.float() - b.float()).abs().amax(dim=-1)                   # (B, T, V) -> (B, T)
    if attention_mask is not None:
        diff = diff * attention_mask.to(diff.dtype)
    return diff.amax(dim=0)                                             # (B, T) -> (T,)


def first_position_over(gaps: torch.Tensor, atol: float = 1e-5) -> Optional[int]:
    """First position whose gap exceeds atol, or None when all agree."""
    over = (gaps > atol).nonzero()
    return int(over[0]) if len(over) else None


def cells_that_differ(visible_a: torch.Tensor, visible_b: torch.Tensor) -> List[Tuple[int, int]]:
    """[(query i, key j)] where two (T, S) visibility masks disagree."""
    return [tuple(ij) for ij in (visible_a != visible_b).nonzero().tolist()]


def keep_routing_weights_fp32() -> Dict[str, object]:
    """Hook spec for mixtral_edu.hooks(): do what 5.23 does, keep the top-k weights in float32.

    4.41.2 (and so our block) casts the renormalised weights back to the model dtype; here
    the cast weights are replaced by the same top-k of the float32 probabilities, uncast.
    Nothing else changes, so in bfloat16 any remaining gap to 5.23 is not the routing cast.
    """
    probs: List[torch.Tensor] = []

    def remember(router_probs: torch.Tensor, point: HookPoint) -> None:
        probs[:] = [router_probs]                                       # (N, E) float32

    def uncast(weights: torch.Tensor, point: HookPoint) -> torch.Tensor:
        top = torch.topk(probs[0], weights.shape[-1], dim=-1).values    # (N, K) float32, best first
        return top / top.sum(dim=-1, keepdim=True)

    return {"*.block_sparse_moe.hook_router_probs": remember, "*.block_sparse_moe.hook_topk_weights": uncast}


def scale_scores_by_multiplying() -> Dict[str, object]:
    """Hook spec for mixtral_edu.hooks() (eager attention, one forward without a cache).

    4.41.2 divides q·kᵀ by sqrt(D); 5.23's eager_attention_forward multiplies by D ** -0.5.
    Both are the same number on paper but round differently in the last bit. This recomputes
    our scores 5.23's way, from the same queries, keys and mask, and leaves all else alone.
    """
    seen: Dict[str, torch.Tensor] = {}

    def remember(name: str):
        def fn(t: torch.Tensor, point: HookPoint) -> None:
            seen[name] = t
        return fn

    def rescale(scores: torch.Tensor, point: HookPoint) -> torch.Tensor:
        q, k = seen["q"], seen["k"]                                      # (B, H, T, D), (B, Hkv, S, D)
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)         # (B, Hkv, S, D) -> (B, H, S, D)
        out = torch.matmul(q, k.transpose(2, 3)) * q.shape[-1] ** -0.5  # (B, H, T, S)
        mask = seen.get("mask")
        return out + mask if mask is not None else out

    return {"model.hook_mask": remember("mask"), "*.self_attn.hook_q": remember("q"),
            "*.self_attn.hook_k": remember("k"), "*.self_attn.hook_attn_scores": rescale}
