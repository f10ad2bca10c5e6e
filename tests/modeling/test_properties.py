"""Property tests: our masks, cache and warpers against brute-force definitions.

The definitions are written here from scratch, loop by loop, independent of both
mixtral_edu and transformers.
"""
from __future__ import annotations

import functools
import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import mixtral_edu
from mixtral_edu.modeling import masks as M
from mixtral_edu.modeling.generation import TopKLogitsWarper, TopPLogitsWarper

from pairs import PAD, make_pair

# database=None: write no .hypothesis/ example database outside tests/.
SETTINGS = settings(max_examples=30, deadline=None, database=None)


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------

@st.composite
def mask_problems(draw):
    batch = draw(st.integers(1, 3))
    q_len = draw(st.integers(1, 6))
    past = draw(st.integers(0, 6))
    window = draw(st.one_of(st.none(), st.integers(1, 8)))
    kv = past + q_len
    kind = draw(st.sampled_from(["none", "random", "left"]))
    if kind == "none":
        pad = None
    elif kind == "random":
        pad = torch.tensor(draw(st.lists(st.lists(st.integers(0, 1), min_size=kv, max_size=kv),
                                         min_size=batch, max_size=batch)), dtype=torch.long)
    else:
        lefts = draw(st.lists(st.integers(0, kv), min_size=batch, max_size=batch))
        pad = torch.tensor([[0] * n + [1] * (kv - n) for n in lefts], dtype=torch.long)
    dtype = draw(st.sampled_from([torch.float32, torch.bfloat16, torch.float16]))
    return batch, q_len, past, window, pad, dtype


def brute_force_visible(batch, q_len, past, window, pad):
    """visible[b][i][j]: query i (absolute position past + i) may see key j."""
    out = []
    for b in range(batch):
        rows = []
        for i in range(q_len):
            p = past + i
            rows.append([j <= p and (window is None or j >= p - window) and (pad is None or int(pad[b, j]) == 1)
                         for j in range(past + q_len)])
        out.append(rows)
    return out


def check_additive(mask4d, visible, dtype):
    lowest = torch.finfo(dtype).min
    batch, q_len, kv = len(visible), len(visible[0]), len(visible[0][0])
    assert mask4d.shape == (batch, 1, q_len, kv)
    assert mask4d.dtype == dtype
    for b in range(batch):
        for i in range(q_len):
            for j in range(kv):
                assert float(mask4d[b, 0, i, j]) == (0.0 if visible[b][i][j] else lowest), (b, i, j)


@SETTINGS
@given(mask_problems())
def test_eager_mask_matches_definition(problem):
    batch, q_len, past, window, pad, dtype = problem
    embeds = torch.zeros(batch, q_len, 2, dtype=dtype)
    mask = M.prepare_4d_causal_attention_mask(pad, (batch, q_len), embeds, past, sliding_window=window)
    if mask is None:
        # allowed only when the mask would hide nothing: one query, no padding mask, no window
        assert pad is None and q_len == 1 and window is None
        return
    check_additive(mask, brute_force_visible(batch, q_len, past, window, pad), dtype)


@SETTINGS
@given(mask_problems())
def test_sdpa_mask_matches_definition(problem):
    batch, q_len, past, window, pad, dtype = problem
    embeds = torch.zeros(batch, q_len, 2, dtype=dtype)
    mask = M.prepare_4d_causal_attention_mask_for_sdpa(pad, (batch, q_len), embeds, past, sliding_window=window)
    visible = brute_force_visible(batch, q_len, past, window, pad)
    if mask is None:
        # SDPA then runs with is_causal = (q_len > 1) and no mask: that must be what the definition says
        for b in range(batch):
            for i in range(q_len):
                for j in range(past + q_len):
                    sdpa_sees = (j <= i) if q_len > 1 else True
                    assert visible[b][i][j] == sdpa_sees, (b, i, j)
        return
    check_additive(mask, visible, dtype)


@SETTINGS
@given(mask_problems())
def test_mask_reasons_consistent_with_mask(problem):
    batch, q_len, past, window, pad, dtype = problem
    reasons = M.mask_reasons(pad, batch, q_len, past, sliding_window=window)
    assert reasons.shape == (batch, 1, q_len, past + q_len) and reasons.dtype == torch.int8
    embeds = torch.zeros(batch, q_len, 2, dtype=dtype)
    forced = pad if pad is not None else torch.ones(batch, past + q_len, dtype=torch.long)
    additive = M.prepare_4d_causal_attention_mask(forced, (batch, q_len), embeds, past, sliding_window=window)
    assert torch.equal(reasons == M.VISIBLE, additive == 0)
    for b in range(batch):
        for i in range(q_len):
            p = past + i
            for j in range(past + q_len):
                if pad is not None and int(pad[b, j]) == 0:
                    want = M.PADDING                  # padding wins over the other reasons
                elif j > p:
                    want = M.FUTURE
                elif window is not None and j < p - window:
                    want = M.WINDOW
                else:
                    want = M.VISIBLE
                assert int(reasons[b, 0, i, j]) == want, (b, i, j)
    assert set(M.REASONS) == {M.VISIBLE, M.FUTURE, M.WINDOW, M.PADDING}


