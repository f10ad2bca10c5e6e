"""Exercises of notebook 02 (prepare_inputs_for_generation): position ids, and which ids to feed.

    check_position_ids(position_ids_from_mask)
        position_ids_from_mask(attention_mask (B, S), num_new) -> (B, num_new) position ids
    check_unprocessed_ids(unprocessed_ids)
        unprocessed_ids(input_ids (B, n), past_length, attention_mask (B, S) or None) -> the ids to feed

The reference answers come from `mixtral_edu.MixtralForCausalLM.prepare_inputs_for_generation`
itself (it reads nothing from the model, only its arguments), fed a stand-in cache of the
right length. The checks name the mistake when they recognise it.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch

from . import ExerciseResult, call_learner, dtype_failure, fail
from ..modeling.causal_lm import MixtralForCausalLM

PAD = 3


def legacy_cache_of_length(batch: int, past_length: int):
    """A legacy cache (one layer, one kv head, D=1) holding past_length zeros: only its length matters here."""
    zeros = torch.zeros(batch, 1, past_length, 1)
    return ((zeros, zeros.clone()),)


def _prepare(input_ids, past_length, attention_mask):
    """The package's prepare_inputs_for_generation (it never reads `self`) with a cache of past_length."""
    past = None if past_length is None else legacy_cache_of_length(input_ids.shape[0], past_length)
    return MixtralForCausalLM.prepare_inputs_for_generation(None, input_ids, past_key_values=past,
                                                            attention_mask=attention_mask)


def _mask(pads: List[int], length: int) -> torch.Tensor:
    return torch.tensor([[0] * p + [1] * (length - p) for p in pads])


def _ids(pads: List[int], length: int, start: int = 10) -> torch.Tensor:
    rows = []
    for b, p in enumerate(pads):
        rows.append([PAD] * p + [start + 10 * b + j for j in range(length - p)])
    return torch.tensor(rows)


# -- position ids --------------------------------------------------------------------------------

def reference_position_ids(attention_mask: torch.Tensor, num_new: int) -> torch.Tensor:
    """(B, num_new) position ids of this step's tokens, as prepare_inputs_for_generation builds them."""
    S = attention_mask.shape[1]
    ids = torch.zeros(attention_mask.shape[0], num_new, dtype=torch.long)
    past = None if num_new == S else S - num_new
    return _prepare(ids, past, attention_mask)["position_ids"]


def _position_cases() -> List[Tuple[str, torch.Tensor, int]]:
    return [
        ("one row, no padding, prefill (num_new = S = 5)", _mask([0], 5), 5),
        ("left-padded batch (0, 2, 3 pads), prefill (num_new = S = 6)", _mask([0, 2, 3], 6), 6),
        ("the same batch one step later: decode, num_new = 1 of S = 7", _mask([0, 2, 3], 7), 1),
        ("a row that is mostly padding, 3 new tokens at once (num_new = 3 of S = 9)", _mask([0, 6], 9), 3),
    ]


def _position_hint(mask: torch.Tensor, T: int, got: torch.Tensor, want: torch.Tensor) -> str:
    S = mask.shape[1]
    real = mask == 1
    counted = mask.long().cumsum(-1) - 1
    full = counted.masked_fill(mask == 0, 1)
    if got.shape != want.shape:
        if got.shape == full.shape:
            return (f"you returned all S = {S} columns; this step feeds only the last {T} token(s), so keep "
                    "position_ids[:, -num_new:].")
        return f"the result must have shape (B, num_new) = {tuple(want.shape)}."
    if torch.equal(got, full[:, :T]) and T < S:
        return "you kept the first num_new columns; the tokens fed now are the last ones: [:, -num_new:]."
    arange = torch.arange(S).expand_as(mask)
    if torch.equal(got, arange[:, -T:]):
        return ("these are column numbers, which ignore the padding: count only real tokens with "
                "attention_mask.cumsum(-1) - 1, so each row's first real token gets position 0.")
    tail_real = real[:, -T:]
    if torch.equal(got[tail_real], (counted + 1)[:, -T:][tail_real]):
        return "off by one: the first real token is position 0, so subtract 1 from the cumulative sum."
    if torch.equal(got[tail_real], want[tail_real]):
        return ("the real tokens are right; the pads are not: transformers fills pad positions with 1 "
                "(masked_fill(attention_mask == 0, 1)). Any valid index would do, since the mask hides pads, "
                "but 1 is what the reference uses.")
    return "position_ids = attention_mask.long().cumsum(-1) - 1, pads filled with 1, then the last num_new columns."


