"""Exercises of notebook 00 (orientation): a left-padded batch, and the active parameter count.

    check_left_pad(left_pad)
        left_pad(sequences: list of lists of ids, pad_id) -> (input_ids (B, T), attention_mask (B, T))
    check_active_parameters(active_parameters)
        active_parameters(config: MixtralConfig) -> int, the parameters one token uses

The references are the tiny model's own tokenizer (`tokenizer.pad`, left padding) and
`mixtral_edu.full_size.sizes.parameter_count`. The checks name the mistake when they recognise it.
"""
from __future__ import annotations

import functools
from typing import Callable, List, Tuple

import torch

from . import ExerciseResult, call_learner, fail
from ..full_size import sizes
from ..modeling.config import MixtralConfig
from ..full_size.presets import get_preset


# -- left padding -----------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _tokenizer():
    from ..tiny.pretrained import TINY_DIR
    from ..tiny.tokenizer import load_tokenizer
    tok = load_tokenizer(TINY_DIR)
    tok.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True  # pad() on ids is what we want here
    return tok


def reference_left_pad(sequences: List[List[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """What the tokenizer does for a batch: pad on the left to the longest row; mask 1 = real, 0 = pad."""
    out = _tokenizer().pad({"input_ids": [list(s) for s in sequences]}, padding=True, return_tensors="pt")
    ids, mask = out["input_ids"], out["attention_mask"]
    return ids.masked_fill(mask == 0, pad_id), mask  # pad with the requested id (the tokenizer uses its own)


def _left_pad_cases():
    return [
        ("two prompts of different lengths", [[1, 22, 26, 14, 23, 27, 32], [1, 20, 14, 24, 32]], 3),
        ("three prompts, the longest in the middle", [[1, 262, 339], [1, 7, 8, 9, 10, 11], [1]], 3),
        ("prompts of equal length need no padding", [[1, 5, 6], [1, 7, 8]], 3),
        ("another pad id (0)", [[1, 5], [1, 6, 7, 8]], 0),
    ]


def _left_pad_hint(seqs, pad_id, got_ids, got_mask, want_ids, want_mask) -> str:
    T = max(len(s) for s in seqs)
    right = torch.tensor([list(s) + [pad_id] * (T - len(s)) for s in seqs])
    if torch.equal(got_ids, right):
        return ("that is right padding: the pads must go on the LEFT, so every row ends with its last real token "
                "and the next token of every row is appended in the same column.")
    if torch.equal(got_ids, want_ids) and torch.equal(got_mask, 1 - want_mask):
        return "the mask is inverted: 1 marks a real token, 0 a pad."
    if torch.equal(got_ids, want_ids):
        return "input_ids are right; the attention_mask should be 1 for real tokens and 0 for pads, in the same places."
    return "pad each row on the left with pad_id up to the longest row; mask = 1 for real tokens, 0 for pads."


def check_left_pad(left_pad: Callable) -> ExerciseResult:
    """left_pad(sequences, pad_id) -> (input_ids (B, T) long, attention_mask (B, T) long)."""
    for label, seqs, pad_id in _left_pad_cases():
        want_ids, want_mask = reference_left_pad(seqs, pad_id)
        got, err = call_learner(left_pad, ([list(s) for s in seqs], pad_id), "left_pad", label)
        if err is not None:
            return err
        if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(isinstance(x, torch.Tensor) for x in got):
            return fail(label, f"returned {type(got).__name__}, expected two tensors",
                        "return (input_ids, attention_mask), both torch tensors of shape (B, T).")
        ids, mask = got
        for name, g, w in (("input_ids", ids, want_ids), ("attention_mask", mask, want_mask)):
            if g.shape != w.shape:
                return fail(label, f"{name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}",
                            "B rows (one per prompt), T columns (the longest prompt's length).")
            if g.dtype != torch.long:
                return fail(label, f"{name} has dtype {g.dtype}, expected torch.int64",
                            "build it with torch.tensor(rows) from Python ints, or pass dtype=torch.long.")
        if torch.equal(ids, want_ids) and torch.equal(mask, want_mask):
            continue
        return fail(label, f"got input_ids {ids.tolist()} and mask {mask.tolist()}, expected "
                           f"{want_ids.tolist()} and {want_mask.tolist()}",
                    _left_pad_hint(seqs, pad_id, ids, mask, want_ids, want_mask))
    return ExerciseResult(True, "left_pad agrees with the tokenizer on all 4 cases.")


# -- active parameters ---------------------------------------------------------------------------

def _active_cases():
    tiny_top1 = get_preset("tiny")
    tiny_top1.num_experts_per_tok = 1
    tied = get_preset("tiny")
    tied.tie_word_embeddings = True
    return [
        ("the tiny preset", get_preset("tiny")),
        ("Mixtral 8x7B", get_preset("mixtral-8x7b")),
        ("Mixtral 8x22B", get_preset("mixtral-8x22b")),
        ("tiny with top-1 routing (K = 1)", tiny_top1),
        ("tiny with lm_head tied to the embeddings", tied),
    ]


def _active_hint(config: MixtralConfig, got: int, want: int) -> str:
    count = sizes.parameter_count(config)
    b, L = count.breakdown, config.num_hidden_layers
    E, K = config.num_local_experts, config.num_experts_per_tok
    if got == count.total:
        return (f"that is the total: every token passes through only K = {K} of the E = {E} experts of each "
                f"layer, so drop L * (E - K) experts.")
    if got == want - L * b["router_per_layer"]:
        return "you left out the router (gate, C x E per layer): it runs for every token, so it is active."
    if got == want - b["norms"]:
        return "you left out the RMSNorm weights (2 per layer plus the final one): small, but active."
    if got == want - b["embeddings"]:
        return "you left out the embedding table: count it too, as the published active counts (e.g. 13B for 8x7B) do."
    if config.tie_word_embeddings and got == want + b["embeddings"]:
        return "with tie_word_embeddings the lm_head IS the embedding matrix: count it once."
    hd = config.head_dim
    wrong_kv = want - 2 * L * config.hidden_size * hd * (config.num_key_value_heads - config.num_attention_heads)
    if got == wrong_kv:
        return ("k_proj and v_proj have only Hkv heads (grouped-query attention): C x (Hkv * D) each, "
                "not C x (H * D).")
    return (f"expected {want:,} (= total {count.total:,} minus L * (E - K) experts of 3 * C * I weights each); "
            f"you are off by {got - want:+,}.")


def check_active_parameters(active_parameters: Callable) -> ExerciseResult:
    """active_parameters(config) -> the number of parameters one token passes through."""
    for label, config in _active_cases():
        want = sizes.parameter_count(config).active
        got, err = call_learner(active_parameters, (config,), "active_parameters", label)
        if err is not None:
            return err
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            return fail(label, f"returned a {type(got).__name__}, expected an int", "return a whole number.")
        if got != want:
            return fail(label, f"got {got:,}, expected {want:,}", _active_hint(config, got, want))
    return ExerciseResult(True, "active_parameters agrees with mixtral_edu.full_size.sizes on all 5 cases "
                                "(tiny, 8x7B, 8x22B, top-1, tied head).")
