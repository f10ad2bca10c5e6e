"""Exercises of notebook 01 (the generation loop): one greedy step, and the bookkeeping after it.

    check_greedy_step(greedy_step, model=None)
        greedy_step(model, input_ids (B, S), attention_mask (B, S), past_key_values or None)
            -> (next_tokens (B,), past_key_values after this step's forward)
    check_append_step(append_step)
        append_step(input_ids (B, S), attention_mask (B, S), next_tokens (B,), unfinished (B,),
                    eos_token_id, pad_token_id)
            -> (input_ids (B, S + 1), attention_mask (B, S + 1), unfinished (B,))

Both compare the learner's function with what `mixtral_edu.modeling.generation.generate` does
in one turn of its loop, on several cases, and name the mistake when they recognise it.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional, Tuple

import torch

from . import ExerciseResult, call_learner, dtype_failure, fail
from ..modeling.cache import Cache
from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.config import MixtralConfig

PAD, EOS = 3, 2


@functools.lru_cache(maxsize=1)
def toy_model() -> MixtralForCausalLM:
    """A small random Mixtral (seeded) for the checks when no model is given.

    initializer_range 0.2 makes its logits decisive, so a wrong position or a
    wrong cache changes the argmax instead of hiding below rounding.
    """
    config = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=128, rope_theta=10000.0,
                           initializer_range=0.2, pad_token_id=PAD, bos_token_id=1, eos_token_id=EOS)
    g = torch.random.fork_rng()
    with g:
        torch.manual_seed(0)
        model = MixtralForCausalLM(config).eval()
    return model


# -- one greedy step ---------------------------------------------------------------------------

@torch.no_grad()
def reference_greedy_step(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          past_key_values: Any) -> Tuple[torch.Tensor, Any]:
    """One turn of generate's loop, greedy: prepare -> forward -> argmax at the last position."""
    inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                 attention_mask=attention_mask, use_cache=True)
    out = model(**inputs, return_dict=True)
    return out.logits[:, -1, :].argmax(-1), out.past_key_values


def _legacy(cache: Any) -> Any:
    return cache.to_legacy_cache() if isinstance(cache, Cache) else cache


