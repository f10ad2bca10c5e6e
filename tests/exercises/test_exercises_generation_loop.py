"""mixtral_edu.exercises.generation_loop: a correct answer passes; typical mistakes fail with a message naming them."""
import torch

import mixtral_edu
from mixtral_edu.exercises import generation_loop as ex


def not_written(*args):
    raise NotImplementedError("your code here")


# -- the references are what generate really does -------------------------------------------------------

def test_reference_steps_reproduce_generate():
    """Greedy steps + bookkeeping, repeated, give generate's output token for token (eos included)."""
    model = ex.toy_model()
    ids, mask = ex._prompt_batch(model)
    want = mixtral_edu.generate(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None)
    seq, m, past = ids, mask, None
    unfinished = torch.ones(ids.shape[0], dtype=torch.long)
    for _ in range(6):
        tokens, past = ex.reference_greedy_step(model, seq, m, past)
        seq, m, unfinished = ex.reference_append_step(seq, m, tokens, unfinished, eos_token_id=-1,
                                                      pad_token_id=model.config.pad_token_id)
    assert torch.equal(seq, want)
    assert m.shape == want.shape and bool((m[:, ids.shape[1]:] == 1).all())

    # with an eos that one row emits: finished rows are padded exactly as generate pads them
    new = want[:, ids.shape[1]:]
    eos = int(new[0, 1])
    want_eos = mixtral_edu.generate(model, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=eos)
    seq, m, past = ids, mask, None
    unfinished = torch.ones(ids.shape[0], dtype=torch.long)
    while seq.shape[1] < ids.shape[1] + 6 and unfinished.max() > 0:
        tokens, past = ex.reference_greedy_step(model, seq, m, past)
        seq, m, unfinished = ex.reference_append_step(seq, m, tokens, unfinished, eos, model.config.pad_token_id)
    assert torch.equal(seq, want_eos)


# -- greedy_step -------------------------------------------------------------------------------------------

def greedy_ok(model, input_ids, attention_mask, past_key_values):
    inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                 attention_mask=attention_mask, use_cache=True)
    out = model(**inputs)
    return out.logits[:, -1, :].argmax(dim=-1), out.past_key_values


def greedy_by_hand(model, input_ids, attention_mask, past_key_values):
    """Correct without prepare_inputs_for_generation: slice, positions from the mask, forward."""
    P = 0 if past_key_values is None else past_key_values[0][0].shape[2]
    pos = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)[:, P:]
    out = model(input_ids[:, P:], attention_mask=attention_mask, position_ids=pos,
                past_key_values=past_key_values, use_cache=True)
    return out.logits[:, -1].argmax(-1), out.past_key_values


def test_greedy_step_correct_answers_pass():
    assert ex.check_greedy_step(greedy_ok)
    assert ex.check_greedy_step(greedy_by_hand)


def test_greedy_step_with_the_tiny_model():
    from mixtral_edu.tiny.pretrained import load_tiny
    model, _ = load_tiny()
    assert ex.check_greedy_step(greedy_ok, model)


def test_greedy_step_not_yet():
    r = ex.check_greedy_step(not_written)
    assert not r and "not yet" in r.message and "greedy_step" in r.message


def test_greedy_step_right_tokens_wrong_integer_dtype():
    def wrong(model, input_ids, attention_mask, past_key_values):
        tokens, cache = greedy_ok(model, input_ids, attention_mask, past_key_values)
        return tokens.int(), cache
    r = ex.check_greedy_step(wrong)
    assert not r and "next_tokens: dtype torch.int32, expected torch.int64" in r.message, r.message


def test_greedy_step_first_position():
    def wrong(model, input_ids, attention_mask, past_key_values):
        tokens, cache = greedy_ok(model, input_ids, attention_mask, past_key_values)
        inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                     attention_mask=attention_mask, use_cache=True)
        return model(**inputs).logits[:, 0].argmax(-1), cache
    r = ex.check_greedy_step(wrong)
    assert not r and "prefill" in r.message and "logits[:, -1, :]" in r.message


def test_greedy_step_feeds_the_whole_sequence_with_the_cache():
    def wrong(model, input_ids, attention_mask, past_key_values):
        pos = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
        out = model(input_ids, attention_mask=attention_mask, position_ids=pos,
                    past_key_values=past_key_values, use_cache=True)
        return out.logits[:, -1].argmax(-1), out.past_key_values
    r = ex.check_greedy_step(wrong)
    assert not r and "decode step 1" in r.message and "only the tokens it does not hold" in r.message


