"""Reference solutions of notebook 00 (orientation). Try the exercises first: the checks give hints."""
import torch


def left_pad(sequences, pad_id):
    """Pads first, so every row's last column is its last real token; the mask comes from the lengths."""
    T = max(len(s) for s in sequences)
    input_ids = torch.tensor([[pad_id] * (T - len(s)) + list(s) for s in sequences])
    attention_mask = torch.tensor([[0] * (T - len(s)) + [1] * len(s) for s in sequences])
    return input_ids, attention_mask


def active_parameters(config):
    """Everything a token passes through: all but the E - K experts it does not use in each layer."""
    C, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    E, K = config.num_local_experts, config.num_experts_per_tok
    attention = 2 * C * H * D + 2 * C * Hkv * D            # q and o: H heads; k and v: Hkv heads
    per_layer = attention + C * E + K * 3 * C * I + 2 * C    # + router, K experts of 3 matrices, two norms
    head = 0 if config.tie_word_embeddings else V * C
    return V * C + head + L * per_layer + C                 # + embeddings, head, final norm


def predicted_shapes(B, T, V, new_tokens):
    """Prefill feeds all T columns; each decode step feeds 1 token; the last chosen token is never fed."""
    return {
        "prefill_input_ids": (B, T),
        "decode_input_ids": (B, 1),
        "decode_logits": (B, 1, V),
        "final_cache_length": T + new_tokens - 1,
        "output": (B, T + new_tokens),
    }
