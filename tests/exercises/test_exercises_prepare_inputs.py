"""mixtral_edu.exercises.prepare_inputs: a correct answer passes; typical mistakes fail with a message naming them."""
import torch
import transformers

from mixtral_edu.exercises import prepare_inputs as ex


def not_written(*args):
    raise NotImplementedError("your code here")


# -- the references are transformers' answers too ----------------------------------------------------------

def test_references_equal_transformers():
    hf = transformers.MixtralForCausalLM.prepare_inputs_for_generation  # never reads `self` either
    for _, mask, T in ex._position_cases():
        S = mask.shape[1]
        past = None if T == S else ex.legacy_cache_of_length(mask.shape[0], S - T)
        want = hf(None, torch.zeros(mask.shape[0], T, dtype=torch.long), past_key_values=past,
                  attention_mask=mask)["position_ids"]
        assert torch.equal(ex.reference_position_ids(mask, T), want)
    for _, ids, P, mask in ex._unprocessed_cases():
        want = hf(None, ids, past_key_values=ex.legacy_cache_of_length(ids.shape[0], P),
                  attention_mask=mask)["input_ids"]
        assert torch.equal(ex.reference_unprocessed_ids(ids, P, mask), want)


# -- position_ids_from_mask ----------------------------------------------------------------------------

def positions_ok(attention_mask, num_new):
    pos = attention_mask.long().cumsum(-1) - 1
    pos = pos.masked_fill(attention_mask == 0, 1)
    return pos[:, -num_new:]


def test_position_ids_correct_answer_passes():
    assert ex.check_position_ids(positions_ok)
    assert ex.check_position_ids(ex.reference_position_ids)


def test_position_ids_not_yet():
    r = ex.check_position_ids(not_written)
    assert not r and "not yet" in r.message and "position_ids_from_mask" in r.message


def test_position_ids_arange_ignores_padding():
    r = ex.check_position_ids(lambda m, T: torch.arange(m.shape[1]).expand_as(m)[:, -T:])
    assert not r and "left-padded" in r.message and "ignore the padding" in r.message


def test_position_ids_off_by_one():
    r = ex.check_position_ids(lambda m, T: m.long().cumsum(-1).masked_fill(m == 0, 1)[:, -T:])
    assert not r and "off by one" in r.message


def test_position_ids_pads_filled_with_zero():
    r = ex.check_position_ids(lambda m, T: (m.long().cumsum(-1) - 1).clamp(min=0)[:, -T:])
    assert not r and "left-padded" in r.message and "fills pad positions with 1" in r.message


def test_position_ids_not_sliced():
    r = ex.check_position_ids(lambda m, T: positions_ok(m, m.shape[1]))
    assert not r and "decode" in r.message and "[:, -num_new:]" in r.message


def test_position_ids_first_columns():
    r = ex.check_position_ids(lambda m, T: positions_ok(m, m.shape[1])[:, :T])
    assert not r and "first num_new columns" in r.message


# -- unprocessed_ids ----------------------------------------------------------------------------------

def unprocessed_ok(input_ids, past_length, attention_mask):
    if attention_mask is not None and attention_mask.shape[1] > input_ids.shape[1]:
        return input_ids[:, -(attention_mask.shape[1] - past_length):]
    if past_length < input_ids.shape[1]:
        return input_ids[:, past_length:]
    return input_ids


def test_unprocessed_ids_correct_answer_passes():
    assert ex.check_unprocessed_ids(unprocessed_ok)


def test_unprocessed_ids_not_yet():
    r = ex.check_unprocessed_ids(not_written)
    assert not r and "not yet" in r.message and "unprocessed_ids" in r.message


def test_unprocessed_ids_nothing_dropped():
    r = ex.check_unprocessed_ids(lambda ids, P, m: ids)
    assert not r and "branch 2" in r.message and "drop them" in r.message


def test_unprocessed_ids_always_slice_at_past_length():
    r = ex.check_unprocessed_ids(lambda ids, P, m: ids[:, P:])
    assert not r and "branch 1" in r.message and "attention_mask.shape[1] - past_length" in r.message


def test_unprocessed_ids_always_last_token():
    r = ex.check_unprocessed_ids(lambda ids, P, m: ids[:, -1:])
    assert not r and "several new tokens" in r.message


def test_unprocessed_ids_forgets_branch_3():
    def wrong(input_ids, past_length, attention_mask):
        if attention_mask is not None and attention_mask.shape[1] > input_ids.shape[1]:
            return input_ids[:, -(attention_mask.shape[1] - past_length):]
        return input_ids[:, past_length:]
    r = ex.check_unprocessed_ids(wrong)
    assert not r and "branch 3" in r.message and "leaves nothing" in r.message


def test_position_ids_right_values_wrong_integer_dtype():
    r = ex.check_position_ids(lambda m, T: positions_ok(m, T).int())
    assert not r and repr(r).startswith("NOT YET"), repr(r)
    assert "dtype torch.int32, expected torch.int64" in r.message, r.message


def test_unprocessed_ids_right_values_wrong_integer_dtype():
    r = ex.check_unprocessed_ids(lambda ids, P, m: unprocessed_ok(ids, P, m).int())
    assert not r and "dtype torch.int32, expected torch.int64" in r.message, r.message
