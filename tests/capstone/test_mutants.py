"""Plausible wrong pieces: for each one the trace diff names that piece as the first divergence.

Each mutant is the reference solution with one mistake a learner makes (the kinds the exercise
mutation tests use). It is plugged in alone, the model runs the diff's standard run (a forward of
a left-padded batch with the router logits, then greedy generation), and the first call whose
numbers differ from the model without the piece must be charged to that piece, with its chapter.

The model: the test suite's tiny random Mixtral (initializer 0.2, so wrong numbers do not hide
below rounding) with a sliding window of 4, so a 9-token prompt plus 4 new tokens reaches beyond
it. Mistakes that only show in half precision run on the same model cast to bfloat16.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

from mixtral_edu import trace_diff
from mixtral_edu.build import PIECES
from mixtral_edu.build.diff import default_inputs

from capstone_helpers import solutions
from pairs import make_pair

S = solutions()


@dataclass
class Mutant:
    piece: str
    mistake: str
    fn: Callable
    bf16: bool = False


# -- greedy_step ---------------------------------------------------------------------------------

def greedy_first_position(model, input_ids, attention_mask, past_key_values):
    inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                 attention_mask=attention_mask, use_cache=True)
    out = model(**inputs, return_dict=True)
    return out.logits[:, 0, :].argmax(dim=-1), out.past_key_values


def greedy_keeps_old_cache(model, input_ids, attention_mask, past_key_values):
    inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                 attention_mask=attention_mask, use_cache=True)
    out = model(**inputs, return_dict=True)
    return out.logits[:, -1, :].argmax(dim=-1), past_key_values


def greedy_argmax_over_batch(model, input_ids, attention_mask, past_key_values):
    inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                 attention_mask=attention_mask, use_cache=True)
    out = model(**inputs, return_dict=True)
    return out.logits[:, -1, :].argmax(dim=0), out.past_key_values


# -- position ids --------------------------------------------------------------------------------

def positions_ignore_padding(attention_mask, num_new):
    s = attention_mask.shape[1]
    return torch.arange(s - num_new, s).expand(attention_mask.shape[0], num_new)


def positions_off_by_one(attention_mask, num_new):
    counted = attention_mask.long().cumsum(-1)
    return counted.masked_fill(attention_mask == 0, 1)[:, -num_new:]


def positions_first_columns(attention_mask, num_new):
    counted = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    return counted[:, :num_new]


# -- load-balancing loss -------------------------------------------------------------------------

def _aux_parts(gate_logits, num_experts, top_k, attention_mask, use_mask=True):
    stacked = torch.cat(tuple(gate_logits), dim=0)
    probs = torch.softmax(stacked, dim=-1)
    slots = F.one_hot(torch.topk(probs, top_k, dim=-1).indices, num_experts).float()
    real = (attention_mask.reshape(-1).float().repeat(len(gate_logits)) if use_mask and attention_mask is not None
            else torch.ones(stacked.shape[0]))
    share = torch.einsum("n,nke->ke", real, slots) / real.sum()
    return share, torch.einsum("n,ne->e", real, probs) / real.sum(), stacked, real


def aux_mean_instead_of_sum(gate_logits, num_experts, top_k, attention_mask):
    share, mean_prob, _, _ = _aux_parts(gate_logits, num_experts, top_k, attention_mask)
    return num_experts * torch.mean(share * mean_prob[None, :])


def aux_counts_padding(gate_logits, num_experts, top_k, attention_mask):
    share, mean_prob, _, _ = _aux_parts(gate_logits, num_experts, top_k, attention_mask, use_mask=False)
    return num_experts * torch.sum(share * mean_prob[None, :])


def aux_without_num_experts(gate_logits, num_experts, top_k, attention_mask):
    share, mean_prob, _, _ = _aux_parts(gate_logits, num_experts, top_k, attention_mask)
    return torch.sum(share * mean_prob[None, :])


# -- the 4D mask ---------------------------------------------------------------------------------

def _visible(attention_mask, q_len, past_len, window, keep):
    keys = torch.arange(attention_mask.shape[1])[None, :]
    queries = torch.arange(past_len, past_len + q_len)[:, None]
    ok = keys <= queries
    if window is not None:
        ok = ok & (queries - keys < window + keep)
    return ok


def mask_window_of_w_keys(attention_mask, q_len, past_len, sliding_window, dtype):
    ok = _visible(attention_mask, q_len, past_len, sliding_window, 0)[None, None] & \
        attention_mask[:, None, None, :].bool()
    return torch.zeros(ok.shape, dtype=dtype).masked_fill(~ok, torch.finfo(dtype).min)


def mask_minus_inf_times(attention_mask, q_len, past_len, sliding_window, dtype):
    ok = _visible(attention_mask, q_len, past_len, sliding_window, 1)[None, None] & \
        attention_mask[:, None, None, :].bool()
    return ((1 - ok.to(dtype)) * float("-inf")).to(dtype)      # 0 * -inf is nan where visible


def mask_ignores_padding(attention_mask, q_len, past_len, sliding_window, dtype):
    ok = _visible(attention_mask, q_len, past_len, sliding_window, 1)[None, None].expand(
        attention_mask.shape[0], 1, q_len, attention_mask.shape[1])
    return torch.zeros(ok.shape, dtype=dtype).masked_fill(~ok, torch.finfo(dtype).min)


def mask_forgets_the_past(attention_mask, q_len, past_len, sliding_window, dtype):
    return S.build_4d_mask(attention_mask, q_len, 0, sliding_window, dtype)


# -- RMSNorm ---------------------------------------------------------------------------------------

def rms_eps_outside_sqrt(hidden_states, weight, eps):
    x = hidden_states.float()
    x = x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps)
    return weight * x.to(hidden_states.dtype)


def rms_weight_before_cast(hidden_states, weight, eps):
    x = hidden_states.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return (weight * x).to(hidden_states.dtype)


def rms_subtracts_mean(hidden_states, weight, eps):
    x = hidden_states.float()
    x = x - x.mean(-1, keepdim=True)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(hidden_states.dtype)


def rms_in_model_dtype(hidden_states, weight, eps):
    x = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x


# -- rotary --------------------------------------------------------------------------------------

def rotate_half_sign_flipped(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x2, -x1), dim=-1)


def rotate_half_interleaved(x):
    pairs = x.unflatten(-1, (-1, 2))                      # (..., D/2, 2): neighbours as pairs
    return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)


def rotary_ignores_position_ids(q, k, cos, sin, position_ids):
    t = q.shape[2]
    c, s = cos[:t][None, None], sin[:t][None, None]
    return q * c + S.rotate_half(q) * s, k * c + S.rotate_half(k) * s


def rotary_minus_sin(q, k, cos, sin, position_ids):
    c, s = cos[position_ids].unsqueeze(1), sin[position_ids].unsqueeze(1)
    return q * c - S.rotate_half(q) * s, k * c - S.rotate_half(k) * s


# -- attention -----------------------------------------------------------------------------------

def repeat_kv_tiled(hidden_states, n_rep):
    return hidden_states.repeat(1, n_rep, 1, 1)


def weights_softmax_in_bf16(query_states, key_states, attention_mask):
    scores = query_states @ key_states.transpose(-1, -2) / math.sqrt(query_states.shape[-1])
    if attention_mask is not None:
        scores = scores + attention_mask
    return torch.softmax(scores.to(torch.bfloat16), dim=-1).to(query_states.dtype)


def weights_unscaled(query_states, key_states, attention_mask):
    scores = query_states @ key_states.transpose(-1, -2)
    return torch.softmax((scores + attention_mask).float(), dim=-1).to(query_states.dtype)


def weights_scaled_by_d(query_states, key_states, attention_mask):
    scores = query_states @ key_states.transpose(-1, -2) / query_states.shape[-1]
    return torch.softmax((scores + attention_mask).float(), dim=-1).to(query_states.dtype)


def weights_without_mask(query_states, key_states, attention_mask):
    scores = query_states @ key_states.transpose(-1, -2) / math.sqrt(query_states.shape[-1])
    return torch.softmax(scores.float(), dim=-1).to(query_states.dtype)


# -- routing and dispatch ------------------------------------------------------------------------

def route_not_renormalised(router_logits, top_k):
    weights, experts = torch.topk(torch.softmax(router_logits.float(), dim=-1), top_k, dim=-1)
    return weights.to(router_logits.dtype), experts


def route_softmax_over_tokens(router_logits, top_k):
    weights, experts = torch.topk(torch.softmax(router_logits.float(), dim=0), top_k, dim=-1)
    return (weights / weights.sum(-1, keepdim=True)).to(router_logits.dtype), experts


def route_without_softmax(router_logits, top_k):
    weights, experts = torch.topk(router_logits, top_k, dim=-1)
    return weights / weights.sum(-1, keepdim=True), experts


def dispatch_index_copy(hidden_states, routing_weights, selected_experts, experts):
    out = torch.zeros_like(hidden_states)
    for e, expert in enumerate(experts):
        token, slot = torch.nonzero(selected_experts == e, as_tuple=True)
        out.index_copy_(0, token, expert(hidden_states[token]) * routing_weights[token, slot, None])
    return out


def dispatch_assigns(hidden_states, routing_weights, selected_experts, experts):
    out = torch.zeros_like(hidden_states)
    for e, expert in enumerate(experts):
        token, slot = torch.nonzero(selected_experts == e, as_tuple=True)
        out[token] = expert(hidden_states[token]) * routing_weights[token, slot, None]   # the last expert wins
    return out


def dispatch_unweighted(hidden_states, routing_weights, selected_experts, experts):
    out = torch.zeros_like(hidden_states)
    for e, expert in enumerate(experts):
        token, _ = torch.nonzero(selected_experts == e, as_tuple=True)
        out.index_add_(0, token, expert(hidden_states[token]))
    return out


def dispatch_first_slot_weight(hidden_states, routing_weights, selected_experts, experts):
    out = torch.zeros_like(hidden_states)
    for e, expert in enumerate(experts):
        token, _ = torch.nonzero(selected_experts == e, as_tuple=True)
        out.index_add_(0, token, expert(hidden_states[token]) * routing_weights[token, 0, None])
    return out


MUTANTS = [
    Mutant("greedy_step", "reads the logits of position 0", greedy_first_position),
    Mutant("greedy_step", "hands back the cache it was given", greedy_keeps_old_cache),
    Mutant("greedy_step", "takes the argmax over the batch", greedy_argmax_over_batch),
    Mutant("position_ids_from_mask", "ignores left padding (arange)", positions_ignore_padding),
    Mutant("position_ids_from_mask", "off by one (cumsum without - 1)", positions_off_by_one),
    Mutant("position_ids_from_mask", "keeps the first columns, not the last", positions_first_columns),
    Mutant("load_balancing_loss_func", "mean instead of sum", aux_mean_instead_of_sum),
    Mutant("load_balancing_loss_func", "counts the padding tokens", aux_counts_padding),
    Mutant("load_balancing_loss_func", "forgets the factor E", aux_without_num_experts),
    Mutant("build_4d_mask", "a window of W keys instead of W + 1", mask_window_of_w_keys),
    Mutant("build_4d_mask", "(1 - visible) * -inf: nan where visible", mask_minus_inf_times),
    Mutant("build_4d_mask", "ignores padding", mask_ignores_padding),
    Mutant("build_4d_mask", "forgets the past length when decoding", mask_forgets_the_past),
    Mutant("rms_norm", "eps outside the square root", rms_eps_outside_sqrt),
    Mutant("rms_norm", "weight applied before the cast back", rms_weight_before_cast, bf16=True),
    Mutant("rms_norm", "subtracts the mean (LayerNorm)", rms_subtracts_mean),
    Mutant("rms_norm", "mean of squares in bfloat16", rms_in_model_dtype, bf16=True),
    Mutant("rotate_half", "sign flipped: [x2, -x1]", rotate_half_sign_flipped),
    Mutant("rotate_half", "interleaved pairs instead of halves", rotate_half_interleaved),
    Mutant("apply_rotary_pos_emb", "ignores position_ids (cos[:T])", rotary_ignores_position_ids),
    Mutant("apply_rotary_pos_emb", "subtracts the sin term", rotary_minus_sin),
    Mutant("repeat_kv", "repeat (tiles) instead of repeat_interleave", repeat_kv_tiled),
    Mutant("attention_weights", "softmax in bfloat16", weights_softmax_in_bf16),
    Mutant("attention_weights", "no 1/sqrt(D) scale", weights_unscaled),
    Mutant("attention_weights", "divides by D instead of sqrt(D)", weights_scaled_by_d),
    Mutant("attention_weights", "ignores the mask", weights_without_mask),
    Mutant("route", "top-k without renormalising", route_not_renormalised),
    Mutant("route", "softmax over the tokens (dim 0)", route_softmax_over_tokens),
    Mutant("route", "weights from the raw logits, no softmax", route_without_softmax),
    Mutant("dispatch", "index_copy_ instead of index_add_", dispatch_index_copy),
    Mutant("dispatch", "out[token] = ... (assignment, repeats overwrite)", dispatch_assigns),
    Mutant("dispatch", "forgets the routing weight", dispatch_unweighted),
    Mutant("dispatch", "always the first slot's weight", dispatch_first_slot_weight),
]


@pytest.fixture(scope="module")
def models():
    """float32 and bfloat16 copies; RMSNorm weights drawn away from 1 (as in a trained model), so the
    place of the weight in RMSNorm shows."""
    model, _ = make_pair(seed=5, sliding_window=4)
    g = torch.Generator().manual_seed(5)
    for name, p in model.named_parameters():
        if "norm" in name:
            p.data = torch.rand(p.shape, generator=g) + 0.5
    half, _ = make_pair(seed=5, sliding_window=4)
    half.load_state_dict(model.state_dict())
    return model, half.to(torch.bfloat16)


def test_enough_mutants_for_every_piece():
    assert len(MUTANTS) >= 20
    assert {m.piece for m in MUTANTS} == set(PIECES)


@pytest.mark.parametrize("mutant", MUTANTS, ids=[f"{m.piece}: {m.mistake}" for m in MUTANTS])
def test_the_diff_names_the_wrong_piece(models, mutant):
    model = models[1] if mutant.bf16 else models[0]
    ids, mask = default_inputs(model)
    assert ids.shape[1] + 4 > 4 + 1, "the window must hide keys"
    diff = trace_diff(model, {mutant.piece: mutant.fn}, input_ids=ids, attention_mask=mask, max_new_tokens=4)
    assert diff.diverged, f"{mutant.mistake}: no difference found"
    assert diff.piece == mutant.piece, f"{mutant.mistake}: charged to {diff.piece}\n{diff}"
    assert diff.chapter == PIECES[mutant.piece].chapter
    assert mutant.piece in diff.sentence and PIECES[mutant.piece].chapter in diff.sentence


@pytest.mark.parametrize("half", [False, True], ids=["float32", "bfloat16"])
def test_the_reference_pieces_raise_no_false_alarm(models, half):
    model = models[int(half)]
    ids, mask = default_inputs(model)
    ref = {name: getattr(S, name) for name in PIECES}
    diff = trace_diff(model, ref, input_ids=ids, attention_mask=mask, max_new_tokens=4)
    assert not diff.diverged, str(diff)
    assert diff.n_compared > 50
    # the reference apply_rotary_pos_emb calls its own rotate_half, so the plugged one is never reached
    assert set(diff.agreed) == set(PIECES) - {"rotate_half"}
