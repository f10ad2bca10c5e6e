"""Exercise checks of notebook 04: right answers pass, typical mistakes fail with a message naming them."""
import torch

import mixtral_edu
from mixtral_edu.exercises import model_forward as ex


def todo(*args, **kwargs):
    raise NotImplementedError("your code here")


def good_mask(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    s = attention_mask.shape[1]
    q = torch.arange(q_len)[:, None] + past_len
    k = torch.arange(s)[None, :]
    visible = k <= q
    if sliding_window is not None:
        visible = visible & (k >= q - sliding_window)
    visible = visible[None, None] & (attention_mask[:, None, None, :] == 1)
    return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)


def test_mask_reference_is_transformers():
    from transformers.modeling_attn_mask_utils import _prepare_4d_causal_attention_mask as hf
    for _, args, kwargs in ex._mask_cases():
        mask, t = args[0], args[1]
        p = args[2] if len(args) > 2 else 0
        w = args[3] if len(args) > 3 else None
        dtype = kwargs.get("dtype", torch.float32)
        embeds = torch.empty(mask.shape[0], t, 1, dtype=dtype)
        assert torch.equal(ex.build_4d_mask(*args, **kwargs), hf(mask, (mask.shape[0], t), embeds, p, sliding_window=w))


def test_mask_passes_and_not_yet():
    r = ex.check_build_4d_mask(good_mask)
    assert r, r.message
    r = ex.check_build_4d_mask(todo)
    assert not r and "not yet" in r.message


def test_mask_mistakes():
    def inf(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
        m = good_mask(attention_mask, q_len, past_len, sliding_window, dtype)
        return m.masked_fill(m != 0, float("-inf"))

    def no_head_axis(*a, **k):
        return good_mask(*a, **k)[:, 0]

    def window_w(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
        w = None if sliding_window is None else sliding_window - 1
        return good_mask(attention_mask, q_len, past_len, w, dtype)

    def no_past(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
        s = attention_mask.shape[1]
        q = torch.arange(q_len)[:, None]
        k = torch.arange(s)[None, :]
        visible = (k <= q)[None, None] & (attention_mask[:, None, None, :] == 1)
        if sliding_window is not None:
            visible = visible & (k >= q - sliding_window)
        return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)

    def pad_rows(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
        s = attention_mask.shape[1]
        q = torch.arange(q_len)[:, None] + past_len
        k = torch.arange(s)[None, :]
        visible = k <= q
        if sliding_window is not None:
            visible = visible & (k >= q - sliding_window)
        visible = visible[None, None] & (attention_mask[:, None, -q_len:, None] == 1)
        return torch.zeros(visible.shape, dtype=dtype).masked_fill(~visible, torch.finfo(dtype).min)

    def float32_always(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
        return good_mask(attention_mask, q_len, past_len, sliding_window)

    def flipped(*a, **k):
        m = good_mask(*a, **k)
        dtype = m.dtype
        return torch.where(m == 0, torch.tensor(torch.finfo(dtype).min, dtype=dtype), torch.tensor(0, dtype=dtype))

    for fn, words in [(inf, "-inf"), (no_head_axis, "head axis"), (window_w, "W + 1"), (no_past, "past length"),
                      (pad_rows, "KEYS"), (float32_always, "dtype"), (flipped, "other way round")]:
        r = ex.check_build_4d_mask(fn)
        assert not r and words in r.message, (fn.__name__, r.message)


def test_positions_reference_is_what_the_model_used(pair):
    ours, _ = pair
    ids = torch.randint(3, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), mixtral_edu.trace(ours) as tr:
        out = ours(ids, use_cache=True)
        ours(ids[:, :2], past_key_values=out.past_key_values, use_cache=True)
    assert torch.equal(tr.steps[0].position_ids, ex.default_position_ids(0, 5))
    assert torch.equal(tr.steps[1].position_ids, ex.default_position_ids(5, 2))


def test_positions_pass_and_mistakes():
    assert ex.check_default_position_ids(lambda p, t: torch.arange(p, p + t)[None])
    assert "not yet" in ex.check_default_position_ids(todo).message
    for fn, words in [(lambda p, t: torch.arange(p, p + t), "(1, T)"),
                      (lambda p, t: torch.arange(t)[None], "start at past_length"),
                      (lambda p, t: torch.arange(p, p + t, dtype=torch.float32)[None], "torch.long")]:
        r = ex.check_default_position_ids(fn)
        assert not r and words in r.message, r.message


def test_positions_right_values_wrong_integer_dtype():
    # the shared comparison casts integer results before comparing values, so the dtype has its own check
    r = ex.check_default_position_ids(lambda p, t: torch.arange(p, p + t, dtype=torch.int32)[None])
    assert not r and repr(r).startswith("NOT YET"), repr(r)
    assert "dtype torch.int32, expected torch.int64" in r.message, r.message


def test_shared_compare_reports_a_wrong_integer_dtype():
    from mixtral_edu.exercises import compare
    cases = [("one case", (3,), {})]
    r = compare(cases, lambda n: torch.arange(n, dtype=torch.int32), lambda n: torch.arange(n),
                hint=lambda *_: "keep torch.long", what="arange")
    assert not r and "dtype torch.int32, expected torch.int64" in r.message, r.message
    assert compare(cases, lambda n: torch.arange(n), lambda n: torch.arange(n), hint=lambda *_: "", what="arange")