def _prompt_batch(model) -> Tuple[torch.Tensor, torch.Tensor]:
    """Three left-padded rows (0, 2 and 4 pads), ids that are never special tokens."""
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(4, V, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    for b, pads in enumerate((0, 2, 4)):
        ids[b, :pads] = model.config.pad_token_id if model.config.pad_token_id is not None else 0
        mask[b, :pads] = 0
    return ids, mask


def _cache_lengths(cache: Any) -> Optional[List[int]]:
    try:
        return [k.shape[2] for k, _ in _legacy(cache)]
    except Exception:
        return None


def _greedy_hint(model, ids, mask, past, got_tokens, got_cache, want_cache) -> str:
    """Recognise the usual mistakes from what the learner returned."""
    P = 0 if past is None else past[0][0].shape[2]
    lengths, want = _cache_lengths(got_cache), _cache_lengths(want_cache)
    if lengths is not None and want is not None and lengths != want:
        if past is not None and lengths[0] == P:
            return ("the cache did not grow: return the past_key_values of the forward you just ran, not the "
                    "one you were given.")
        if past is not None and lengths[0] == P + ids.shape[1]:
            return ("the cache grew by the whole sequence: with a cache, feed only the tokens it does not hold yet "
                    "(model.prepare_inputs_for_generation cuts them out for you).")
        return f"the cache holds {lengths} tokens per layer, it should hold {want}."
    with torch.no_grad():
        inputs = model.prepare_inputs_for_generation(ids, past_key_values=past, attention_mask=mask, use_cache=True)
        logits = model(**inputs, return_dict=True).logits
        if torch.equal(got_tokens, logits[:, 0, :].argmax(-1)) and logits.shape[1] > 1:
            return "you read the logits of the first position; the next token comes from the last one: logits[:, -1, :]."
        plain = model(**{**inputs, "attention_mask": None, "position_ids": None}, return_dict=True).logits
        if torch.equal(got_tokens, plain[:, -1, :].argmax(-1)):
            return ("the left-padded rows are not handled as generate handles them: pass the attention_mask and the "
                    "position_ids built from it (the cached keys are rotated by position). "
                    "model.prepare_inputs_for_generation(input_ids, past_key_values=..., attention_mask=...) builds both.")
    return ("prepare the inputs with model.prepare_inputs_for_generation(input_ids, past_key_values=..., "
            "attention_mask=..., use_cache=True), run model(**inputs), take logits[:, -1, :].argmax(-1).")


def check_greedy_step(greedy_step: Callable, model: Optional[MixtralForCausalLM] = None) -> ExerciseResult:
    """greedy_step(model, input_ids, attention_mask, past_key_values) -> (next_tokens (B,), past_key_values).

    Cases: the prefill of a left-padded batch (no cache), then two decode steps that
    reuse the cache. The model is the one given, or a small random one.
    """
    if model is not None and not isinstance(model, MixtralForCausalLM):
        return ExerciseResult(False, f"not yet: `model` must be a mixtral_edu MixtralForCausalLM (or None for a small "
                                     f"random one), got {type(model).__name__}. Pass the model you loaded, e.g. "
                                     "check_greedy_step(greedy_step, model=model), or leave model out.")
    model = toy_model() if model is None else model
    ids, mask = _prompt_batch(model)
    past = None
    for label in ("prefill: 3 left-padded prompts, no cache yet",
                  "decode step 1: the cache from the prefill",
                  "decode step 2: the cache from step 1"):
        want_tokens, want_cache = reference_greedy_step(model, ids, mask, past)
        got, err = call_learner(greedy_step, (model, ids.clone(), mask.clone(), past), "greedy_step", label)
        if err is not None:
            if past is not None and "past + new" in err.message:  # the model's own complaint: too many tokens fed
                err.message += ("\nHint: with a cache, feed only the tokens it does not hold yet "
                                "(model.prepare_inputs_for_generation cuts them out for you).")
            return err
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return fail(label, f"returned {type(got).__name__}, expected a pair (next_tokens, past_key_values)",
                        "return next_tokens, outputs.past_key_values")
        got_tokens, got_cache = got
        if not isinstance(got_tokens, torch.Tensor):
            return fail(label, f"next_tokens is a {type(got_tokens).__name__}, expected a tensor",
                        "argmax over the vocabulary gives a LongTensor of shape (B,).")
        if got_tokens.shape != want_tokens.shape:
            hint = ("drop the extra dimension: logits[:, -1, :].argmax(-1) has shape (B,)"
                    if got_tokens.numel() == want_tokens.numel() else
                    "take the argmax over the vocabulary (the last dim) of the last position's logits (B, V).")
            return fail(label, f"next_tokens has shape {tuple(got_tokens.shape)}, expected {tuple(want_tokens.shape)}",
                        hint)
        tokens_ok = torch.equal(got_tokens.long(), want_tokens)
        cache_ok = _cache_lengths(got_cache) == _cache_lengths(want_cache)
        if cache_ok:
            cache_ok = all(torch.allclose(a, b, atol=1e-5) for (ka, va), (kb, vb) in
                           zip(_legacy(got_cache), _legacy(want_cache)) for a, b in ((ka, kb), (va, vb)))
        if not (tokens_ok and cache_ok):
            problem = (f"next_tokens {got_tokens.tolist()}, expected {want_tokens.tolist()}" if not tokens_ok else
                       "next_tokens are right but the returned cache differs from the forward's")
            return fail(label, problem, _greedy_hint(model, ids, mask, past, got_tokens, got_cache, want_cache))
        failure = dtype_failure(label, got_tokens, want_tokens,  # the tokens were compared as long
                                "token ids are torch.long, as argmax returns them: they are appended to input_ids.",
                                name="next_tokens")
        if failure is not None:
            return failure
        # the loop goes on with the reference's results, as generate would
        ids = torch.cat([ids, want_tokens[:, None]], dim=-1)
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
        past = _legacy(want_cache)
    return ExerciseResult(True, "greedy_step agrees with generate's loop on the prefill and two decode steps.")


# -- the bookkeeping after the token is chosen ---------------------------------------------------

def reference_append_step(input_ids: torch.Tensor, attention_mask: torch.Tensor, next_tokens: torch.Tensor,
                          unfinished: torch.Tensor, eos_token_id: int, pad_token_id: int):
    """What generate does after choosing next_tokens (see mixtral_edu.modeling.generation.generate)."""
    next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)       # finished rows get pad
    input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)              # (B, S + 1)
    attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
    unfinished = unfinished & (next_tokens != eos_token_id).long()                # eos just emitted: done
    return input_ids, attention_mask, unfinished


