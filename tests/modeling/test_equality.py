"""Proof of equality: mixtral_edu against transformers 4.41.2, the oracle.

Every test builds the same computation twice, once with our code and once with
transformers', from identical weights (see conftest.make_pair), and compares.
fp32 logits must agree within 1e-5 absolute; things that are exact by construction
(masks, token ids, cache bookkeeping, position ids, element-wise kernels) must be equal.
"""
from __future__ import annotations

import itertools

import pytest
import torch
import transformers
from transformers.modeling_attn_mask_utils import (
    _prepare_4d_causal_attention_mask,
    _prepare_4d_causal_attention_mask_for_sdpa,
)
from transformers.models.mixtral import modeling_mixtral as hf_mixtral

import mixtral_edu
from mixtral_edu.modeling import attention as our_attention
from mixtral_edu.modeling import decoder as our_decoder
from mixtral_edu.modeling import masks as our_masks
from mixtral_edu.modeling import moe as our_moe
from mixtral_edu.modeling import rotary as our_rotary
from mixtral_edu.modeling.generation import TopKLogitsWarper, TopPLogitsWarper, TemperatureLogitsWarper

from pairs import (
    PAD,
    assert_legacy_equal,
    left_padded,
    make_pair,
    positions_from_mask,
    random_ids,
    to_hf_cache,
)

ATOL = 1e-5


def close(a, b, atol=ATOL):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


def assert_same_structure(ours, theirs, path="out"):
    """Recursively compare outputs: same container types and lengths, tensors within ATOL.

    Caches are compared by content (ours is a mixtral_edu.DynamicCache, theirs a
    transformers.DynamicCache); legacy caches must be plain tuples on both sides.
    """
    if isinstance(theirs, transformers.Cache):
        assert isinstance(ours, mixtral_edu.Cache), f"{path}: theirs is a Cache, ours is {type(ours)}"
        assert ours.get_seq_length() == theirs.get_seq_length(), path
        assert_legacy_equal(ours.to_legacy_cache(), theirs.to_legacy_cache())
    elif isinstance(theirs, torch.Tensor):
        assert isinstance(ours, torch.Tensor), f"{path}: expected a tensor, got {type(ours)}"
        assert ours.dtype == theirs.dtype, path
        close(ours, theirs)
    elif isinstance(theirs, (tuple, list)):
        assert type(ours) is type(theirs), f"{path}: {type(ours)} vs {type(theirs)}"
        assert len(ours) == len(theirs), f"{path}: length {len(ours)} vs {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same_structure(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, f"{path}: {ours!r} vs {theirs!r}"


# --------------------------------------------------------------------------------------------
# Full-model logits over a grid of configurations
# --------------------------------------------------------------------------------------------

CONFIGS = {
    "gqa2-top2": {},                                                    # 4 heads, 2 kv heads
    "mha-gqa1": dict(num_key_value_heads=4),                            # ratio 1
    "gqa4": dict(num_attention_heads=8, num_key_value_heads=2),          # ratio 4
    "mqa": dict(num_key_value_heads=1),                                 # multi-query
    "top1": dict(num_experts_per_tok=1),
    "window3": dict(sliding_window=3),                                  # shorter than the 12-token input
    "3layers-8experts": dict(num_hidden_layers=3, num_local_experts=8),
    "tied": dict(tie_word_embeddings=True),
}


