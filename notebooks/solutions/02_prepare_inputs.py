"""Reference solutions of notebook 02 (prepare_inputs_for_generation). Try the exercises first."""
import torch


def predicted_positions():
    """Real tokens counted from 0 in each row, pads set to 1; the decode step keeps the last 2 columns.

    prefill mask [[0, 0, 1, 1], [1, 1, 1, 1]]; decode mask [[0, 0, 1, 1, 1, 1, 1], [1] * 7, [0, 0, 0, 0, 1, 1, 1]].
    """
    return {"prefill": [[1, 1, 0, 1], [0, 1, 2, 3]],
            "decode": [[3, 4], [5, 6], [1, 2]]}


def unprocessed_ids(input_ids, past_length, attention_mask):
    """The given function lacked branch 1 and cut branch 3 down to one id."""
    if attention_mask is not None and attention_mask.shape[1] > input_ids.shape[1]:
        return input_ids[:, -(attention_mask.shape[1] - past_length):]    # branch 1: count from the end
    if past_length < input_ids.shape[1]:
        return input_ids[:, past_length:]                                 # branch 2: drop what the cache saw
    return input_ids                                                      # branch 3: all of it is new


def prepare_bounded(input_ids, attention_mask, seen_tokens, max_cache_length):
    """Slice by what the cache has seen; crop the mask when what it holds plus the new tokens would overflow;
    positions from the cropped mask, last columns only."""
    new_ids = input_ids[:, seen_tokens:]
    held = min(seen_tokens, max_cache_length)
    if held + new_ids.shape[1] > max_cache_length:
        attention_mask = attention_mask[:, -max_cache_length:]
    position_ids = attention_mask.long().cumsum(-1) - 1
    position_ids = position_ids.masked_fill(attention_mask == 0, 1)[:, -new_ids.shape[1]:]
    return {"input_ids": new_ids, "attention_mask": attention_mask, "position_ids": position_ids}
