"""With the reference pieces plugged in, our model still generates what transformers 4.41.2 generates.

The tiny model (eager attention, as the chapter runs it) and two random configurations; every piece
at once, and each piece alone. Tokens must be equal one for one; logits and the load-balancing loss
within 1e-5.
"""
from __future__ import annotations

import pytest
import torch
import transformers

import mixtral_edu
from mixtral_edu.build import PIECES, plug_in
from mixtral_edu.tiny.pretrained import TINY_DIR

from capstone_helpers import generate_both, random_config, reference_pieces
from pairs import left_padded, make_pair

TOL = 1e-5


@pytest.fixture(scope="module")
def tiny_pair():
    ours, tok = mixtral_edu.load_tiny(attn_implementation="eager")
    theirs = transformers.MixtralForCausalLM.from_pretrained(TINY_DIR, attn_implementation="eager").eval()
    # additions, a sentence start, and a prompt longer than the window (32) so the window matters
    prompts = ["43+77=", "the small mice", "the small cat sees a red ball . some big dogs near the trees run . "
               "this girl likes the green hat . a lazy fox under the"]
    enc = tok(prompts, return_tensors="pt", padding=True)
    return ours, theirs, enc.input_ids, enc.attention_mask


def _assert_same(ours, theirs, ids, mask, pieces, max_new_tokens=8):
    with plug_in(ours, pieces):
        got, want = generate_both(ours, theirs, ids, mask, max_new_tokens)
        with torch.no_grad():
            a = ours(ids, attention_mask=mask, output_router_logits=True)
    with torch.no_grad():
        b = theirs(ids, attention_mask=mask, output_router_logits=True)
    assert torch.equal(got, want), f"tokens differ with {sorted(pieces)}"
    assert got.shape[1] > ids.shape[1]
    assert float((a.logits - b.logits).abs().max()) <= TOL
    assert float((a.aux_loss - b.aux_loss).abs()) <= TOL


def test_every_reference_piece_on_the_tiny_model(tiny_pair):
    ours, theirs, ids, mask = tiny_pair
    assert ids.shape[1] + 8 > 33, "the window must hide something"
    _assert_same(ours, theirs, ids, mask, reference_pieces(), max_new_tokens=10)


@pytest.mark.parametrize("name", list(PIECES))
def test_each_reference_piece_alone_on_the_tiny_model(tiny_pair, name):
    ours, theirs, ids, mask = tiny_pair
    _assert_same(ours, theirs, ids, mask, {name: reference_pieces()[name]}, max_new_tokens=6)


@pytest.mark.parametrize("seed", [11, 23])
def test_every_reference_piece_on_a_random_config(seed):
    config = random_config(seed)
    ours, theirs = make_pair(seed=seed, **config)
    ids, mask = left_padded(3, 7, pads=[0, 2, 5], seed=seed)
    _assert_same(ours, theirs, ids, mask, reference_pieces(), max_new_tokens=8)


def test_the_random_configs_differ_and_cover_both_attentions():
    a, b = random_config(11), random_config(23)
    assert a != b
    assert {a["attn_implementation"], b["attn_implementation"]} == {"eager", "sdpa"}
    assert any(c["num_key_value_heads"] < c["num_attention_heads"] for c in (a, b))   # grouped-query
    assert any(c["sliding_window"] for c in (a, b))
