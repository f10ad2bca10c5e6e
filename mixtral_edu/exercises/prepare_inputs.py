"""Exercises of notebook 02 (prepare_inputs_for_generation).

    02.1 check_predicted_positions(predicted_positions)
        predicted_positions() -> {"prefill": (2, 4) ids, "decode": (3, 2) ids} for the two masks of the exercise
    02.2 check_unprocessed_ids(unprocessed_ids)
        unprocessed_ids(input_ids (B, n), past_length, attention_mask (B, S) or None) -> the ids to feed
    02.3 check_prepare_bounded(prepare_bounded)
        prepare_bounded(input_ids (B, n), attention_mask (B, n), seen_tokens, max_cache_length)
            -> {"input_ids", "attention_mask", "position_ids"} for a bounded cache

The reference answers come from `mixtral_edu.MixtralForCausalLM.prepare_inputs_for_generation` itself (it reads
nothing from the model, only its arguments), given a cache of the right length: a legacy tuple, or a
`mixtral_edu.modeling.cache.SinkCache` for the bounded one. Hints name the mistake, never the expected values.
"""
from __future__ import annotations

from typing import List, Optional

import torch

from . import CASE, ExerciseResult, NotYet, call, checker, difference, name_the_mistake
from ..modeling.cache import SinkCache
from ..i18n import N_, _
from ..modeling.causal_lm import MixtralForCausalLM

PAD = 3

# -- the sentences a learner reads (one place; N_ marks them for the catalog, _() translates them when shown) --
POS_NOT_DICT = N_('return {"prefill": ..., "decode": ...}, each a list of rows (or a tensor).')
POS_SHAPE = N_("{key}: one row per row of the mask, and one column per token fed in that step (all columns in the "
               "prefill, only the new ones in the decode step).")
POS_COLUMNS = N_("these are column numbers, which ignore the padding: a row's first REAL token is position 0, "
                 "whatever column it sits in.")
POS_OFF_BY_ONE = N_("off by one: the first real token is position 0 (count the real tokens up to it, minus one).")
POS_PAD_VALUE = N_("the real tokens are right, the pads are not: transformers fills pad positions with 1 (any valid "
                   "index would do, since the mask hides pads, but the checker compares with transformers).")
POS_FIRST_COLUMNS = N_("these are the positions of the FIRST columns; a decode step feeds the LAST tokens of each row.")
POS_DEFAULT = N_("count the real tokens of each row from 0, give pads position 1, and in a decode step keep the new "
                 "columns.")
POS_WRONG = N_("{key}: {problem}")
POS_PASSED = N_("both predictions are right.")

IDS_NOT_TENSOR = N_("return a slice of input_ids: a tensor of shape (B, number of new tokens).")
IDS_ONE_D = N_("keep the batch dimension: slice columns, input_ids[:, a:b], which stays (B, n).")
IDS_BRANCH1 = N_("the attention mask is longer than input_ids: some tokens exist only in the cache (they came as "
                 "embeddings). The new tokens are the last (mask length - past_length) ids.")
IDS_BRANCH1_PAST = N_("in branch 1, slicing at past_length counts tokens that never were in input_ids: count from "
                      "the end instead, with the mask length.")
IDS_BRANCH2 = N_("input_ids still starts with the tokens the cache holds: drop the first past_length columns.")
IDS_BRANCH3_LAST = N_("past_length >= len(input_ids): input_ids already holds only new tokens, ALL of them (there "
                      "can be several); keep it as it is.")
IDS_BRANCH3_EMPTY = N_("past_length >= len(input_ids): slicing at past_length leaves nothing. In this case input_ids "
                       "already holds only new tokens: keep it as it is.")
IDS_DTYPE = N_("return a slice of input_ids as it is: it keeps their dtype (torch.long).")
IDS_DEFAULT = N_("three branches, in order: mask longer than input_ids; past_length < len(input_ids); otherwise.")
IDS_PASSED = N_("unprocessed_ids agrees with prepare_inputs_for_generation in all three branches ({n} cases).")

BND_NOT_DICT = N_('return a dict with the keys "input_ids", "attention_mask" and "position_ids".')
BND_NO_CROP = N_("the cache is about to evict (the tokens it holds plus the new ones exceed max_cache_length), so "
                 "the mask keeps only its last max_cache_length columns: what the cache can still show the model.")
BND_CROP_SIZE = N_("crop the mask to exactly its last max_cache_length columns.")
BND_POS_UNCROPPED = N_("the positions come from the CROPPED mask: they count within what the cache still shows, "
                       "not from the start of the sequence (that is what transformers 4.41.2 does).")
