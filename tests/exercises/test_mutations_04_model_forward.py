"""Plausible wrong answers to the exercises of notebook 04; each must get NOT YET with a hint naming it."""
import torch

from exercise_harness import Mutant, mutation_tests, solutions
from mixtral_edu.exercises import model_forward as ex

sol = solutions("04_model_forward")
RIGHT = sol.sdpa_predictions()


# -- 04.1 predict: the SDPA builder ------------------------------------------------------------------

def _predictions(**changes):
    def fn():
        return {**RIGHT, **changes}
    return fn


def all_true():
    return {name: True for name in RIGHT}


def all_false():
    return {name: False for name in RIGHT}


def as_strings():
    return {name: "mask" if v else "None" for name, v in RIGHT.items()}


def as_list():
    return list(RIGHT.values())


def one_blank():
    return {**RIGHT, "prefill T=S=6, window W=8": ...}


# -- 04.2 implement: the 4D mask ---------------------------------------------------------------------

def _visible(attention_mask, q_len, past_len, sliding_window, window_keeps=None, shift=True, pad_rows=False):
    s = attention_mask.shape[1]
    q = torch.arange(q_len)[:, None] + (past_len if shift else 0)
    k = torch.arange(s)[None, :]
    v = k <= q
    if sliding_window is not None:
        v = v & (k > q - (window_keeps if window_keeps is not None else sliding_window + 1))
    if pad_rows:
        return v[None, None] & (attention_mask[:, None, -q_len:, None] == 1)
    return v[None, None] & (attention_mask[:, None, None, :] == 1)


def _additive(visible, dtype):
    return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)


def times_minus_inf(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    allowed = _visible(attention_mask, q_len, past_len, sliding_window).to(dtype)
    return (1 - allowed) * float("-inf")      # 0 * -inf = NaN in every visible cell


def minus_inf(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    visible = _visible(attention_mask, q_len, past_len, sliding_window)
    return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, float("-inf"))


def window_of_w(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(attention_mask, q_len, past_len, sliding_window, window_keeps=sliding_window), dtype)


def no_past_shift(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(attention_mask, q_len, past_len, sliding_window, shift=False), dtype)


def pads_hide_rows(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(attention_mask, q_len, past_len, sliding_window, pad_rows=True), dtype)


def always_float32(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(attention_mask, q_len, past_len, sliding_window), torch.float32)


def flipped(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(~_visible(attention_mask, q_len, past_len, sliding_window), dtype)


def no_head_axis(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(attention_mask, q_len, past_len, sliding_window), dtype)[:, 0]


def ignores_padding(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(torch.ones_like(attention_mask), q_len, past_len, sliding_window), dtype)


def ignores_window(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    return _additive(_visible(attention_mask, q_len, past_len, None), dtype)


def minus_1e9(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    visible = _visible(attention_mask, q_len, past_len, sliding_window)
    return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, -1e9)


# -- 04.3 find the bug: the output tuple --------------------------------------------------------------

NAMES = ["last_hidden_state", "past_key_values", "hidden_states", "attentions", "router_logits"]


def given_broken(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    return {name: (outputs[i] if i < len(outputs) else None) for i, name in enumerate(NAMES)}


def cache_always_second(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    flags = [True, True, output_hidden_states, output_attentions, output_router_logits]
    it = iter(outputs)
    return {n: (next(it, None) if f else None) for n, f in zip(NAMES, flags)}


def hidden_after_attentions(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    order = ["last_hidden_state", "past_key_values", "attentions", "hidden_states", "router_logits"]
    flags = dict(zip(NAMES, [True, use_cache, output_hidden_states, output_attentions, output_router_logits]))
    it = iter(outputs)
    return {n: (next(it) if flags[n] else None) for n in order}


def router_from_the_end_rest_fixed(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    named = given_broken(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits)
    named["router_logits"] = outputs[-1] if output_router_logits else None
    return named


def off_entries_kept(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    it = iter(outputs)
    return {n: next(it, None) for n in NAMES}


def returns_the_tuple(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    return outputs


def present_only(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    flags = [True, use_cache, output_hidden_states, output_attentions, output_router_logits]
    it = iter(outputs)
    return {n: next(it) for n, f in zip(NAMES, flags) if f}


MUTANTS = [
    Mutant("04.1", "mask everywhere", all_true, mentions=["is_causal"]),
    Mutant("04.1", "None everywhere", all_false, mentions=["padding"]),
    Mutant("04.1", "a window that hides nothing skips the mask",
           _predictions(**{"prefill T=S=6, window W=6 (hides nothing)": False,
                           "prefill T=S=6, window W=5 (hides nothing)": False}), mentions=["below the window"]),
    Mutant("04.1", "a chunk after a cache uses is_causal", _predictions(**{"chunk T=3 after P=4, no padding": False}),
           mentions=["T > 1"]),
    Mutant("04.1", "padding in a decode step skips the mask",
           _predictions(**{"decode T=1 after P=6, left padding": False}), mentions=["pad"]),
    Mutant("04.1", "no 2D mask means a mask is built", _predictions(**{"prefill T=S=6, no 2D mask at all": True}),
           mentions=["skips"]),
    Mutant("04.1", "strings, not booleans", as_strings, mentions=["True or False"]),
    Mutant("04.1", "a list, not a dict", as_list, mentions=["dict"]),
    Mutant("04.1", "one prediction left blank", one_blank, mentions=["still `...`"]),
    Mutant("04.2", "(1 - allowed) * -inf", times_minus_inf, mentions=["0 * -inf is NaN"]),
    Mutant("04.2", "-inf for hidden cells", minus_inf, mentions=["not -inf"]),
    Mutant("04.2", "a window of W keys", window_of_w, mentions=["W + 1"]),
    Mutant("04.2", "the triangle ignores the cache", no_past_shift, mentions=["past length"]),
    Mutant("04.2", "padding hides query rows", pads_hide_rows, mentions=["KEYS"]),
    Mutant("04.2", "always float32", always_float32, mentions=["dtype"]),
    Mutant("04.2", "0 and min swapped", flipped, mentions=["other way round"]),
    Mutant("04.2", "no head axis", no_head_axis, mentions=["head axis"]),
    Mutant("04.2", "padding ignored", ignores_padding, mentions=["pad tokens"]),
    Mutant("04.2", "window ignored", ignores_window, mentions=["sliding window"]),
    Mutant("04.2", "-1e9 instead of finfo.min", minus_1e9, mentions=["finfo"]),
    Mutant("04.3", "the given function (fixed positions)", given_broken, mentions=["shifts"]),
    Mutant("04.3", "cache always at index 1", cache_always_second, mentions=["use_cache"]),
    Mutant("04.3", "attentions before hidden states", hidden_after_attentions, mentions=["order"]),
    Mutant("04.3", "router logits from the end, the rest fixed", router_from_the_end_rest_fixed,
           mentions=["shifts"]),
    Mutant("04.3", "entries that are off still named", off_entries_kept, mentions=["None"]),
    Mutant("04.3", "returns the tuple itself", returns_the_tuple, mentions=["dict"]),
    Mutant("04.3", "drops the names that are off", present_only, mentions=["five names"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)
