"""Plausible wrong answers to notebook 02's exercises: each gets NOT YET with a hint naming the mistake."""
import torch

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import prepare_inputs as ex

RIGHT_PREFILL = [[1, 1, 0, 1], [0, 1, 2, 3]]
RIGHT_DECODE = [[3, 4], [5, 6], [1, 2]]


def predicted(prefill=RIGHT_PREFILL, decode=RIGHT_DECODE):
    return lambda: {"prefill": prefill, "decode": decode}


def ids_fn(branch1=True, branch3="all", one_d=False, branch1_past=False):
    def unprocessed_ids(input_ids, past_length, attention_mask):
        if branch1 and attention_mask is not None and attention_mask.shape[1] > input_ids.shape[1]:
            out = input_ids[:, -past_length:] if branch1_past else \
                input_ids[:, -(attention_mask.shape[1] - past_length):]
        elif past_length < input_ids.shape[1]:
            out = input_ids[:, past_length:]
        else:
            out = {"all": input_ids, "last": input_ids[:, -1:], "slice": input_ids[:, past_length:]}[branch3]
        return out[0] if one_d else out
    return unprocessed_ids


def bounded(crop=True, crop_when=">", crop_to=0, positions="cropped", ids_by="seen", keep_all_positions=False):
    def prepare_bounded(input_ids, attention_mask, seen_tokens, max_cache_length):
        held = min(seen_tokens, max_cache_length)
        new_ids = input_ids[:, (seen_tokens if ids_by == "seen" else held):]
        T = new_ids.shape[1]
        full_mask = attention_mask
        overflow = held + T > max_cache_length if crop_when == ">" else held + T >= max_cache_length
        if crop and overflow:
            attention_mask = attention_mask[:, -(max_cache_length + crop_to):]
        source = attention_mask if positions == "cropped" else full_mask
        position_ids = (source.long().cumsum(-1) - 1).masked_fill(source == 0, 1)
        if positions == "seen":
            position_ids = seen_tokens + torch.arange(T).expand(input_ids.shape[0], T)
        elif not keep_all_positions:
            position_ids = position_ids[:, -T:]
        return {"input_ids": new_ids, "attention_mask": attention_mask, "position_ids": position_ids}
    return prepare_bounded


MUTANTS = [
    Mutant("02.1", "column numbers", predicted(prefill=[[0, 1, 2, 3], [0, 1, 2, 3]]), ["column numbers"]),
    Mutant("02.1", "decode: column numbers", predicted(decode=[[5, 6], [5, 6], [5, 6]]), ["column numbers"]),
    Mutant("02.1", "cumsum without - 1", predicted(prefill=[[1, 1, 1, 2], [1, 2, 3, 4]]), ["off by one"]),
    Mutant("02.1", "pads as 0", predicted(prefill=[[0, 0, 0, 1], [0, 1, 2, 3]]), ["pads are not", "1"]),
    Mutant("02.1", "pads as -1", predicted(prefill=[[-1, -1, 0, 1], [0, 1, 2, 3]]), ["pads are not"]),
    Mutant("02.1", "decode keeps the first columns", predicted(decode=[[1, 1], [0, 1], [1, 1]]), ["FIRST", "LAST"]),
    Mutant("02.1", "decode keeps every column", predicted(decode=[[1, 1, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6],
                                                                  [1, 1, 1, 1, 0, 1, 2]]), ["only the new ones"]),
    Mutant("02.1", "a bare list", lambda: [[1, 1, 0, 1]], ['"prefill"']),
    Mutant("02.2", "the untouched stub: no branch 1, branch 3 cut to one id", ids_fn(branch1=False, branch3="last"),
           ["mask is longer"]),
    Mutant("02.2", "branch 3 keeps only the last id", ids_fn(branch3="last"), ["ALL of them"]),
    Mutant("02.2", "no branch 1", ids_fn(branch1=False), ["mask is longer", "embeddings"]),
    Mutant("02.2", "branch 3 slices at past_length", ids_fn(branch3="slice"), ["leaves nothing"]),
    Mutant("02.2", "branch 1 sliced with past_length", ids_fn(branch1_past=True), ["count from the end"]),
    Mutant("02.2", "a 1-D answer", ids_fn(one_d=True), ["batch dimension"]),
    Mutant("02.2", "a list", lambda i, p, m: i[:, p:].tolist(), ["slice of input_ids"]),
    Mutant("02.3", "no crop", bounded(crop=False), ["evict", "last max_cache_length"]),
    Mutant("02.3", "crop one column too few", bounded(crop_to=-1), ["exactly"]),
    Mutant("02.3", "crop one column too many", bounded(crop_to=1), ["exactly"]),
    Mutant("02.3", "positions from the uncropped mask", bounded(positions="uncropped"), ["CROPPED mask"]),
    Mutant("02.3", "positions = seen + arange", bounded(positions="seen"), ["seen_tokens + 0"]),
    Mutant("02.3", "ids sliced by what the cache holds", bounded(ids_by="held"), ["SEEN"]),
    Mutant("02.3", "positions of every column", bounded(keep_all_positions=True), ["fed now"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)
