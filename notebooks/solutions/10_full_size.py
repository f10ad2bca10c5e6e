"""Reference solutions of notebook 10 (full-size Mixtral). Not shown in the student notebook."""
import math

import torch

from mixtral_edu.full_size import sizes


def predicted_shapes(config, batch_size, seq_len, past_len):
    """10.1: the legend's letters first, then the config's numbers."""
    B, T, S = batch_size, seq_len, past_len + seq_len
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    return {
        "query_states": (B, H, T, D),            # queries for the T new tokens, heads before positions
        "cached_keys": (B, Hkv, S, D),           # per layer, after this call: P old + T new, kv heads only
        "attention_pattern": (B, H, T, S),       # after repeat_kv every query head scores all S keys
        "router_logits": (B * T, config.num_local_experts),   # N = B * T tokens flattened
        "logits": (B, T, config.vocab_size),     # every position of the call
    }


def kv_cache_bytes(config, n_tokens, batch_size, bytes_per_element):
    """10.2: two bugs: keys AND values (a factor 2), and only the Hkv key/value heads are cached."""
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * bytes_per_element
    return per_token * n_tokens * batch_size


def max_context(config, memory_bytes, batch_size, bytes_per_element, rolling_window):
    """10.3: memory holds every expert (total, not active); the rest is cache for batch_size sequences."""
    dtype = {4: torch.float32, 2: torch.bfloat16, 1: torch.int8}[bytes_per_element]
    free = memory_bytes - sizes.parameter_count(config).total * bytes_per_element
    if free < 0:
        return 0                                                  # not even the weights fit
    per_position = batch_size * sizes.kv_cache_bytes_per_token(config, dtype)
    window = config.sliding_window
    if rolling_window and window is not None and window * per_position <= free:
        return math.inf                                           # the buffer never grows past W slots
    return free // per_position