BND_POS_SEEN = N_("the positions are not seen_tokens + 0, 1, ...: prepare_inputs_for_generation counts them from "
                  "the (cropped) mask, like any other position ids.")
BND_IDS_HELD = N_("drop the tokens the cache has SEEN (seen_tokens), not only the ones it still holds: evicted "
                  "tokens were processed too.")
BND_POS_ALL = N_("keep only the positions of the tokens fed now: the last (number of new tokens) columns.")
BND_SHAPE = N_("{key}: input_ids and position_ids are (B, new tokens); the mask is (B, columns kept).")
BND_WRONG_SHAPE = N_("{key} has shape {got}, which is not right")
BND_DEFAULT = N_("follow the function: slice the ids by seen_tokens; crop the mask if the cache's tokens plus the new "
                 "ones exceed max_cache_length; then position ids from that mask, last columns only.")
BND_PASSED = N_("prepare_bounded agrees with prepare_inputs_for_generation on a SinkCache in all {n} cases.")


def legacy_cache_of_length(batch: int, past_length: int):
    """A legacy cache (one layer, one kv head, D=1) holding past_length zeros: only its length matters here."""
    zeros = torch.zeros(batch, 1, past_length, 1)
    return ((zeros, zeros.clone()),)


def bounded_cache(batch: int, seen_tokens: int, max_cache_length: int) -> SinkCache:
    """A SinkCache (1 sink) that has seen seen_tokens tokens and holds min(seen_tokens, max_cache_length)."""
    cache = SinkCache(window_length=max_cache_length, num_sink_tokens=1)
    first = min(seen_tokens, max_cache_length)
    cache.update(torch.zeros(batch, 1, first, 2), torch.zeros(batch, 1, first, 2), 0)
    for _ in range(seen_tokens - first):
        cache.update(torch.zeros(batch, 1, 1, 2), torch.zeros(batch, 1, 1, 2), 0)
    return cache


def _prepare(input_ids, past, attention_mask):
    """The package's prepare_inputs_for_generation (it never reads `self`)."""
    return MixtralForCausalLM.prepare_inputs_for_generation(None, input_ids, past_key_values=past,
                                                            attention_mask=attention_mask)


def _mask(pads: List[int], length: int) -> torch.Tensor:
    return torch.tensor([[0] * p + [1] * (length - p) for p in pads])


def _ids(pads: List[int], length: int, start: int = 10) -> torch.Tensor:
    return torch.tensor([[PAD] * p + [start + 10 * b + j for j in range(length - p)] for b, p in enumerate(pads)])


# -- 02.1 predict position ids -----------------------------------------------------------------------

PREFILL_MASK = _mask([2, 0], 4)                 # (2, 4), no cache
DECODE_MASK = _mask([2, 0, 4], 7)               # (3, 7), a cache of 5, 2 new tokens


def reference_positions() -> dict:
    prefill = _prepare(torch.zeros(2, 4, dtype=torch.long), None, PREFILL_MASK)["position_ids"]
    decode = _prepare(torch.zeros(3, 7, dtype=torch.long), legacy_cache_of_length(3, 5), DECODE_MASK)["position_ids"]
    return {"prefill": prefill, "decode": decode}


def _positions_mistakes(mask: torch.Tensor, T: int):
    counted = mask.long().cumsum(-1) - 1
    S = mask.shape[1]
    return [
        (POS_COLUMNS, torch.arange(S).expand_as(mask)[:, -T:]),
        (POS_COLUMNS, torch.arange(S - T, S).expand(mask.shape[0], T) - 0),
        (POS_OFF_BY_ONE, (counted + 1).masked_fill(mask == 0, 1)[:, -T:]),
        (POS_OFF_BY_ONE, (counted + 1).masked_fill(mask == 0, 2)[:, -T:]),
        (POS_OFF_BY_ONE, (counted + 1).masked_fill(mask == 0, 0)[:, -T:]),
        (POS_OFF_BY_ONE, (counted + 1)[:, -T:]),
        (POS_PAD_VALUE, counted.masked_fill(mask == 0, 0)[:, -T:]),
        (POS_PAD_VALUE, counted[:, -T:]),
        (POS_FIRST_COLUMNS, counted.masked_fill(mask == 0, 1)[:, :T]),
    ]


