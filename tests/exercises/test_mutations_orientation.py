"""Plausible wrong answers to notebook 00's exercises: each gets NOT YET with a hint naming the mistake."""
import torch

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import orientation as ex


def _pad(sequences, pad_id, left=True):
    T = max(len(s) for s in sequences)
    rows = [([pad_id] * (T - len(s)) + list(s)) if left else (list(s) + [pad_id] * (T - len(s))) for s in sequences]
    mask = [([0] * (T - len(s)) + [1] * len(s)) if left else ([1] * len(s) + [0] * (T - len(s))) for s in sequences]
    return torch.tensor(rows), torch.tensor(mask)


def right_padding(sequences, pad_id):
    return _pad(sequences, pad_id, left=False)


def mask_from_ids(sequences, pad_id):
    ids, _ = _pad(sequences, pad_id)
    return ids, (ids != pad_id).long()


def inverted_mask(sequences, pad_id):
    ids, mask = _pad(sequences, pad_id)
    return ids, 1 - mask


def float_mask(sequences, pad_id):
    ids, mask = _pad(sequences, pad_id)
    return ids, mask.float()


def hard_coded_pad(sequences, pad_id):
    return _pad(sequences, 3)


def lists_not_tensors(sequences, pad_id):
    ids, mask = _pad(sequences, pad_id)
    return ids.tolist(), mask.tolist()


def nan_mask(sequences, pad_id):
    ids, mask = _pad(sequences, pad_id)
    return ids, mask.float() * float("nan")


def _parts(config):
    C, I, L, V = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    H, Hkv, D = config.num_attention_heads, config.num_key_value_heads, config.head_dim
    E, K = config.num_local_experts, config.num_experts_per_tok
    return dict(embed=V * C, head=0 if config.tie_word_embeddings else V * C, q_o=2 * C * H * D, k_v=2 * C * Hkv * D,
                router=C * E, expert=3 * C * I, norms=2 * C, final=C, L=L, E=E, K=K, C=C, I=I, H=H, D=D)


def _active(config, **change):
    p = {**_parts(config), **change}
    per_layer = p["q_o"] + p["k_v"] + p["router"] + p["K"] * p["expert"] + p["norms"]
    return p["embed"] + p["head"] + p["L"] * per_layer + p["final"]


def total_count(config):
    p = _parts(config)
    return _active(config, K=p["E"])


def no_router(config):
    return _active(config, router=0)


def kv_with_all_heads(config):
    p = _parts(config)
    return _active(config, k_v=2 * p["C"] * p["H"] * p["D"])


def head_counted_when_tied(config):
    p = _parts(config)
    return _active(config, head=p["embed"])


def no_norms(config):
    return _active(config, norms=0, final=0)


def idle_experts(config):
    p = _parts(config)
    return _active(config, K=p["E"] - p["K"])


def as_float(config):
    return float(_active(config))


def shapes(**wrong):
    def predicted_shapes(B, T, V, new_tokens):
        right = {"prefill_input_ids": (B, T), "decode_input_ids": (B, 1), "decode_logits": (B, 1, V),
                 "final_cache_length": T + new_tokens - 1, "output": (B, T + new_tokens)}
        return {k: (wrong[k](B, T, V, new_tokens) if k in wrong else v) for k, v in right.items()}
    return predicted_shapes


MUTANTS = [
    Mutant("00.1", "right padding", right_padding, ["right padding", "LEFT"]),
    Mutant("00.1", "mask from ids != pad_id", mask_from_ids, ["real token", "same id"]),
    Mutant("00.1", "inverted mask", inverted_mask, ["inverted"]),
    Mutant("00.1", "float mask", float_mask, ["dtype", "torch.long"]),
    Mutant("00.1", "pad id hard-coded as 3", hard_coded_pad, ["pad_id you are given"]),
    Mutant("00.1", "python lists", lists_not_tensors, ["two tensors"]),
    Mutant("00.1", "NaN mask", nan_mask, ["dtype"]),
    Mutant("00.2", "total instead of active", total_count, ["total", "E - K"]),
    Mutant("00.2", "router left out", no_router, ["router"]),
    Mutant("00.2", "k/v with H heads", kv_with_all_heads, ["Hkv", "grouped-query"]),
    Mutant("00.2", "tied head counted twice", head_counted_when_tied, ["tie_word_embeddings", "once"]),
    Mutant("00.2", "norms left out", no_norms, ["RMSNorm"]),
    Mutant("00.2", "the unused experts counted", idle_experts, ["NOT use"]),
    Mutant("00.2", "a float", as_float, ["whole number"]),
    Mutant("00.3", "cache holds the last token too", shapes(final_cache_length=lambda B, T, V, n: T + n),
           ["never fed"]),
    Mutant("00.3", "decode feeds the whole sequence", shapes(decode_input_ids=lambda B, T, V, n: (B, T + n - 1)),
           ["only the token", "one new token"]),
    Mutant("00.3", "decode logits only the last", shapes(decode_logits=lambda B, T, V, n: (B, V)),
           ["every position it was fed"]),
    Mutant("00.3", "prefill without the pads", shapes(prefill_input_ids=lambda B, T, V, n: (B, T - 1)),
           ["pads included"]),
    Mutant("00.3", "output without the prompt", shapes(output=lambda B, T, V, n: (B, n)), ["prompt"]),
    Mutant("00.3", "a list instead of a dict", lambda B, T, V, n: [(B, T)], ["keys"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)
