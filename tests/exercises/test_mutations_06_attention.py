"""Plausible wrong answers to the exercises of notebook 06; each must get NOT YET with a hint naming it."""
import math

import torch

from exercise_harness import Mutant, mutation_tests, solutions
from mixtral_edu.exercises import attention as ex

RIGHT = solutions("06_attention").decode_step_shapes()


# -- 06.1 predict: the shapes of a decode step ---------------------------------------------------------

def _shapes(**changes):
    def fn():
        return {**RIGHT, **changes}
    return fn


def untouched():
    return {name: ... for name in RIGHT}


# -- 06.2 implement: rotary ------------------------------------------------------------------------------

def _angles(positions, d, base, step=2):
    inv = 1.0 / base ** (torch.arange(0, d, step)[: d // 2].float() / d)
    return positions.float()[:, None] * inv[None]


def _halves(x, ang, sign=1.0):
    a, b = x[:, : x.shape[-1] // 2], x[:, x.shape[-1] // 2:]
    return torch.cat((a * ang.cos() - sign * b * ang.sin(), b * ang.cos() + sign * a * ang.sin()), -1)


def interleaved(x, positions, base=10000.0):
    ang = _angles(positions, x.shape[-1], base)
    x1, x2 = x[:, 0::2], x[:, 1::2]
    return torch.stack((x1 * ang.cos() - x2 * ang.sin(), x1 * ang.sin() + x2 * ang.cos()), -1).reshape(x.shape)


def backwards(x, positions, base=10000.0):
    return _halves(x, _angles(positions, x.shape[-1], base), sign=-1.0)


def wrong_frequency(x, positions, base=10000.0):
    return _halves(x, _angles(positions, x.shape[-1], base, step=1))


def base_ignored(x, positions, base=10000.0):
    return _halves(x, _angles(positions, x.shape[-1], 10000.0))


def row_number_not_position(x, positions, base=10000.0):
    return _halves(x, _angles(torch.arange(len(positions)), x.shape[-1], base))


def scaled(x, positions, base=10000.0):
    return 2 * _halves(x, _angles(positions, x.shape[-1], base))


def int_tensor(x, positions, base=10000.0):
    return _halves(x, _angles(positions, x.shape[-1], base)).round().long()


# -- 06.3 implement: attention ------------------------------------------------------------------------------

def _scores(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def minus_inf_fill(q, k, v, mask=None):
    s = _scores(q, k)
    if mask is not None:
        s = s.masked_fill(mask < 0, float("-inf"))   # a pad query's whole row is -inf: NaN
    return s.softmax(-1) @ v


def no_scale(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1)
    return (s if mask is None else s + mask).softmax(-1) @ v


def scale_by_d(q, k, v, mask=None):
    s = q @ k.transpose(-2, -1) / q.shape[-1]
    return (s if mask is None else s + mask).softmax(-1) @ v


def mask_ignored(q, k, v, mask=None):
    return _scores(q, k).softmax(-1) @ v


def mask_multiplied(q, k, v, mask=None):
    s = _scores(q, k)
    return (s if mask is None else s * (mask == 0)).softmax(-1) @ v


def softmax_over_queries(q, k, v, mask=None):
    s = _scores(q, k)
    return (s if mask is None else s + mask).softmax(-2) @ v


def mask_after_softmax(q, k, v, mask=None):
    w = _scores(q, k).softmax(-1)
    return (w if mask is None else w + mask) @ v


def softmax_in_q_dtype(q, k, v, mask=None):                # no float32: in a bf16 model, a bf16 softmax
    s = _scores(q, k)
    return torch.softmax(s if mask is None else s + mask, dim=-1) @ v


def softmax_upcast_but_no_cast_back(q, k, v, mask=None):  # float32 weights times bf16 values: a dtype clash
    s = _scores(q, k)
    return torch.softmax((s if mask is None else s + mask).float(), dim=-1) @ v


def returns_weights(q, k, v, mask=None):
    s = _scores(q, k)
    return (s if mask is None else s + mask).softmax(-1)


# -- 06.4 implement a variant: the window cache ----------------------------------------------------------------

def _attend(q, k, v, window, mask_chunks=True, mask_window=True, causal=True, reach=None, every_call=False):
    """reach: how many keys back a query may look (W in 4.41.2); every_call: mask decode steps too."""
    g = q.shape[1] // k.shape[1]
    t, s = q.shape[2], k.shape[2]
    scores = _scores(q, k.repeat_interleave(g, 1))
    if mask_chunks and (t > 1 or every_call):
        qpos = torch.arange(t)[:, None] + s - t
        kpos = torch.arange(s)[None, :]
        hidden = kpos > qpos if causal else torch.zeros(t, s, dtype=torch.bool)
        if mask_window:
            hidden = hidden | (kpos < qpos - (window if reach is None else reach))
        scores = scores.masked_fill(hidden, torch.finfo(scores.dtype).min)
    return scores.softmax(-1) @ v.repeat_interleave(g, 1)


def _joined(cache, k, v):
    if cache is None:
        return k, v
    return torch.cat((cache[0], k), -2), torch.cat((cache[1], v), -2)


def keeps_w_minus_1(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window), (k[:, :, 1 - window:], v[:, :, 1 - window:])


def never_evicts(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window), (k, v)


def keeps_w_plus_1(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window), (k[:, :, -window - 1:], v[:, :, -window - 1:])


def evicts_before_attending(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    k, v = k[:, :, -window:], v[:, :, -window:]
    return _attend(q, k, v, window), (k, v)


def no_mask_for_chunks(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window, mask_chunks=False), (k[:, :, -window:], v[:, :, -window:])


def causal_only_in_chunks(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window, mask_window=False), (k[:, :, -window:], v[:, :, -window:])


def w_keys_visible(cache, q, k, v, window):              # transformers 5.x's rule: W keys in all, not W + 1
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window, reach=window - 1, every_call=True), (k[:, :, -window:], v[:, :, -window:])


def window_without_causal_mask(cache, q, k, v, window):   # the window's lower edge only
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window, causal=False), (k[:, :, -window:], v[:, :, -window:])


def cuts_before_attending_in_decode(cache, q, k, v, window):   # a prefill right, then W keys cut before the scores
    k, v = _joined(cache, k, v)
    if q.shape[2] == 1:
        k, v = k[:, :, -window:], v[:, :, -window:]
    return _attend(q, k, v, window), (k[:, :, -window:], v[:, :, -window:])


def window_twice_as_wide(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window, reach=2 * window), (k[:, :, -window:], v[:, :, -window:])


def no_repeat_kv(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _scores(q, k).softmax(-1) @ v, (k[:, :, -window:], v[:, :, -window:])


def keeps_oldest(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window), (k[:, :, :window], v[:, :, :window])


def output_only(cache, q, k, v, window):
    k, v = _joined(cache, k, v)
    return _attend(q, k, v, window)


MUTANTS = [
    Mutant("06.1", "the cache holds H heads", _shapes(k_cached=(2, 32, 10, 128)), mentions=["Hkv"]),
    Mutant("06.1", "the cache before the new token", _shapes(k_cached=(2, 8, 9, 128), k_repeated=(2, 32, 9, 128),
                                                            scores=(2, 32, 1, 9), mask=(2, 1, 1, 9)),
           mentions=["S = P + T"]),
    Mutant("06.1", "scores with keys as rows", _shapes(scores=(2, 32, 10, 1)), mentions=["rows are queries"]),
    Mutant("06.1", "a mask per head", _shapes(mask=(2, 32, 1, 10)), mentions=["head axis of size 1"]),
    Mutant("06.1", "heads not merged before o_proj", _shapes(z=(2, 32, 1, 128)), mentions=["side by side"]),
    Mutant("06.1", "queries on the kv heads", _shapes(q=(2, 8, 1, 128)), mentions=["H heads"]),
    Mutant("06.1", "a decode step with T = P", _shapes(q=(2, 32, 9, 128)), mentions=["T = 1"]),
    Mutant("06.1", "the untouched stub", untouched, mentions=["still `...`"]),
    Mutant("06.1", "lists of strings", _shapes(q="(2, 32, 1, 128)"), mentions=["tuple"]),
    Mutant("06.2", "interleaved pairs", interleaved, mentions=["rotate_half"]),
    Mutant("06.2", "the other way round", backwards, mentions=["other way"]),
    Mutant("06.2", "frequency base ** (-i / D)", wrong_frequency, mentions=["-2i / D"]),
    Mutant("06.2", "base ignored", base_ignored, mentions=["base argument"]),
    Mutant("06.2", "row number as the position", row_number_not_position, mentions=["positions[t]"]),
    Mutant("06.2", "lengths doubled", scaled, mentions=["length"]),
    Mutant("06.2", "an int tensor", int_tensor, mentions=["dtype"]),
    Mutant("06.3", "masked_fill(mask < 0, -inf)", minus_inf_fill, mentions=["NaN", "pad query"]),
    Mutant("06.3", "no 1/sqrt(D)", no_scale, mentions=["sqrt(D)"]),
    Mutant("06.3", "divided by D", scale_by_d, mentions=["not by D"]),
    Mutant("06.3", "mask ignored", mask_ignored, mentions=["add the mask"]),
    Mutant("06.3", "mask multiplied", mask_multiplied, mentions=["ADDITIVE"]),
    Mutant("06.3", "softmax over the queries", softmax_over_queries, mentions=["KEYS"]),
    Mutant("06.3", "mask after the softmax", mask_after_softmax, mentions=["BEFORE the softmax"]),
    Mutant("06.3", "returns the weights", returns_weights, mentions=["(B, H, T, D)"]),
    Mutant("06.3", "softmax in the model's dtype (bfloat16)", softmax_in_q_dtype, mentions=["bfloat16", "float32"]),
    Mutant("06.3", "float32 weights not cast back", softmax_upcast_but_no_cast_back, mentions=["dtypes"]),
    Mutant("06.4", "keeps W - 1 keys", keeps_w_minus_1, mentions=["W + 1"]),
    Mutant("06.4", "never evicts", never_evicts, mentions=["grows past W"]),
    Mutant("06.4", "keeps W + 1 keys", keeps_w_plus_1, mentions=["kept 4 keys", "last W"]),
    Mutant("06.4", "evicts before attending", evicts_before_attending, mentions=["attend first"]),
    Mutant("06.4", "no mask for a prefill or chunk", no_mask_for_chunks, mentions=["after it"]),
    Mutant("06.4", "causal but no window inside a chunk", causal_only_in_chunks, mentions=["inside a prefill"]),
    Mutant("06.4", "W keys visible, not W + 1", w_keys_visible, mentions=["one too few", "W + 1"]),
    Mutant("06.4", "the window without the causal mask", window_without_causal_mask, mentions=["after it"]),
    Mutant("06.4", "cuts to W before attending (decode steps)", cuts_before_attending_in_decode,
           mentions=["before the scores"]),
    Mutant("06.4", "a window twice as wide", window_twice_as_wide, mentions=["inside a prefill"]),
    Mutant("06.4", "no repeat_kv", no_repeat_kv, mentions=["Hkv", "H"]),
    Mutant("06.4", "keeps the oldest keys", keeps_oldest, mentions=["compare call by call"]),
    Mutant("06.4", "returns only the output", output_only, mentions=["pair"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)