@checker
def check_predicted_positions(predicted_positions) -> ExerciseResult:
    """predicted_positions() -> {"prefill": (2, 4), "decode": (3, 2)} position ids."""
    got = call(predicted_positions)
    if not isinstance(got, dict) or set(got) != {"prefill", "decode"}:
        raise NotYet(_("returned {kind}").format(kind=type(got).__name__), POS_NOT_DICT)
    want = reference_positions()
    for key, mask, T in (("prefill", PREFILL_MASK, 4), ("decode", DECODE_MASK, 2)):
        value = got[key]
        try:
            value = torch.as_tensor(value).long() if not isinstance(value, torch.Tensor) else value.long()
        except Exception:
            raise NotYet(_(POS_WRONG).format(key=key, problem=_("not a list of rows of whole numbers")),
                         POS_NOT_DICT)
        problem = difference(value, want[key], what=key, check_dtype=False)
        if problem is None:
            continue
        if problem.kind == "shape":
            raise NotYet(_(POS_WRONG).format(key=key, problem=_("the shape is not right")),
                         _(POS_SHAPE).format(key=key))
        raise NotYet(_(POS_WRONG).format(key=key, problem=problem),
                     name_the_mistake(value, _positions_mistakes(mask, T), default=POS_DEFAULT))
    return ExerciseResult(True, POS_PASSED)


# -- 02.2 which ids to feed ---------------------------------------------------------------------------