@pytest.mark.parametrize("padding", ["none", "left"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal(name, impl, padding):
    ours, theirs = make_pair(attn_implementation=impl, **CONFIGS[name])
    if padding == "left":
        ids, mask = left_padded(3, 12, pads=[0, 3, 7], seed=1)
    else:
        ids, mask = random_ids(3, 12, seed=1), None
    with torch.no_grad():
        a = ours(ids, attention_mask=mask).logits
        b = theirs(ids, attention_mask=mask).logits
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (3, 12, 97)
    close(a, b)


def test_sliding_window_really_hides_keys():
    """The window3 case above is not vacuous: with a window the logits change (and still match)."""
    windowed, theirs = make_pair(sliding_window=3)
    full, _ = make_pair()
    ids = random_ids(2, 12, seed=2)
    with torch.no_grad():
        a, b, c = windowed(ids).logits, theirs(ids).logits, full(ids).logits
    close(a, b)
    close(a[:, :4], c[:, :4])                       # the first W+1 queries see everything either way
    assert (a[:, 4:] - c[:, 4:]).abs().max() > 1e-2  # later ones do not


def test_eager_and_sdpa_agree_and_fp32_is_exact_here():
    """Ours-eager equals ours-sdpa (within ATOL); ours equals transformers bit for bit on this input."""
    e, te = make_pair(attn_implementation="eager")
    s, _ = make_pair(attn_implementation="sdpa")
    ids, mask = left_padded(2, 9, pads=[0, 4], seed=3)
    with torch.no_grad():
        le, ls, lt = e(ids, attention_mask=mask).logits, s(ids, attention_mask=mask).logits, te(ids, attention_mask=mask).logits
    real = mask.bool()
    close(le[real], ls[real])
    assert torch.equal(le, lt)


# --------------------------------------------------------------------------------------------
# Prefill then step-by-step decode equals one full forward; cache types as transformers
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cache_form", ["legacy", "dynamic"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_decode_without_attention_mask(impl, cache_form):
    """No mask and no position ids: positions continue from the cache length on both sides."""
    ours, theirs = make_pair(attn_implementation=impl)
    ids = random_ids(2, 9, seed=23)
    with torch.no_grad():
        full = ours(ids).logits
        p_o, p_t = (None, None) if cache_form == "legacy" else (mixtral_edu.DynamicCache(), transformers.DynamicCache())
        for start, stop in [(0, 4), (4, 5), (5, 7), (7, 8), (8, 9)]:
            o = ours(ids[:, start:stop], past_key_values=p_o, use_cache=True)
            t = theirs(ids[:, start:stop], past_key_values=p_t, use_cache=True)
            close(o.logits, t.logits)
            close(o.logits, full[:, start:stop])
            p_o, p_t = o.past_key_values, t.past_key_values


@pytest.mark.parametrize("window", [None, 4])
@pytest.mark.parametrize("cache_form", ["legacy", "dynamic"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_prefill_then_decode_equals_full_forward(impl, cache_form, window):
    ours, theirs = make_pair(attn_implementation=impl, sliding_window=window)
    prompt_len, total = 6, 11
    ids, mask = left_padded(3, total, pads=[0, 2, 4], seed=4)
    pos = positions_from_mask(mask)
    with torch.no_grad():
        full = ours(ids, attention_mask=mask, position_ids=pos).logits
        close(full, theirs(ids, attention_mask=mask, position_ids=pos).logits)

        if cache_form == "legacy":
            p_ours, p_theirs = None, None
        else:
            p_ours, p_theirs = mixtral_edu.DynamicCache(), transformers.DynamicCache()
        given_ours, given_theirs = p_ours, p_theirs
        steps = [(0, prompt_len)] + [(t, t + 1) for t in range(prompt_len, total)]
        for start, stop in steps:
            kw = dict(attention_mask=mask[:, :stop], position_ids=pos[:, start:stop], use_cache=True)
            o = ours(ids[:, start:stop], past_key_values=p_ours, **kw)
            t = theirs(ids[:, start:stop], past_key_values=p_theirs, **kw)
            close(o.logits, t.logits)
            # Pad queries see no key at all; their (meaningless) output depends on how many
            # keys exist, so only real tokens are compared with the full forward.
            real = mask[:, start:stop].bool()
            close(o.logits[real], full[:, start:stop][real])
            if cache_form == "legacy":
                assert type(t.past_key_values) is tuple and type(o.past_key_values) is tuple
                assert_legacy_equal(o.past_key_values, t.past_key_values)
            else:
                # given a Cache, both hand back that very object, grown
                assert t.past_key_values is given_theirs and o.past_key_values is given_ours
                assert o.past_key_values.get_seq_length() == t.past_key_values.get_seq_length() == stop
                assert o.past_key_values.seen_tokens == t.past_key_values.seen_tokens == stop
                assert_legacy_equal(o.past_key_values.to_legacy_cache(), t.past_key_values.to_legacy_cache())
            p_ours, p_theirs = o.past_key_values, t.past_key_values


def test_past_key_values_type_follows_transformers(pair):
    ours, theirs = pair
    ids = random_ids(2, 5, seed=5)
    with torch.no_grad():
        # None in, use_cache=True -> legacy tuple (one (k, v) per layer, each (B, Hkv, T, D))
        o, t = ours(ids, use_cache=True), theirs(ids, use_cache=True)
        assert type(o.past_key_values) is tuple and type(t.past_key_values) is tuple
        assert len(o.past_key_values) == len(t.past_key_values) == 2
        assert all(type(layer) is tuple and len(layer) == 2 for layer in o.past_key_values)
        assert o.past_key_values[0][0].shape == t.past_key_values[0][0].shape == (2, 2, 5, 8)
        # use_cache=False -> None on both sides
        assert ours(ids, use_cache=False).past_key_values is None
        assert theirs(ids, use_cache=False).past_key_values is None
        # config.use_cache (True) is the default when use_cache is not passed
        assert type(ours(ids).past_key_values) is tuple and type(theirs(ids).past_key_values) is tuple
        # tuple in -> tuple out
        nxt = random_ids(2, 1, seed=6)
        o2 = ours(nxt, past_key_values=o.past_key_values, use_cache=True)
        t2 = theirs(nxt, past_key_values=t.past_key_values, use_cache=True)
        assert type(o2.past_key_values) is tuple and type(t2.past_key_values) is tuple
        assert o2.past_key_values[0][0].shape[2] == t2.past_key_values[0][0].shape[2] == 6
        close(o2.logits, t2.logits)
        # Cache in -> the same Cache out
        co = mixtral_edu.DynamicCache.from_legacy_cache(o.past_key_values)
        ct = transformers.DynamicCache.from_legacy_cache(t.past_key_values)
        o3 = ours(nxt, past_key_values=co, use_cache=True)
        t3 = theirs(nxt, past_key_values=ct, use_cache=True)
        assert isinstance(o3.past_key_values, mixtral_edu.Cache) and o3.past_key_values is co
        assert isinstance(t3.past_key_values, transformers.Cache) and t3.past_key_values is ct
        close(o3.logits, o2.logits)
        close(o3.logits, t3.logits)


def test_our_cache_and_legacy_tuple_give_the_same_logits(pair):
    ours, theirs = pair
    ids = random_ids(2, 7, seed=7)
    with torch.no_grad():
        pre = ours(ids[:, :4], use_cache=True)
        a = ours(ids[:, 4:], past_key_values=pre.past_key_values, use_cache=True).logits
        b = ours(ids[:, 4:], past_key_values=mixtral_edu.DynamicCache.from_legacy_cache(pre.past_key_values),
                 use_cache=True).logits
        c = theirs(ids[:, 4:], past_key_values=to_hf_cache(pre.past_key_values), use_cache=True).logits
    close(a, b)
    close(a, c)


# --------------------------------------------------------------------------------------------
# Auxiliary outputs: router logits, hidden states, attentions, losses
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_router_logits_hidden_states_attentions(impl):
    ours, theirs = make_pair(attn_implementation=impl, sliding_window=5)
    ids, mask = left_padded(2, 9, pads=[0, 3], seed=8)
    kw = dict(attention_mask=mask, output_router_logits=True, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        o, t = ours(ids, **kw), theirs(ids, **kw)
    assert len(o.router_logits) == len(t.router_logits) == 2
    assert o.router_logits[0].shape == (2 * 9, 4)
    assert len(o.hidden_states) == len(t.hidden_states) == 3       # embeddings + one per layer
    assert len(o.attentions) == len(t.attentions) == 2
    assert o.attentions[0].shape == (2, 4, 9, 9)
    assert_same_structure(o.router_logits, t.router_logits)
    assert_same_structure(o.hidden_states, t.hidden_states)
    assert_same_structure(o.attentions, t.attentions)
    # attention weights are probabilities over the keys
    close(o.attentions[1].sum(-1), torch.ones(2, 4, 9))


def test_sdpa_with_output_attentions_falls_back_to_eager():
    sdpa, theirs = make_pair(attn_implementation="sdpa")
    eager, _ = make_pair(attn_implementation="eager")
    ids, mask = left_padded(2, 8, pads=[0, 2], seed=9)
    with torch.no_grad():
        s = sdpa(ids, attention_mask=mask, output_attentions=True)
        e = eager(ids, attention_mask=mask, output_attentions=True)
        t = theirs(ids, attention_mask=mask, output_attentions=True)
        s_plain = sdpa(ids, attention_mask=mask)
    assert s.attentions is not None and all(a is not None for a in s.attentions)
    assert_same_structure(s.attentions, t.attentions)
    assert_same_structure(s.attentions, e.attentions)      # the very eager path, eager's 4D mask
    close(s.logits, t.logits)
    close(s.logits, e.logits)
    assert s_plain.attentions is None


@pytest.mark.parametrize("with_mask", [False, True])
def test_loss_and_aux_loss(with_mask):
    ours, theirs = make_pair()
    ids, mask = left_padded(3, 10, pads=[0, 2, 5], seed=10)
    labels = ids.clone()
    labels[mask == 0] = -100
    labels[0, 3] = -100
    labels[2, 8] = -100
    kw = dict(labels=labels, output_router_logits=True, attention_mask=mask if with_mask else None)
    with torch.no_grad():
        o, t = ours(ids, **kw), theirs(ids, **kw)
        o_no_router = ours(ids, labels=labels, attention_mask=kw["attention_mask"])
        t_no_router = theirs(ids, labels=labels, attention_mask=kw["attention_mask"])
    close(o.aux_loss, t.aux_loss)
    close(o.loss, t.loss)
    close(o_no_router.loss, t_no_router.loss)
    assert o_no_router.aux_loss is None and t_no_router.aux_loss is None
    # loss = cross-entropy + coef * aux, and the aux loss depends on the mask
    close(o.loss - o_no_router.loss, 0.001 * o.aux_loss)
    if with_mask:
        with torch.no_grad():
            unmasked = load_balancing_loss(o.router_logits, None)
        assert abs(float(unmasked) - float(o.aux_loss)) > 1e-4   # the padding really is left out


def load_balancing_loss(router_logits, mask):
    return our_moe.load_balancing_loss_func(router_logits, 4, 2, mask)


def test_model_output_indexing_matches(pair):
    ours, theirs = pair
    ids = random_ids(2, 6, seed=11)
    with torch.no_grad():
        o = ours(ids, labels=ids, output_router_logits=True, use_cache=False)
        t = theirs(ids, labels=ids, output_router_logits=True, use_cache=False)
    assert list(o.keys()) == list(t.keys())
    assert len(o) == len(t)
    close(o[0], t[0])                         # the loss comes first when labels are given
    close(o["logits"], t["logits"])
    assert_same_structure(o.to_tuple(), t.to_tuple())


FLAG_NAMES = ("labels", "use_cache", "output_hidden_states", "output_attentions", "output_router_logits")


@pytest.mark.parametrize("flags", [dict(zip(FLAG_NAMES, bits)) for bits in itertools.product([False, True], repeat=5)],
                         ids=lambda f: "-".join(k for k, v in f.items() if v) or "none")
def test_return_dict_false_tuple(pair, flags):
    ours, theirs = pair
    ids, mask = left_padded(2, 7, pads=[0, 2], seed=12)
    kw = {k: v for k, v in flags.items() if k != "labels"}
    if flags["labels"]:
        kw["labels"] = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        o = ours(ids, attention_mask=mask, return_dict=False, **kw)
        t = theirs(ids, attention_mask=mask, return_dict=False, **kw)
    assert type(o) is tuple and type(t) is tuple
    expected_len = 1 + sum(flags.values()) + flags["output_router_logits"]  # router logits add aux_loss too
    assert len(o) == len(t) == expected_len
    assert_same_structure(o, t)


def test_backbone_return_dict_false_tuple(pair):
    ours, theirs = pair
    ids = random_ids(2, 5, seed=13)
    kw = dict(use_cache=True, output_hidden_states=True, output_attentions=True, output_router_logits=True,
              return_dict=False)
    with torch.no_grad():
        o, t = ours.model(ids, **kw), theirs.model(ids, **kw)
    assert len(o) == len(t) == 5
    assert_same_structure(o, t)


# --------------------------------------------------------------------------------------------
# generate: greedy and seeded sampling, token for token
# --------------------------------------------------------------------------------------------

def _first_emission(row_new: torch.Tensor, tok: int) -> int:
    return int((row_new == tok).nonzero()[0])


def test_greedy_generate_matches_with_early_eos():
    ours, theirs = make_pair(seed=3)
    ids, mask = left_padded(3, 6, pads=[0, 2, 4], seed=14)
    prompt, new = ids.shape[1], 12
    kw = dict(attention_mask=mask, max_new_tokens=new, do_sample=False, pad_token_id=PAD)
    free_o = ours.generate(ids, eos_token_id=None, **kw)
    free_t = theirs.generate(ids, eos_token_id=None, **kw)
    assert torch.equal(free_o, free_t)
    assert free_o.shape == (3, prompt + new)
    assert torch.equal(free_o[:, :prompt], ids)

    # Pick an eos that one row emits mid-way (for the first time) while another row never
    # emits it: that row must stop early and be padded while generation goes on.
    gen = free_o[:, prompt:]
    choice = None
    for row, step in itertools.product(range(3), range(1, new - 3)):
        tok = int(gen[row, step])
        if tok == PAD or tok in gen[row, :step].tolist():
            continue
        others = [r for r in range(3) if r != row]
        if any(tok not in gen[r].tolist() for r in others):
            choice = (row, step, tok)
            break
    assert choice is not None, "no usable eos candidate; change the seed"
    row, step, eos = choice

    out_o = ours.generate(ids, eos_token_id=eos, **kw)
    out_t = theirs.generate(ids, eos_token_id=eos, **kw)
    assert torch.equal(out_o, out_t)
    assert out_o.shape[1] > prompt + step + 1                      # generation went on after the stop
    assert int(out_o[row, prompt + step]) == eos
    assert torch.equal(out_o[row, :prompt + step + 1], free_o[row, :prompt + step + 1])
    assert bool((out_o[row, prompt + step + 1:] == PAD).all())     # padded after eos


@pytest.mark.filterwarnings("ignore:Using the model-agnostic default `max_length`")
def test_generate_other_settings_match():
    ours, theirs = make_pair(seed=3)
    ids, mask = left_padded(3, 6, pads=[0, 2, 4], seed=14)
    settings = [
        dict(attention_mask=mask),                                   # max_length 20 by default, config eos/pad
        dict(),                                                      # mask inferred from the pad tokens
        dict(attention_mask=mask, max_length=9),
        dict(attention_mask=mask, max_new_tokens=10, eos_token_id=[5, 7, 9], pad_token_id=None),  # pad := eos[0]
        dict(attention_mask=mask, max_new_tokens=6, use_cache=False),
    ]
    for kw in settings:
        a, b = ours.generate(ids, **kw), theirs.generate(ids, **kw)
        assert torch.equal(a, b), kw
    kw = dict(attention_mask=mask, max_new_tokens=4, do_sample=True, top_k=7, temperature=0.8,
              return_dict_in_generate=True, output_scores=True, output_logits=True)
    torch.manual_seed(7)
    a = ours.generate(ids, **kw)
    torch.manual_seed(7)
    b = theirs.generate(ids, **kw)
    assert list(a.keys()) == list(b.keys()) == ["sequences", "scores", "logits", "past_key_values"]
    assert torch.equal(a.sequences, b.sequences)
    assert len(a.scores) == len(b.scores) == len(a.logits) == len(b.logits) == 4
    for x, y in zip(a.scores + a.logits, b.scores + b.logits):
        close(x, y)
    assert_same_structure(a.past_key_values, b.past_key_values)


def test_greedy_generate_with_dynamic_cache_path_and_sdpa():
    ours, theirs = make_pair(seed=5, attn_implementation="sdpa", sliding_window=4)
    ids, mask = left_padded(2, 5, pads=[0, 3], seed=15)
    kw = dict(attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    assert torch.equal(ours.generate(ids, **kw), theirs.generate(ids, **kw))


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 50, 1.0),     # transformers' defaults: only top-k 50 is active (it cuts 47 of 97 tokens)
    (0.7, 10, 1.0),
    (1.3, 0, 0.9),      # top_k=0 switches top-k off
    (0.9, 5, 0.8),
    (2.0, None, 0.5),
])
def test_seeded_sampling_generate_matches(temperature, top_k, top_p):
    ours, theirs = make_pair(seed=6)
    ids, mask = left_padded(3, 5, pads=[0, 1, 3], seed=16)
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=temperature,
              top_k=top_k, top_p=top_p, pad_token_id=PAD)
    # Both sides draw with torch.multinomial(softmax(warped scores), 1) once per step, from
    # probabilities that are equal, so the same seed gives the same tokens.
    torch.manual_seed(1234)
    a = ours.generate(ids, **kw)
    torch.manual_seed(1234)
    b = theirs.generate(ids, **kw)
    assert torch.equal(a, b)


def test_sampling_really_samples():
    """The seeded comparison above is not greedy in disguise: other seeds give other tokens."""
    ours, _ = make_pair(seed=6)
    ids, mask = left_padded(3, 5, pads=[0, 1, 3], seed=16)
    kw = dict(attention_mask=mask, max_new_tokens=10, do_sample=True, temperature=1.3, top_k=0, pad_token_id=PAD)
    outs = set()
    for seed in range(4):
        torch.manual_seed(seed)
        outs.add(tuple(ours.generate(ids, **kw).flatten().tolist()))
    assert len(outs) > 1


def test_warpers_equal_transformers():
    from transformers.generation import logits_process as hf_lp
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 97, generator=g) * 3
    scores[1, :10] = scores[1, 10]               # ties around the cut
    ids = torch.zeros(4, 1, dtype=torch.long)
    for k in (1, 5, 50, 200):
        assert torch.equal(TopKLogitsWarper(k)(ids, scores), hf_lp.TopKLogitsWarper(k)(ids, scores))
    for p, keep in itertools.product((0.1, 0.5, 0.9, 0.999), (1, 3)):
        assert torch.equal(TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores),
                           hf_lp.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores))
    for temp in (0.5, 1.7):
        assert torch.equal(TemperatureLogitsWarper(temp)(ids, scores), hf_lp.TemperatureLogitsWarper(temp)(ids, scores))