def test_greedy_step_positions_not_from_the_mask():
    """Same tokens in fp32 (RoPE sees only distances) but the cached keys are rotated differently."""
    def wrong(model, input_ids, attention_mask, past_key_values):
        P = 0 if past_key_values is None else past_key_values[0][0].shape[2]
        out = model(input_ids[:, P:], attention_mask=attention_mask, past_key_values=past_key_values, use_cache=True)
        return out.logits[:, -1].argmax(-1), out.past_key_values
    r = ex.check_greedy_step(wrong)
    assert not r and "prefill" in r.message and "position_ids" in r.message


def test_greedy_step_returns_the_old_cache():
    def wrong(model, input_ids, attention_mask, past_key_values):
        tokens, cache = greedy_ok(model, input_ids, attention_mask, past_key_values)
        return tokens, past_key_values if past_key_values is not None else cache
    r = ex.check_greedy_step(wrong)
    assert not r and "did not grow" in r.message


def test_greedy_step_without_the_mask():
    def wrong(model, input_ids, attention_mask, past_key_values):
        out = model(input_ids, use_cache=True)
        return out.logits[:, -1].argmax(-1), out.past_key_values
    r = ex.check_greedy_step(wrong)
    assert not r and "prefill" in r.message and "attention_mask" in r.message


def test_greedy_step_keeps_a_dimension():
    def wrong(model, input_ids, attention_mask, past_key_values):
        tokens, cache = greedy_ok(model, input_ids, attention_mask, past_key_values)
        return tokens[:, None], cache
    r = ex.check_greedy_step(wrong)
    assert not r and "shape (3, 1)" in r.message and "(B,)" in r.message


def test_greedy_step_crashes_are_reported():
    def wrong(model, input_ids, attention_mask, past_key_values):
        return model(input_ids[0])  # a 1D tensor
    r = ex.check_greedy_step(wrong)
    assert not r and "raised" in r.message and "prefill" in r.message


# -- append_step -----------------------------------------------------------------------------------------------

def append_ok(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
    next_tokens = torch.where(unfinished.bool(), next_tokens, torch.full_like(next_tokens, pad_token_id))
    input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=1)
    attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
    unfinished = unfinished.bool() & (next_tokens != eos_token_id)   # a bool flag is fine too
    return input_ids, attention_mask, unfinished


def test_append_step_correct_answers_pass():
    assert ex.check_append_step(ex.reference_append_step)
    assert ex.check_append_step(append_ok)


def test_append_step_not_yet():
    r = ex.check_append_step(not_written)
    assert not r and "not yet" in r.message and "append_step" in r.message


def test_append_step_forgets_to_pad_finished_rows():
    def wrong(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
        _, m, u = append_ok(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
        return torch.cat([input_ids, next_tokens[:, None]], 1), m, u
    r = ex.check_append_step(wrong)
    assert not r and "finished" in r.message and "pad_token_id" in r.message


def test_append_step_float_mask():
    def wrong(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
        i, _, u = append_ok(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
        return i, torch.cat([attention_mask, torch.ones(attention_mask.shape[0], 1)], 1), u
    r = ex.check_append_step(wrong)
    assert not r and "dtype" in r.message and "new_ones" in r.message


def test_append_step_zero_column():
    def wrong(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
        i, _, u = append_ok(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
        return i, torch.cat([attention_mask, torch.zeros_like(attention_mask[:, :1])], 1), u
    r = ex.check_append_step(wrong)
    assert not r and "all ones" in r.message


def test_append_step_new_row_instead_of_column():
    def wrong(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
        i, _, u = append_ok(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
        return i, torch.cat([attention_mask, torch.ones_like(attention_mask[:1])], 0), u
    r = ex.check_append_step(wrong)
    assert not r and "attention_mask has shape" in r.message and "dim=-1" in r.message


def test_append_step_unfinished_not_updated():
    def wrong(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
        i, m, _ = append_ok(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
        return i, m, unfinished
    r = ex.check_append_step(wrong)
    assert not r and "eos now" in r.message and "not updated" in r.message