def reference_unprocessed_ids(input_ids: torch.Tensor, past_length: int,
                              attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """The ids prepare_inputs_for_generation keeps, given a cache of past_length tokens."""
    return _prepare(input_ids, legacy_cache_of_length(input_ids.shape[0], past_length), attention_mask)["input_ids"]


def _unprocessed_cases():
    ids8, mask8 = _ids([0, 3], 8), _mask([0, 3], 8)
    new3 = torch.tensor([[71, 72, 73], [81, 82, 83]])
    return [
        (N_("branch 2 (the usual decode step): input_ids holds the whole sequence (8), the cache 7"),
         ids8, 7, mask8),
        (N_("branch 2 with several new tokens: input_ids 8, cache 5"), ids8, 5, mask8),
        (N_("branch 1: the mask (8) is longer than input_ids (1), as after a prompt given as inputs_embeds"),
         ids8[:, -1:], 7, mask8),
        (N_("branch 1 although past_length < len(input_ids): mask 9, input_ids 6, cache 4"),
         torch.cat([ids8[:, -5:], ids8[:, :1] + 60], dim=1), 4, torch.cat([mask8, mask8[:, -1:]], dim=1)),
        (N_("branch 1 with 3 ids: mask 9, cache 7, so the last 2 ids are new"),
         torch.cat([ids8[:, -2:], ids8[:, :1] + 50], dim=1), 7, torch.cat([mask8, mask8[:, -1:]], dim=1)),
        (N_("branch 3: input_ids holds only the 3 new tokens, no mask given"), new3, 7, None),
        (N_("branch 3: input_ids holds only the new token, no mask given"), ids8[:, -1:], 7, None),
    ]


def _unprocessed_mistakes(ids, P, mask):
    n = ids.shape[1]
    out = [(IDS_BRANCH2, ids), (IDS_BRANCH3_EMPTY, ids[:, P:]), (IDS_BRANCH3_LAST, ids[:, -1:])]
    if mask is not None and mask.shape[1] > n:
        out = [(IDS_BRANCH1_PAST, ids[:, -P:]), (IDS_BRANCH1, ids[:, P:]), (IDS_BRANCH1, ids[:, -1:]),
               (IDS_BRANCH1, ids)] + out
    return out


@checker
def check_unprocessed_ids(unprocessed_ids) -> ExerciseResult:
    """unprocessed_ids(input_ids, past_length, attention_mask or None) -> the ids still to feed."""
    cases = _unprocessed_cases()
    for label, ids, P, mask in cases:
        want = reference_unprocessed_ids(ids, P, mask)
        got = call(unprocessed_ids, ids.clone(), P, None if mask is None else mask.clone(), label=label)
        problem = difference(got, want, what=N_("the ids"))
        if problem is None:
            continue
        if problem.kind == "type":
            hint = IDS_NOT_TENSOR
        elif problem.kind == "dtype":
            hint = IDS_DTYPE
        elif isinstance(got, torch.Tensor) and got.dim() == 1:
            hint = IDS_ONE_D
        else:
            hint = name_the_mistake(got, _unprocessed_mistakes(ids, P, mask), default=IDS_DEFAULT)
        raise NotYet(_(CASE).format(label=_(label), problem=problem), hint)
    return ExerciseResult(True, _(IDS_PASSED).format(n=len(cases)))


# -- 02.3 a bounded cache ------------------------------------------------------------------------------

KEYS = ("input_ids", "attention_mask", "position_ids")


def reference_prepare_bounded(input_ids, attention_mask, seen_tokens, max_cache_length) -> dict:
    out = _prepare(input_ids, bounded_cache(input_ids.shape[0], seen_tokens, max_cache_length), attention_mask)
    return {k: out[k] for k in KEYS}


def _bounded_cases():
    return [
        (N_("room left: seen 4 of max 8, 1 new token"), _ids([0], 5), _mask([0], 5), 4, 8),
        (N_("a left-padded batch (0, 3 pads), seen 9, max 6, 1 new token"), _ids([0, 3], 10), _mask([0, 3], 10), 9, 6),
        (N_("full: seen 10, holds 8 of max 8, 1 new token"), _ids([0], 11), _mask([0], 11), 10, 8),
        (N_("exactly full after this step: seen 7 of max 8, 1 new token"), _ids([0], 8), _mask([0], 8), 7, 8),
        (N_("full, 3 new tokens at once: seen 10, max 8"), _ids([0], 13), _mask([0], 13), 10, 8),
    ]


def _bounded_mistakes(ids, mask, seen, W):
    n_new = ids.shape[1] - seen
    held = min(seen, W)
    fed = ids[:, seen:]

    def positions(m, T):
        return (m.long().cumsum(-1) - 1).masked_fill(m == 0, 1)[:, -T:]
    cropped = mask[:, -W:]
    uncropped = {"input_ids": fed, "attention_mask": mask, "position_ids": positions(mask, n_new)}
    good = {"input_ids": fed, "attention_mask": cropped, "position_ids": positions(cropped, n_new)}
    return [
        (BND_NO_CROP, uncropped),
        (BND_POS_UNCROPPED, {**good, "position_ids": positions(mask, n_new)}),
        (BND_CROP_SIZE, {**good, "attention_mask": mask[:, -(W + 1):], "position_ids": positions(mask[:, -(W + 1):], n_new)}),
        (BND_CROP_SIZE, {**good, "attention_mask": mask[:, -(W - n_new):],
                         "position_ids": positions(mask[:, -(W - n_new):], n_new)}),
        (BND_POS_SEEN, {**good, "position_ids": seen + torch.arange(n_new).expand(ids.shape[0], n_new)}),
        (BND_IDS_HELD, {**good, "input_ids": ids[:, held:]}),
        (BND_POS_ALL, {**good, "position_ids": positions(cropped, cropped.shape[1])}),
    ]


@checker
def check_prepare_bounded(prepare_bounded) -> ExerciseResult:
    """prepare_bounded(input_ids, attention_mask, seen_tokens, max_cache_length) -> dict of the three tensors."""
    cases = _bounded_cases()
    for label, ids, mask, seen, W in cases:
        want = reference_prepare_bounded(ids, mask, seen, W)
        got = call(prepare_bounded, ids.clone(), mask.clone(), seen, W, label=label)
        if not isinstance(got, dict) or not set(KEYS) <= set(got):
            raise NotYet(_("case {label}: returned {kind} without the three keys").format(
                label=_(label), kind=type(got).__name__), BND_NOT_DICT)
        for key in KEYS:
            problem = difference(got[key], want[key], what=key)
            if problem is None:
                continue
            kind = problem.kind
            if kind == "shape":   # the expected shape would give the crop away: say only which one is off
                problem = _(BND_WRONG_SHAPE).format(key=key, got=tuple(got[key].shape))
            if kind in ("type", "dtype"):
                hint = BND_NOT_DICT if kind == "type" else IDS_DTYPE
            else:
                mine = {k: got[k] for k in KEYS}
                hint = name_the_mistake(mine, _bounded_mistakes(ids, mask, seen, W),
                                        default=_(BND_SHAPE).format(key=key) if kind == "shape" else BND_DEFAULT)
            raise NotYet(_(CASE).format(label=_(label), problem=problem), hint)
    return ExerciseResult(True, _(BND_PASSED).format(n=len(cases)))


EXERCISES = {
    "02.1": ("predicted_positions", check_predicted_positions),
    "02.2": ("unprocessed_ids", check_unprocessed_ids),
    "02.3": ("prepare_bounded", check_prepare_bounded),
}