def check_position_ids(position_ids_from_mask: Callable) -> ExerciseResult:
    """position_ids_from_mask(attention_mask (B, S), num_new) -> (B, num_new)."""
    for label, mask, T in _position_cases():
        want = reference_position_ids(mask, T)
        got, err = call_learner(position_ids_from_mask, (mask.clone(), T), "position_ids_from_mask", label)
        if err is not None:
            return err
        if not isinstance(got, torch.Tensor):
            return fail(label, f"returned a {type(got).__name__}, expected a tensor", "return a (B, num_new) LongTensor.")
        if got.shape == want.shape and torch.equal(got.long(), want):
            failure = dtype_failure(label, got, want,  # the values were compared as long
                                    "position ids are torch.long: attention_mask.long().cumsum(-1) gives them.")
            if failure is None:
                continue
            return failure
        return fail(label, f"got {got.tolist()}, expected {want.tolist()}", _position_hint(mask, T, got.long(), want))
    return ExerciseResult(True, "position_ids_from_mask agrees with prepare_inputs_for_generation on all 4 cases.")


# -- which ids to feed -----------------------------------------------------------------------------

def reference_unprocessed_ids(input_ids: torch.Tensor, past_length: int,
                              attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The ids prepare_inputs_for_generation keeps, given a cache of past_length tokens."""
    return _prepare(input_ids, past_length, attention_mask)["input_ids"]


def _unprocessed_cases():
    ids8, mask8 = _ids([0, 3], 8), _mask([0, 3], 8)
    return [
        ("branch 2 (the usual decode step): input_ids holds the whole sequence (8), the cache 7",
         ids8, 7, mask8),
        ("branch 2 with several new tokens: input_ids 8, cache 5", ids8, 5, mask8),
        ("branch 1: the mask (8) is longer than input_ids (1), as after a prompt given as inputs_embeds",
         ids8[:, -1:], 7, mask8),
        ("branch 1 with 3 ids: mask 9, cache 7, so the last 2 ids are new",
         torch.cat([ids8[:, -2:], ids8[:, :1] + 50], dim=1), 7, torch.cat([mask8, mask8[:, -1:]], dim=1)),
        ("branch 3: input_ids already holds only the new token, no mask given", ids8[:, -1:], 7, None),
    ]


def _unprocessed_hint(label: str, ids, P, mask, got, want) -> str:
    n = ids.shape[1]
    if label.startswith("branch 1"):
        return (f"the attention mask is longer than input_ids ({mask.shape[1]} > {n}): some tokens exist only in "
                f"the cache (they came as embeddings). The new tokens are the last mask_length - past_length = "
                f"{mask.shape[1] - P} ids: input_ids[:, -(attention_mask.shape[1] - past_length):].")
    if label.startswith("branch 2"):
        if got.shape[1] == n:
            return (f"input_ids still starts with the {P} tokens the cache holds: drop them, input_ids[:, past_length:].")
        return f"past_length ({P}) < len(input_ids) ({n}): the new tokens are input_ids[:, past_length:]."
    if got.shape[1] == 0:
        return (f"past_length ({P}) >= len(input_ids) ({n}): slicing at past_length leaves nothing. In this case "
                "input_ids already holds only new tokens: keep it as it is.")
    return "past_length >= len(input_ids) and no longer mask: input_ids already holds only new tokens, keep it."


def check_unprocessed_ids(unprocessed_ids: Callable) -> ExerciseResult:
    """unprocessed_ids(input_ids, past_length, attention_mask or None) -> the ids still to feed."""
    for label, ids, P, mask in _unprocessed_cases():
        want = reference_unprocessed_ids(ids, P, mask)
        args = (ids.clone(), P, None if mask is None else mask.clone())
        got, err = call_learner(unprocessed_ids, args, "unprocessed_ids", label)
        if err is not None:
            return err
        if not isinstance(got, torch.Tensor):
            return fail(label, f"returned a {type(got).__name__}, expected a tensor", "return a slice of input_ids.")
        if got.shape == want.shape and torch.equal(got, want):
            failure = dtype_failure(label, got, want,  # torch.equal compares values across dtypes
                                    "return a slice of input_ids as it is: it keeps their dtype.")
            if failure is None:
                continue
            return failure
        return fail(label, f"got {got.tolist()}, expected {want.tolist()}",
                    _unprocessed_hint(label, ids, P, mask, got, want))
    return ExerciseResult(True, "unprocessed_ids agrees with prepare_inputs_for_generation in all three branches "
                                "(5 cases).")