# --------------------------------------------------------------------------------------------
# prepare_inputs_for_generation, branch by branch
# --------------------------------------------------------------------------------------------

def _compare_model_inputs(o: dict, t: dict, cache_o, cache_t):
    assert set(o) == set(t), (sorted(o), sorted(t))
    for key in t:
        if key == "past_key_values":
            assert o[key] is cache_o and t[key] is cache_t        # passed through untouched
        elif isinstance(t[key], torch.Tensor):
            assert isinstance(o[key], torch.Tensor) and torch.equal(o[key], t[key]), key
        else:
            assert o[key] == t[key], key


def _legacy_cache(batch, length, layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple((torch.randn(batch, 2, length, 8, generator=g), torch.randn(batch, 2, length, 8, generator=g))
                 for _ in range(layers))


def _bounded(cls, limit):
    """A DynamicCache subclass with a maximum length, to reach the mask-cropping branch."""
    return type(f"Bounded{cls.__name__}", (cls,), {"get_max_length": lambda self: limit})


def _prepare_cases():
    ids, mask = left_padded(2, 9, pads=[0, 3], seed=17)
    embeds = torch.randn(2, 9, 32)
    legacy7 = _legacy_cache(2, 7)
    cases = {
        "no-cache": dict(input_ids=ids, attention_mask=mask),
        "no-cache-no-mask": dict(input_ids=ids),
        "legacy-cache": dict(input_ids=ids, attention_mask=mask, past_key_values=legacy7),
        "cache-object": dict(input_ids=ids, attention_mask=mask, past_key_values="dynamic7"),
        "mask-longer-than-ids": dict(input_ids=ids[:, -2:], attention_mask=mask, past_key_values="dynamic7"),
        "mask-longer-than-ids-legacy": dict(input_ids=ids[:, -1:], attention_mask=mask, past_key_values=_legacy_cache(2, 8)),
        "ids-already-new-only": dict(input_ids=ids[:, -1:], past_key_values="dynamic7"),
        "ids-already-new-only-legacy": dict(input_ids=ids[:, -2:], past_key_values=legacy7),
        "position-ids-given": dict(input_ids=ids, attention_mask=mask, past_key_values="dynamic7",
                                   position_ids=torch.arange(9).expand(2, 9)[:, -2:] + 5),
        "position-ids-given-no-cache": dict(input_ids=ids, attention_mask=mask,
                                            position_ids=torch.arange(9).expand(2, 9)),
        "inputs-embeds-first-step": dict(input_ids=ids[:, :0], attention_mask=mask, inputs_embeds=embeds),
        "inputs-embeds-later-step": dict(input_ids=ids[:, -1:], attention_mask=mask, inputs_embeds=embeds,
                                         past_key_values="dynamic8"),
        "use-cache-and-router-flags": dict(input_ids=ids, attention_mask=mask, use_cache=True,
                                           output_router_logits=True),
        "bounded-cache-crops-mask": dict(input_ids=ids, attention_mask=mask, past_key_values="bounded7"),
    }
    return cases


@pytest.mark.parametrize("case", list(_prepare_cases()))
def test_prepare_inputs_for_generation(pair, case):
    ours, theirs = pair
    args = _prepare_cases()[case]
    cache_o = cache_t = args.get("past_key_values")
    if isinstance(cache_o, str):
        length = int(cache_o[-1])
        legacy = _legacy_cache(2, length)
        if cache_o.startswith("bounded"):
            cache_o = _bounded(mixtral_edu.DynamicCache, 6).from_legacy_cache(legacy)
            cache_t = _bounded(transformers.DynamicCache, 6).from_legacy_cache(legacy)
            assert cache_o.get_max_length() == cache_t.get_max_length() == 6
        else:
            cache_o = mixtral_edu.DynamicCache.from_legacy_cache(legacy)
            cache_t = transformers.DynamicCache.from_legacy_cache(legacy)
    args_o = dict(args, past_key_values=cache_o)
    args_t = dict(args, past_key_values=cache_t)
    if "past_key_values" not in args:
        del args_o["past_key_values"], args_t["past_key_values"]
    o = ours.prepare_inputs_for_generation(**args_o)
    t = theirs.prepare_inputs_for_generation(**args_t)
    _compare_model_inputs(o, t, cache_o, cache_t)


# --------------------------------------------------------------------------------------------
# DynamicCache
# --------------------------------------------------------------------------------------------

def _cache_state(c, layers=4):
    return dict(
        len=len(c),
        seq=[c.get_seq_length(i) for i in range(layers)],
        seq_default=c.get_seq_length(),
        usable=[[c.get_usable_length(n, i) for n in (1, 2, 5)] for i in range(layers)],
        max=c.get_max_length(),
        seen=c.seen_tokens,
    )


def test_dynamic_cache_behaves_like_transformers():
    ours, theirs = mixtral_edu.DynamicCache(), transformers.DynamicCache()
    assert _cache_state(ours) == _cache_state(theirs)
    g = torch.Generator().manual_seed(0)
    for new in (4, 1, 3):
        for layer in range(3):
            k, v = torch.randn(2, 2, new, 8, generator=g), torch.randn(2, 2, new, 8, generator=g)
            ko, vo = ours.update(k, v, layer, {"sin": None, "cos": None})
            kt, vt = theirs.update(k, v, layer, {"sin": None, "cos": None})
            assert torch.equal(ko, kt) and torch.equal(vo, vt)
            assert _cache_state(ours) == _cache_state(theirs)       # also between layers of one step
    assert ours.get_seq_length() == 8 and ours.seen_tokens == 8 and ours.get_max_length() is None
    for i in range(3):
        assert torch.equal(ours[i][0], theirs[i][0]) and torch.equal(ours[i][1], theirs[i][1])
    assert [tuple(x.shape for x in kv) for kv in ours] == [tuple(x.shape for x in kv) for kv in theirs]
    with pytest.raises(KeyError):
        ours[3]
    with pytest.raises(KeyError):
        theirs[3]

    legacy_o, legacy_t = ours.to_legacy_cache(), theirs.to_legacy_cache()
    assert type(legacy_o) is tuple and len(legacy_o) == len(legacy_t) == 3
    assert_legacy_equal(legacy_o, legacy_t, atol=0)
    back_o = mixtral_edu.DynamicCache.from_legacy_cache(legacy_o)
    back_t = transformers.DynamicCache.from_legacy_cache(legacy_t)
    assert _cache_state(back_o) == _cache_state(back_t)
    assert back_o.seen_tokens == 8
    assert all(a is b for pa, pb in zip(back_o.to_legacy_cache(), legacy_o) for a, b in zip(pa, pb))
    empty_o, empty_t = mixtral_edu.DynamicCache.from_legacy_cache(None), transformers.DynamicCache.from_legacy_cache(None)
    assert _cache_state(empty_o) == _cache_state(empty_t)
    assert empty_o.to_legacy_cache() == empty_t.to_legacy_cache() == ()


def test_bounded_cache_usable_length_like_transformers():
    """Cache.get_usable_length's eviction arithmetic, through a cache with a maximum length."""
    legacy = _legacy_cache(1, 5)
    o = _bounded(mixtral_edu.DynamicCache, 6).from_legacy_cache(legacy)
    t = _bounded(transformers.DynamicCache, 6).from_legacy_cache(legacy)
    assert _cache_state(o) == _cache_state(t)
    assert o.get_usable_length(3) == 3


# --------------------------------------------------------------------------------------------
# 4D masks
# --------------------------------------------------------------------------------------------

def _paddings(batch, kv_len):
    g = torch.Generator().manual_seed(batch * 100 + kv_len)
    left = torch.ones(batch, kv_len, dtype=torch.long)
    for b in range(batch):
        left[b, : (b * 2) % kv_len] = 0
    rand = (torch.rand(batch, kv_len, generator=g) > 0.3).long()
    rand[:, -1] = 1
    return {"none": None, "ones": torch.ones(batch, kv_len, dtype=torch.long), "left": left, "random": rand,
            "bool-left": left.bool()}


def test_4d_mask_builders_equal_transformers_over_a_grid():
    checked = nones = 0
    for batch, q_len, past, window, dtype in itertools.product(
            (1, 3), (1, 2, 5), (0, 1, 4), (None, 1, 3, 8), (torch.float32, torch.bfloat16)):
        embeds = torch.zeros(batch, q_len, 4, dtype=dtype)
        for name, pad in _paddings(batch, q_len + past).items():
            if name == "bool-left" and dtype != torch.float32:
                continue
            args = (pad, (batch, q_len), embeds, past)
            for ours_fn, hf_fn in ((our_masks.prepare_4d_causal_attention_mask, _prepare_4d_causal_attention_mask),
                                   (our_masks.prepare_4d_causal_attention_mask_for_sdpa,
                                    _prepare_4d_causal_attention_mask_for_sdpa)):
                a = ours_fn(*args, sliding_window=window)
                b = hf_fn(*args, sliding_window=window)
                where = (ours_fn.__name__, batch, q_len, past, window, name, dtype)
                assert (a is None) == (b is None), where
                if b is None:
                    nones += 1
                    continue
                assert a.shape == b.shape == (batch, 1, q_len, q_len + past), where
                assert a.dtype == b.dtype == dtype, where
                assert torch.equal(a, b), where
                checked += 1
    assert nones > 0 and checked > 0


def test_4d_user_masks_like_transformers():
    embeds = torch.zeros(2, 3, 4)
    visible = torch.ones(2, 1, 3, 5)
    visible[0, 0, :, 0] = 0
    visible[1, 0, 2, 4] = 0
    a = our_masks.prepare_4d_causal_attention_mask(visible, (2, 3), embeds, 2)
    b = _prepare_4d_causal_attention_mask(visible, (2, 3), embeds, 2)
    assert torch.equal(a, b)
    additive = b
    assert our_masks.prepare_4d_causal_attention_mask_for_sdpa(additive, (2, 3), embeds, 2) is additive
    assert _prepare_4d_causal_attention_mask_for_sdpa(additive, (2, 3), embeds, 2) is additive
    with pytest.raises(ValueError):
        our_masks.prepare_4d_causal_attention_mask_for_sdpa(visible, (2, 3), embeds, 2)
    with pytest.raises(ValueError):
        _prepare_4d_causal_attention_mask_for_sdpa(visible, (2, 3), embeds, 2)
    for fn in (our_masks.prepare_4d_causal_attention_mask, _prepare_4d_causal_attention_mask):
        with pytest.raises(ValueError):
            fn(torch.ones(2, 1, 3, 4), (2, 3), embeds, 2)


def test_model_with_4d_mask_like_transformers(pair):
    ours, theirs = pair
    ids = random_ids(2, 6, seed=18)
    visible = torch.tril(torch.ones(6, 6))[None, None].repeat(2, 1, 1, 1)
    visible[1, 0, 3:, 1] = 0          # a hole no 2D mask could express
    with torch.no_grad():
        close(ours(ids, attention_mask=visible).logits, theirs(ids, attention_mask=visible).logits)


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("top_k,experts", [(1, 4), (2, 4), (2, 8), (3, 8)])
def test_load_balancing_loss_func(top_k, experts, with_mask):
    g = torch.Generator().manual_seed(top_k * 10 + experts)
    batch, seq, layers = 3, 7, 3
    logits = tuple(torch.randn(batch * seq, experts, generator=g) * 2 for _ in range(layers))
    mask = None
    if with_mask:
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, :3] = 0
        mask[2, :6] = 0
    a = our_moe.load_balancing_loss_func(logits, experts, top_k, mask)
    b = hf_mixtral.load_balancing_loss_func(logits, experts, top_k, mask)
    close(a, b, atol=1e-6)
    assert our_moe.load_balancing_loss_func(None, experts, top_k) == hf_mixtral.load_balancing_loss_func(None, experts, top_k) == 0
    assert our_moe.load_balancing_loss_func(logits[0], experts, top_k) == hf_mixtral.load_balancing_loss_func(logits[0], experts, top_k) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rmsnorm_equal(dtype):
    ours = our_decoder.MixtralRMSNorm(32, eps=1e-5)
    theirs = hf_mixtral.MixtralRMSNorm(32, eps=1e-5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(32, generator=g))
        theirs.weight.copy_(ours.weight)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = (torch.randn(3, 5, 32, generator=g) * 4).to(dtype)
    a, b = ours(x), theirs(x)
    assert a.dtype == b.dtype == dtype
    assert torch.equal(a, b)


