"""The trace diff's parts: comparing values, saying where they differ, two-model runs, the two views."""
from __future__ import annotations

import re

import torch

from mixtral_edu import trace_diff
from mixtral_edu.build.diff import compare, default_inputs, locate

from capstone_helpers import reference_pieces
from pairs import make_pair

PATTERN = ("row", "head", "query", "key")


def test_compare_treats_nan_and_inf_as_values():
    nan, inf = float("nan"), float("inf")
    assert compare(torch.tensor([1.0, nan, inf]), torch.tensor([1.0, nan, inf]), 1e-5) is None
    m = compare(torch.tensor([1.0, 2.0]), torch.tensor([1.0, nan]), 1e-5)
    assert m.what == "values" and m.index == (1,) and m.count == 1
    assert compare(torch.tensor([1.0]), torch.tensor([1.0 + 5e-6]), 1e-5) is None
    assert compare(torch.tensor([100.0]), torch.tensor([100.0009]), 1e-5, 1e-5) is None   # relative part
    assert compare(torch.tensor([3]), torch.tensor([4]), 1e-5).what == "values"           # integers: exact
    assert compare(torch.zeros(2, 3), torch.zeros(3, 2), 0).text == "shape (2, 3) vs (3, 2)"
    assert compare(torch.zeros(2), torch.zeros(2, dtype=torch.float64), 0).what == "dtype"
    m = compare((torch.zeros(2), torch.zeros(2)), (torch.zeros(2), torch.ones(2)), 0)
    assert m.part == 1


def test_locate_says_head_query_and_from_which_key_on():
    a = torch.zeros(1, 4, 6, 8)
    b = a.clone()
    b[0, 2, 3, 5:] = 1.0
    b[0, 2, 4, 5:] = 1.0
    text = locate(compare(a, b, 1e-5), PATTERN, (1, 6))
    assert text == "row 0, head 2, query 3, from key 5 on, heads differing: 2 (6 of 192 values differ)"
    b = a.clone()
    b[0, 1, 0, 2] = 1.0
    assert locate(compare(a, b, 1e-5), PATTERN, (1, 6)).startswith("row 0, head 1, query 0, key 2,")
    route = torch.zeros(6, 2)
    other = route.clone()
    other[4, 1] = 1.0     # token 4 of a (B=2, T=3) batch: row 1, position 1
    assert locate(compare(route, other, 0), ("token", "choice"), (2, 3)) == \
        "row 1, position 1, choice 1 (1 of 12 values differ)"


def test_two_models_part_where_their_weights_do():
    a, _ = make_pair(seed=4)
    b, _ = make_pair(seed=4)
    with torch.no_grad():
        b.model.layers[1].block_sparse_moe.experts[2].w2.weight.mul_(1.5)
    ids, mask = default_inputs(a)
    diff = trace_diff(a, other=b, input_ids=ids, attention_mask=mask)
    assert diff.labels == ("A", "B") and diff.first.layer == 1
    assert diff.first.name == "model.layers.1.block_sparse_moe.hook_out" and diff.who == "dispatch"
    assert diff.sentence.startswith("The runs first differ in dispatch at layer 1, row 0")
    assert diff.agreed.get("rms_norm", 0) >= 3   # layer 0's and layer 1's norms agreed before it


def test_the_text_and_html_views_show_both_values_and_the_tolerance():
    model, _ = make_pair(seed=4)
    ids, mask = default_inputs(model)

    def attention_weights(query_states, key_states, attention_mask):
        return reference_pieces()["attention_weights"](query_states * 1.1, key_states, attention_mask)
    diff = trace_diff(model, {"attention_weights": attention_weights}, input_ids=ids, attention_mask=mask)
    text, page = str(diff), diff._repr_html_()
    assert "max |ours - yours|" in text and "tolerance 1e-05 + 1e-05 * |ours|" in text
    assert re.search(r"^ +ours\[0, 0, 1, 0:\d+\]: ", text, re.M)
    assert re.search(r"^ +yours\[0, 0, 1, 0:\d+\]: ", text, re.M)
    assert "<table" in page and "background:#fdd" in page and "06_attention" in page
    same = trace_diff(model, {"attention_weights": reference_pieces()["attention_weights"]},
                      input_ids=ids, attention_mask=mask)
    assert not same.diverged and "no difference" in str(same) and same.sentence == "every piece agrees."