def _append_cases():
    ids = torch.tensor([[PAD, 1, 20, 21], [1, 30, 31, 32], [1, 40, 41, EOS]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    return [
        ("all rows still running", ids[:2], mask[:2], torch.tensor([25, 35]), torch.tensor([1, 1])),
        ("row 1 emits eos now", ids[:2], mask[:2], torch.tensor([25, EOS]), torch.tensor([1, 1])),
        ("row 2 finished earlier: whatever it 'chose' becomes pad", ids, mask,
         torch.tensor([26, 36, 46]), torch.tensor([1, 1, 0])),
        ("every row done after this step", ids, mask, torch.tensor([EOS, EOS, 9]), torch.tensor([1, 1, 0])),
    ]


def _append_hint(label, got, want, args) -> Optional[str]:
    ids, mask, tokens, unfinished = args
    g_ids, g_mask, g_unf = got
    w_ids, w_mask, w_unf = want
    for name, g, w in (("input_ids", g_ids, w_ids), ("attention_mask", g_mask, w_mask), ("unfinished", g_unf, w_unf)):
        if not isinstance(g, torch.Tensor):
            return f"{name} is a {type(g).__name__}, expected a tensor."
        if g.shape != w.shape:
            extra = (" Append along the sequence axis (dim=-1, a new column), not as a new row."
                     if name != "unfinished" and g.shape[0] == w.shape[0] + 1 else "")
            return f"{name} has shape {tuple(g.shape)}, expected {tuple(w.shape)}.{extra}"
        if name == "unfinished":
            continue  # long or bool both work as flags
        if g.dtype != w.dtype:
            return (f"{name} has dtype {g.dtype}, expected {w.dtype}: build new columns with "
                    f"{name}.new_ones(...) (or dtype={name}.dtype) so the dtype stays the same.")
    if not torch.equal(g_ids, w_ids):
        if torch.equal(g_ids[:, -1], tokens) and not torch.equal(tokens, w_ids[:, -1]):
            return ("a row that had finished still got its chosen token: finished rows receive pad_token_id "
                    "(next_tokens * unfinished + pad * (1 - unfinished)).")
        return f"input_ids: got {g_ids.tolist()}, expected {w_ids.tolist()}. Append the chosen tokens as a new last column."
    if not torch.equal(g_mask, w_mask):
        if torch.equal(g_mask[:, :-1], mask) and bool((g_mask[:, -1] == 0).any()):
            return ("the new mask column must be all ones, for every row: generate appends a 1 even for a finished "
                    "row (its pads come after its eos, so they change nothing that matters).")
        return f"attention_mask: got {g_mask.tolist()}, expected {w_mask.tolist()}. Append a column of ones."
    if not torch.equal(g_unf.long(), w_unf):
        if torch.equal(g_unf.long(), unfinished):
            return "unfinished was not updated: a row that just emitted eos_token_id is finished (set it to 0)."
        return (f"unfinished: got {g_unf.tolist()}, expected {w_unf.tolist()}. A row stays unfinished while it has "
                "not emitted eos; once finished it stays finished.")
    return None


def check_append_step(append_step: Callable) -> ExerciseResult:
    """append_step(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
    -> (input_ids (B, S + 1), attention_mask (B, S + 1), unfinished (B,))."""
    for label, ids, mask, tokens, unfinished in _append_cases():
        want = reference_append_step(ids, mask, tokens, unfinished, EOS, PAD)
        got, err = call_learner(append_step, (ids.clone(), mask.clone(), tokens.clone(), unfinished.clone(), EOS, PAD),
                                "append_step", label)
        if err is not None:
            return err
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            return fail(label, f"returned {type(got).__name__}, expected (input_ids, attention_mask, unfinished)",
                        "return the three updated tensors as a tuple.")
        hint = _append_hint(label, tuple(got), want, (ids, mask, tokens, unfinished))
        if hint is not None:
            return fail(label, "the result differs from generate's bookkeeping", hint)
    return ExerciseResult(True, "append_step agrees with generate's loop on all 4 cases "
                                "(running rows, eos now, finished rows padded, all done).")
