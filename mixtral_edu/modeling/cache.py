"""The KV cache: keys and values of tokens already processed, per layer.

`DynamicCache` mirrors transformers 4.41.2: per-layer lists of (B, Hkv, S, D)
tensors that grow by concatenation on the sequence axis. The "legacy" form is
a tuple with one `(key, value)` pair per layer; `MixtralModel` converts to and
from it exactly where transformers does.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

LegacyCache = Tuple[Tuple[torch.Tensor, torch.Tensor], ...]


class Cache:
    """Base class: what every cache answers (transformers: `cache_utils.Cache`)."""

    def update(self, key_states, value_states, layer_idx: int, cache_kwargs: Optional[Dict[str, Any]] = None):
        raise NotImplementedError

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        raise NotImplementedError

    def get_max_length(self) -> Optional[int]:
        raise NotImplementedError

    def get_usable_length(self, new_seq_length: int, layer_idx: Optional[int] = 0) -> int:
        """How many cached tokens the next `new_seq_length` tokens may attend to.

        All of them, unless the cache has a size limit that the new tokens would pass:
        then the oldest ones make room.
        """
        max_length = self.get_max_length()
        previous = self.get_seq_length(layer_idx)
        if max_length is not None and previous + new_seq_length > max_length:
            return max_length - new_seq_length
        return previous

    @property
    def seen_tokens(self) -> Optional[int]:
        """Tokens this cache has been fed (counted on layer 0), even if some were evicted."""
        return getattr(self, "_seen_tokens", None)


class DynamicCache(Cache):
    """A cache with no size limit, growing one concatenation per call and layer.

    Each `key_cache[l]` / `value_cache[l]` has shape (B, Hkv, S, D).
    """

    def __init__(self) -> None:
        self.key_cache: List[torch.Tensor] = []
        self.value_cache: List[torch.Tensor] = []
        self._seen_tokens = 0

    def __len__(self) -> int:  # number of layers filled so far
        return len(self.key_cache)

    def __getitem__(self, layer_idx: int) -> Tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= layer_idx < len(self):
            raise KeyError(f"The cache holds {len(self)} layers; layer {layer_idx} does not exist.")
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for layer_idx in range(len(self)):
            yield self[layer_idx]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               cache_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Append this call's (B, Hkv, T, D) keys/values; return the layer's full (B, Hkv, S, D) pair."""
        if layer_idx == 0:
            self._seen_tokens += key_states.shape[-2]
        if layer_idx == len(self.key_cache):
            self.key_cache.append(key_states)
            self.value_cache.append(value_states)
        elif layer_idx < len(self.key_cache):
            self.key_cache[layer_idx] = torch.cat([self.key_cache[layer_idx], key_states], dim=-2)
            self.value_cache[layer_idx] = torch.cat([self.value_cache[layer_idx], value_states], dim=-2)
        else:
            raise IndexError(
                f"Layer {layer_idx} updated before layer {len(self.key_cache)}: layers must fill the cache in order."
            )
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        if layer_idx >= len(self.key_cache):
            return 0
        return self.key_cache[layer_idx].shape[-2]

    def get_max_length(self) -> Optional[int]:
        return None  # grows without bound

    def nbytes(self) -> int:
        """Bytes held by all cached keys and values."""
        return sum(t.numel() * t.element_size() for t in self.key_cache + self.value_cache)

    def to_legacy_cache(self) -> LegacyCache:
        return tuple((k, v) for k, v in zip(self.key_cache, self.value_cache))

    @classmethod
    def from_legacy_cache(cls, past_key_values: Optional[LegacyCache] = None) -> "DynamicCache":
        cache = cls()
        if past_key_values is not None:
            for layer_idx, pair in enumerate(past_key_values):
                if len(pair) != 2:
                    raise ValueError(
                        f"Legacy cache entry {layer_idx} has {len(pair)} tensors; expected (key, value)."
                    )
                cache.update(pair[0], pair[1], layer_idx)
        return cache

    def __repr__(self) -> str:
        shape = tuple(self.key_cache[0].shape) if self.key_cache else None
        return f"DynamicCache(layers={len(self)}, seen_tokens={self._seen_tokens}, key_shape={shape})"