def test_rotary_tables_and_apply_rotary_pos_emb_equal():
    ours = our_rotary.MixtralRotaryEmbedding(8, 256, 10000.0)
    theirs = hf_mixtral.MixtralRotaryEmbedding(8, 256, 10000.0)
    x = torch.zeros(1)
    for seq_len in (1, 7, 100, 256):
        for a, b in zip(ours(x, seq_len), theirs(x, seq_len)):
            assert torch.equal(a, b)
    cos, sin = theirs(x, 40)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 6, 8, generator=g), torch.randn(2, 2, 6, 8, generator=g)
    position_ids = torch.stack([torch.arange(6) + 3, torch.tensor([1, 1, 0, 1, 2, 3])])
    for a, b in zip(our_rotary.apply_rotary_pos_emb(q, k, cos, sin, position_ids),
                    hf_mixtral.apply_rotary_pos_emb(q, k, cos, sin, position_ids)):
        assert torch.equal(a, b)
    assert torch.equal(our_rotary.rotate_half(q), hf_mixtral.rotate_half(q))


@pytest.mark.parametrize("n_rep", [1, 2, 4])
def test_repeat_kv_equal(n_rep):
    x = torch.randn(2, 2, 5, 8)
    a, b = our_attention.repeat_kv(x, n_rep), hf_mixtral.repeat_kv(x, n_rep)
    assert a.shape == (2, 2 * n_rep, 5, 8) and torch.equal(a, b)