# --------------------------------------------------------------------------------------------
# Cached decoding equals the uncached forward
# --------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _model(impl, window):
    ours, _ = make_pair(attn_implementation=impl, sliding_window=window, seed=11)
    return ours


@st.composite
def decode_problems(draw):
    total = draw(st.integers(3, 14))
    # Cut points split the sequence into chunks fed one after another through the cache.
    # The first chunk has >= 2 tokens: generation gives pad tokens position id 1, which a
    # 1-token first call cannot index (transformers fails there too, with an IndexError).
    cuts = sorted(draw(st.sets(st.integers(2, total - 1), max_size=4)))
    pads = draw(st.lists(st.integers(0, total - 1), min_size=2, max_size=2))
    impl = draw(st.sampled_from(["eager", "sdpa"]))
    window = draw(st.sampled_from([None, 2, 5]))
    cache_form = draw(st.sampled_from(["legacy", "dynamic"]))
    seed = draw(st.integers(0, 2**16))
    return total, cuts, pads, impl, window, cache_form, seed


@SETTINGS
@given(decode_problems())
def test_cached_decoding_equals_uncached_forward(problem):
    total, cuts, pads, impl, window, cache_form, seed = problem
    model = _model(impl, window)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 97, (2, total), generator=g)
    mask = torch.ones(2, total, dtype=torch.long)
    for b, n in enumerate(pads):
        ids[b, :n] = PAD
        mask[b, :n] = 0
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        full = model(ids, attention_mask=mask, position_ids=pos).logits
        past = mixtral_edu.DynamicCache() if cache_form == "dynamic" else None
        pieces = []
        for start, stop in zip([0] + cuts, cuts + [total]):
            out = model(ids[:, start:stop], attention_mask=mask[:, :stop], position_ids=pos[:, start:stop],
                        past_key_values=past, use_cache=True)
            past = out.past_key_values
            pieces.append(out.logits)
    chunked = torch.cat(pieces, dim=1)
    real = mask.bool()  # a pad query sees no key; its output is meaningless and depends on the key count
    torch.testing.assert_close(chunked[real], full[real], atol=1e-5, rtol=0)
    seq_len = past.get_seq_length() if cache_form == "dynamic" else past[0][0].shape[2]
    assert seq_len == total


# --------------------------------------------------------------------------------------------
# Top-k / top-p warpers against brute force
# --------------------------------------------------------------------------------------------

score_rows = st.lists(st.one_of(st.integers(-5, 5).map(float),          # small integers: many ties
                                st.floats(-20, 20, allow_nan=False, width=32)),
                      min_size=1, max_size=40)


@SETTINGS
@given(st.lists(score_rows, min_size=1, max_size=3).filter(lambda rows: len({len(r) for r in rows}) == 1),
       st.integers(1, 50))
def test_top_k_keeps_exactly_the_k_best_and_ties(rows, k):
    scores = torch.tensor(rows, dtype=torch.float32)
    out = TopKLogitsWarper(k)(torch.zeros(len(rows), 1, dtype=torch.long), scores)
    for b, row in enumerate(rows):
        for v, s in enumerate(row):
            better = sum(1 for u in row if u > s)
            keep = better < k                       # v is among the k best, ties with the k-th included
            assert (float(out[b, v]) == s) if keep else (out[b, v] == -math.inf), (b, v)


@SETTINGS
@given(st.lists(st.floats(-10, 10, allow_nan=False, width=32), min_size=1, max_size=30, unique=True),
       st.floats(0.01, 1.0), st.integers(1, 3), st.floats(0.25, 3.0))
def test_top_p_keeps_the_smallest_nucleus(row, top_p, min_keep, scale):
    scores = torch.tensor([row], dtype=torch.float32) * scale
    values = scores[0].tolist()
    assume(len(set(values)) == len(values))      # with ties the sort order among them is arbitrary
    # brute force, in float64: token v is dropped when the total probability of v and of every
    # token worse than v is at most 1 - top_p (so the kept, better tokens already reach top_p),
    # except that the min_keep best tokens are always kept.
    top = max(values)
    weights = [math.exp(x - top) for x in values]
    z = sum(weights)
    probs = [w / z for w in weights]
    rank_from_best = {v: sum(1 for u in values if u > values[v]) for v in range(len(values))}
    mass_at_or_below = [sum(probs[u] for u in range(len(values)) if values[u] <= values[v]) for v in range(len(values))]
    # stay away from the knife edge where float32 cumsum and float64 sums may round differently
    assume(all(abs(m - (1 - top_p)) > 1e-4 for m in mass_at_or_below))
    out = TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep)(torch.zeros(1, 1, dtype=torch.long), scores)
    kept = [v for v in range(len(values)) if out[0, v] != -math.inf]
    want = [v for v in range(len(values))
            if rank_from_best[v] < min_keep or mass_at_or_below[v] > 1 - top_p]
    assert kept == want
    assert all(float(out[0, v]) == values[v] for v in kept)
    # the kept tokens carry at least top_p of the probability
    assert sum(probs[v] for v in kept) >= top_p - 1e-4
