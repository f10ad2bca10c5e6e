"""The KV cache: keys and values of tokens already processed, per layer.

`DynamicCache` mirrors transformers 4.41.2: per-layer lists of (B, Hkv, S, D)
tensors that grow by concatenation on the sequence axis. The "legacy" form is
a tuple with one `(key, value)` pair per layer; `MixtralModel` converts to and
from it exactly where transformers does.

`SinkCache` is the bounded one (transformers 4.41.2 `SinkCache`): it holds at
most `window_length` tokens, the first `num_sink_tokens` forever plus the latest
ones, which is what makes `prepare_inputs_for_generation` crop the mask.
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


class SinkCache(Cache):
    """A cache of at most `window_length` tokens per layer: `num_sink_tokens` first ones, then the latest.

    Same behaviour as transformers 4.41.2 `SinkCache` (Attention Sinks): while the
    cached plus new tokens stay below the window, it grows; from then on it keeps
    the sink tokens, drops the oldest others and appends the new ones. The keys it
    keeps were rotated (RoPE) at their old positions; they are rotated back by the
    number of new tokens, so that sinks and window stay at consecutive positions.
    The rotation tables come from the attention's `cache_kwargs` ({"cos", "sin"},
    each (S, D)); the first layer's call of every forward records them.
    """

    def __init__(self, window_length: int, num_sink_tokens: int) -> None:
        if not 0 <= num_sink_tokens < window_length:
            raise ValueError(f"num_sink_tokens ({num_sink_tokens}) must be >= 0 and below window_length "
                             f"({window_length}).")
        self.key_cache: List[torch.Tensor] = []
        self.value_cache: List[torch.Tensor] = []
        self.window_length, self.num_sink_tokens = window_length, num_sink_tokens
        self._seen_tokens = 0
        self._cos: Optional[torch.Tensor] = None   # (S, D) rotation tables of the latest forward
        self._sin: Optional[torch.Tensor] = None
        self._back_rotation: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}   # T -> (cos, sin), (1, W-sink-T, D)

    def __len__(self) -> int:
        return len(self.key_cache)

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        return self.key_cache[layer_idx].shape[-2] if layer_idx < len(self.key_cache) else 0

    def get_max_length(self) -> Optional[int]:
        return self.window_length

    def _rotate_back(self, keys: torch.Tensor, new: int) -> torch.Tensor:
        """Rotate kept keys from position p to p - new: angle(p - new) - angle(p), from the recorded tables."""
        if new not in self._back_rotation:
            cos, sin = self._cos[:self.window_length].float(), self._sin[:self.window_length].float()
            start = self.num_sink_tokens
            cos_at, sin_at = cos[start + new:], sin[start + new:]            # where the keys were rotated to
            cos_to, sin_to = cos[start:-new], sin[start:-new]                # where they must end up
            # cos(b - a) = cos b cos a + sin b sin a ; sin(b - a) = sin b cos a - cos b sin a
            self._back_rotation[new] = ((cos_to * cos_at + sin_to * sin_at).to(keys.dtype)[None],
                                        (sin_to * cos_at - cos_to * sin_at).to(keys.dtype)[None])
        cos, sin = self._back_rotation[new]
        half = keys.shape[-1] // 2
        rotated_half = torch.cat((-keys[..., half:], keys[..., :half]), dim=-1)
        return keys * cos + rotated_half * sin

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               cache_kwargs: Optional[Dict[str, Any]] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Add this call's (B, Hkv, T, D) keys/values; return what the layer attends to (at most W tokens + T)."""
        cache_kwargs = cache_kwargs or {}
        new = key_states.shape[-2]
        if layer_idx == 0:
            self._seen_tokens += new
            if cache_kwargs.get("cos") is not None:
                if cache_kwargs["cos"].dim() != 2:
                    raise ValueError("SinkCache expects the (S, D) cos/sin tables Mixtral's attention passes.")
                self._cos, self._sin = cache_kwargs["cos"], cache_kwargs["sin"]
        if layer_idx == len(self.key_cache):            # first call for this layer: keep everything
            self.key_cache.append(key_states)
            self.value_cache.append(value_states)
        elif new + self.get_seq_length(layer_idx) < self.window_length:   # still room: grow
            self.key_cache[layer_idx] = torch.cat([self.key_cache[layer_idx], key_states], dim=-2)
            self.value_cache[layer_idx] = torch.cat([self.value_cache[layer_idx], value_states], dim=-2)
        else:                                           # full: sinks + the latest (W - sinks - T) + the new T
            keep_from = -self.window_length + self.num_sink_tokens + new
            sink = slice(0, self.num_sink_tokens)
            kept_keys = self.key_cache[layer_idx][:, :, keep_from:]
            if self._cos is not None:
                kept_keys = self._rotate_back(kept_keys, new)
            self.key_cache[layer_idx] = torch.cat([self.key_cache[layer_idx][:, :, sink], kept_keys, key_states],
                                                  dim=-2)
            self.value_cache[layer_idx] = torch.cat([self.value_cache[layer_idx][:, :, sink],
                                                     self.value_cache[layer_idx][:, :, keep_from:], value_states],
                                                    dim=-2)
        return self.key_cache[layer_idx], self.value_cache[layer_idx]

    def __repr__(self) -> str:
        return (f"SinkCache(window_length={self.window_length}, num_sink_tokens={self.num_sink_tokens}, "
                f"layers={len(self)}, seen_tokens={self._seen_tokens}, holds={self.get_seq_length()})")