# --------------------------------------------------------------------------------------------
# bf16
# --------------------------------------------------------------------------------------------
# Both sides run the same bf16 operations in the same order (softmaxes and RMSNorm in fp32,
# as in transformers), so they should agree to a bf16 rounding or two. bf16 keeps 8
# significant bits (relative step 2^-8 ~ 0.4%); logits here are O(1)-O(5), where one bf16
# step is 2^-8..2^-6. We allow rtol 1.6e-2 (torch's bf16 default, ~2 steps) plus atol 2e-2,
# far below the ~0.5 by which a bf16 model differs from the fp32 one.

BF16_TOL = dict(rtol=1.6e-2, atol=2e-2)


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_bf16_forward_close(impl):
    ours, theirs = make_pair(attn_implementation=impl)
    ours, theirs = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    ids, mask = left_padded(2, 64, pads=[0, 5], seed=19)
    with torch.no_grad():
        a, b = ours(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits
    assert a.dtype == b.dtype == torch.float32     # logits are cast to fp32 after the bf16 head
    torch.testing.assert_close(a, b, **BF16_TOL)


def test_bf16_rotary_table_equal():
    ours, theirs = make_pair()
    ours, theirs = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    x = torch.zeros(1, dtype=torch.bfloat16)
    a = ours.model.layers[0].self_attn.rotary_emb(x, 256)
    b = theirs.model.layers[0].self_attn.rotary_emb(x, 256)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bf16_forward_without_rotation_close():
    """bf16 through every layer where rotary cannot matter: one token per row (position 0 only)."""
    ours, theirs = make_pair(num_local_experts=8)
    ours, theirs = ours.to(torch.bfloat16), theirs.to(torch.bfloat16)
    ids = random_ids(16, 1, seed=20)
    with torch.no_grad():
        a = ours(ids, output_router_logits=True, output_hidden_states=True)
        b = theirs(ids, output_router_logits=True, output_hidden_states=True)
    torch.testing.assert_close(a.logits, b.logits, **BF16_TOL)
    for x, y in zip(a.hidden_states + a.router_logits, b.hidden_states + b.router_logits):
        assert x.dtype == y.dtype == torch.bfloat16
        torch.testing.assert_close(x, y, **BF16_TOL)


def test_bf16_moe_block_equal():
    ours, theirs = make_pair()
    o_moe = ours.model.layers[0].block_sparse_moe.to(torch.bfloat16)
    t_moe = theirs.model.layers[0].block_sparse_moe.to(torch.bfloat16)
    x = torch.randn(2, 9, 32).to(torch.bfloat16)
    with torch.no_grad():
        (a, ra), (b, rb) = o_moe(x), t_moe(x.clone())
    torch.testing.assert_close(a, b, **BF16_TOL)
    assert torch.equal(ra, rb)


# --------------------------------------------------------------------------------------------
# The teaching forwards compute what transformers' do, bit for bit
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_attention_and_moe_block_bit_equal(impl, dtype):
    """Same statements in the same order: the same bits, not just within a tolerance."""
    ours, theirs = make_pair(attn_implementation=impl, num_local_experts=8)
    ours, theirs = ours.to(dtype), theirs.to(dtype)
    x = torch.randn(2, 9, 32).to(dtype)
    ids, mask = left_padded(2, 9, pads=[0, 3], seed=4)
    pos = positions_from_mask(mask)
    mask4d = our_masks.prepare_4d_causal_attention_mask(mask, (2, 9), x, 0)
    with torch.no_grad():
        for o_layer, t_layer in zip(ours.model.layers, theirs.model.layers):
            a, b = o_layer.block_sparse_moe(x), t_layer.block_sparse_moe(x.clone())
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
            a = o_layer.self_attn(x, attention_mask=mask4d, position_ids=pos)
            b = t_layer.self_attn(x, attention_mask=mask4d, position_ids=pos)
            assert torch.equal(a[0], b[0])
        assert torch.equal(ours(ids, attention_mask=mask).logits, theirs(ids, attention_mask=mask).logits)


def test_mask_values_other_than_one_hide_keys_like_transformers():
    # transformers treats every value that is not 1 as hidden (it fills where 1 - mask != 0)
    from transformers.modeling_attn_mask_utils import _prepare_4d_causal_attention_mask
    from mixtral_edu.modeling.masks import prepare_4d_causal_attention_mask
    m = torch.tensor([[2, 1, 1], [0, 1, 1]])
    emb = torch.zeros(2, 3, 4)
    assert torch.equal(prepare_4d_causal_attention_mask(m, (2, 3), emb, 0),
                       _prepare_4d_causal_attention_mask(m, (2, 3), emb, 0))


def test_router_logits_with_cache_and_mask_use_this_calls_columns():
    # transformers 4.41.2 crashes here (huggingface/transformers#30731); ours computes the aux
    # loss over this call's tokens, with the mask's last T columns.
    from mixtral_edu.modeling.moe import load_balancing_loss_func
    ours, theirs = make_pair()
    ids, mask = left_padded(2, 6, pads=[0, 2], seed=3)
    with torch.no_grad():
        first = ours(ids[:, :5], attention_mask=mask[:, :5])
        out = ours(ids[:, 5:], attention_mask=mask, past_key_values=first.past_key_values,
                   output_router_logits=True)
        with pytest.raises(RuntimeError):
            t_first = theirs(ids[:, :5], attention_mask=mask[:, :5])
            theirs(ids[:, 5:], attention_mask=mask, past_key_values=t_first.past_key_values,
                   output_router_logits=True)
    want = load_balancing_loss_func(out.router_logits, ours.config.num_local_experts,
                                    ours.config.num_experts_per_tok, mask[:, 5:])
    assert torch.equal(out.aux_loss, want)
    gen = ours.generate(ids, attention_mask=mask, max_new_tokens=3, output_router_logits=True)
    assert gen.shape == (2, 9)
