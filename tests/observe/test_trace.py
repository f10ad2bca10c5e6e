"""mixtral_edu.trace: the call-chain tree of generate / forward, and what it records.

Every number the trace shows is checked against an independent computation
(positions from the mask, the router's choice from output_router_logits, the
generated ids), and tracing must leave every output bit-for-bit unchanged.
"""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import mixtral_edu
from mixtral_edu.modeling.masks import prepare_4d_causal_attention_mask
from mixtral_edu.observe.tracer import Trace

PAD, BOS, EOS = 0, 1, 2
TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=256,
            rope_theta=10000.0, initializer_range=0.2, pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS)


def build(attn: str = "eager", seed: int = 0) -> mixtral_edu.MixtralForCausalLM:
    torch.manual_seed(seed)
    return mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**TINY, attn_implementation=attn)).eval()


@pytest.fixture(scope="module")
def model():
    return build("eager")


@pytest.fixture(scope="module")
def prompt():
    """(input_ids, attention_mask) (2, 5): row 0 has two left pads, so positions differ per row."""
    ids = torch.tensor([[PAD, PAD, 5, 9, 33], [4, 7, 11, 8, 12]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)


def assert_clean(model: nn.Module) -> None:
    """Nothing left attached: no torch hooks, no HookPoint fns, no instance-level wrappers."""
    for name, m in model.named_modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, name
        assert "forward" not in m.__dict__, name                  # the per-module wrappers are gone
        assert not getattr(m, "fns", []), name
    assert "generate" not in model.__dict__ and "prepare_inputs_for_generation" not in model.__dict__


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_tracing_never_changes_outputs(attn, prompt):
    m = build(attn)
    ids, mask = prompt
    logits = m(ids, attention_mask=mask).logits
    gen = m.generate(ids, attention_mask=mask, max_new_tokens=3)
    with mixtral_edu.trace(m) as tr:
        traced_logits = m(ids, attention_mask=mask).logits
        traced_gen = m.generate(ids, attention_mask=mask, max_new_tokens=3)
    assert torch.equal(logits, traced_logits)
    assert torch.equal(gen, traced_gen)
    assert len(tr.steps) == 1 + 3  # one direct forward, then prefill + 2 decode steps
    assert_clean(m)


def test_two_step_generation_reads_like_the_walkthrough(model, prompt):
    ids, mask = prompt
    with mixtral_edu.trace(model) as tr:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=2)
    text = str(tr)
    # The outline of the walkthrough, in order, once per step.
    outline = ["generate", "step 0: prefill", "prepare_inputs_for_generation", "MixtralForCausalLM.forward",
               "model: MixtralModel.forward", "position_ids", "embed_tokens", "4D mask",
               "layers.0: MixtralDecoderLayer.forward", "self_attn: MixtralAttention.forward",
               "block_sparse_moe: MixtralSparseMoeBlock.forward", "layers.1: MixtralDecoderLayer.forward",
               "norm: MixtralRMSNorm.forward", "lm_head", "next token",
               "step 1: decode", "prepare_inputs_for_generation", "MixtralForCausalLM.forward",
               "layers.0: MixtralDecoderLayer.forward", "block_sparse_moe", "lm_head", "next token"]
    at = 0
    for name in outline:
        found = text.find(name, at)
        assert found >= 0, f"{name!r} missing after position {at}"
        at = found + len(name)

    # Real numbers: the position ids the trace prints are the ones the mask implies.
    full = positions_from_mask(mask)
    assert f"position_ids (2, 5) int64 = {full.tolist()}" in text
    grown = torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], dim=1)
    assert f"position_ids (2, 1) int64 = {positions_from_mask(grown)[:, -1:].tolist()}" in text
    assert "branch: no cache" in text and "branch: past_length < len(input_ids) (5 < 6)" in text
    assert "input_ids sliced: (2, 6) -> (2, 1)" in text
    assert "cache: keys this layer holds: 0 -> 5" in text and "cache: keys this layer holds: 5 -> 6" in text
    for step, column in ((0, 5), (1, 6)):
        chosen = out[:, column].tolist()
        assert f"out: (2) int64 = {chosen}" in text
        assert f"row 0: {chosen[0]} = argmax" in text
    assert f"(2, 7) int64 = {out.tolist()}" in text  # generate's result


def test_step_records_match_independent_computations(model, prompt):
    ids, mask = prompt
    with mixtral_edu.trace(model) as tr:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=2)
    assert [(s.index, s.kind) for s in tr.steps] == [(0, "prefill"), (1, "decode")]
    pre, dec = tr.steps

    assert torch.equal(pre.input_ids, ids) and torch.equal(dec.input_ids, out[:, 5:6])
    assert torch.equal(pre.position_ids, positions_from_mask(mask))
    assert pre.prepare["branch"].startswith("no cache") and dec.prepare["past_length"] == 5
    assert (dec.prepare["input_ids_before"], dec.prepare["input_ids_after"]) == ([2, 6], [2, 1])
    assert torch.equal(dec.prepare["position_ids"], dec.position_ids)
    assert (pre.past_length, dec.past_length) == (0, 5) and pre.legacy_cache_converted
    emb = torch.zeros(2, 5, TINY["hidden_size"])
    assert torch.equal(pre.mask_4d, prepare_4d_causal_attention_mask(mask, (2, 5), emb, 0))
    assert dec.mask_4d.shape == (2, 1, 1, 6)
    assert torch.equal(torch.stack([s.next_tokens for s in tr.steps], 1), out[:, 5:])

    # Router records against the model's own router_logits output for the same inputs.
    ref = model(ids, attention_mask=mask, position_ids=positions_from_mask(mask), output_router_logits=True)
    assert torch.equal(pre.logits_last, ref.logits[:, -1])
    for i, router_logits in enumerate(ref.router_logits):
        rec = pre.layers[i]
        assert torch.equal(rec.router_logits, router_logits)
        probs = torch.softmax(router_logits, dim=-1, dtype=torch.float)
        top_w, top_i = probs.topk(TINY["num_experts_per_tok"], dim=-1)
        assert torch.equal(rec.router_probs, probs) and torch.equal(rec.topk_indices, top_i)
        torch.testing.assert_close(rec.topk_weights, top_w / top_w.sum(-1, keepdim=True))
        assert sum(len(v) for v in rec.tokens_per_expert().values()) == 10 * 2
        assert (rec.cache_before, rec.cache_after) == (0, 5) and (dec.layers[i].cache_before, dec.layers[i].cache_after) == (5, 6)
        assert rec.q_shape == (2, 4, 5, 8) and rec.k_shape == rec.v_shape == (2, 2, 5, 8)
        assert rec.attn_weights.shape == (2, 4, 5, 5)
        torch.testing.assert_close(rec.attn_weights.sum(-1), torch.ones(2, 4, 5))


def test_records_are_detached_copies(model, prompt):
    ids, mask = prompt
    with mixtral_edu.trace(model) as tr:
        out = model(ids, attention_mask=mask)
    kept = tr.steps[0].logits_last.clone()
    out.logits.mul_(0)  # a later in-place edit of the model's output must not reach the record
    assert torch.equal(tr.steps[0].logits_last, kept)
    assert tr.steps[0].kind == "forward" and not tr.steps[0].layers[0].router_probs.requires_grad


def test_options_depth_layers_steps(model, prompt):
    ids, mask = prompt
    with mixtral_edu.trace(model, depth=4, layers=[1], steps=[1, 2]) as tr:
        model.generate(ids, attention_mask=mask, max_new_tokens=4)
    assert [s.index for s in tr.steps] == [1, 2]
    assert all(list(s.layers) == [1] for s in tr.steps)                # records trimmed by `layers`
    assert max(n.depth for n in tr.nodes()) == 4                        # tree trimmed by `depth`
    assert not tr.find("self_attn") and not tr.find("layers.0")
    assert len(tr.find("layers.1")) == 2                                 # one per traced step
    labels = [n.label for n in tr.roots[0].children]
    assert labels == ["step 0: prefill", "step 1: decode", "step 2: decode", "step 3: decode"]
    assert "not traced" in tr.roots[0].children[0].info["loop"]
    assert "layers not traced: [0]" in str(tr)

    with mixtral_edu.trace(model, depth=0) as tr:
        model.generate(ids, attention_mask=mask, max_new_tokens=2)
    assert [n.label for n in tr.nodes()] == ["generate"] and len(tr.steps) == 2
    assert tr.steps[1].next_tokens is not None and tr.steps[1].layers[0].cache_after == 6


def test_direct_forward_calls_and_explicit_cache(model):
    ids = torch.tensor([[5, 6, 7]])
    cache = mixtral_edu.DynamicCache()
    with mixtral_edu.trace(model) as tr:
        model(ids, past_key_values=cache, use_cache=True)
        model(torch.tensor([[8]]), past_key_values=cache, use_cache=True)
    assert [(s.kind, s.past_length, s.legacy_cache_converted) for s in tr.steps] == [("forward", 0, False),
                                                                                      ("forward", 3, False)]
    assert torch.equal(tr.steps[1].position_ids, torch.tensor([[3]]))  # built as arange(P, P + T)
    assert tr.steps[1].mask_4d is None and "None: nothing to hide" in str(tr)
    assert "arange(P, P + T) = arange(3, 4)" in str(tr)
    assert [r.label for r in tr.roots] == ["MixtralForCausalLM.forward"] * 2


def test_meta_device_forward_shapes_only():
    with torch.device("meta"):
        m = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**TINY, attn_implementation="eager"))
    ids = torch.zeros(2, 5, dtype=torch.long, device="meta")
    with mixtral_edu.trace(m) as tr:
        out = m(ids, attention_mask=torch.ones(2, 5, dtype=torch.long, device="meta"))
    assert out.logits.shape == (2, 5, 97) and out.logits.is_meta
    step = tr.steps[0]
    assert step.layers[1].q_shape == (2, 4, 5, 8) and step.mask_4d.shape == (2, 1, 5, 5)
    assert step.layers[0].tokens_per_expert() == {}
    text = str(tr)
    assert "meta: shapes only" in text and "unknown on meta" in text and "logits (2, 5, 97) float32" in text
    json.dumps(tr.to_dict())
    assert_clean(m)


def test_nothing_remains_after_an_exception(model, prompt):
    ids, mask = prompt
    bad = ids.clone()
    bad[1, 4] = 10_000  # out of vocabulary: MixtralModel.forward raises
    with pytest.raises(ValueError, match="vocab_size"):
        with mixtral_edu.trace(model) as tr:
            model.generate(bad, attention_mask=mask, max_new_tokens=2)
    assert_clean(model)
    assert "ValueError" in tr.find("MixtralModel.forward")[0].error and "raised" in str(tr)

    with pytest.raises(RuntimeError, match="stop"):  # an error of the caller's, between calls
        with mixtral_edu.trace(model, steps=[0]):
            model.generate(ids, attention_mask=mask, max_new_tokens=1)
            raise RuntimeError("stop")
    assert_clean(model)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=1)[:, :5], ids)


def test_views_text_html_json_find(model, prompt):
    ids, mask = prompt
    with mixtral_edu.trace(model, layers=[0]) as tr:
        model.generate(ids, attention_mask=mask, max_new_tokens=2)
    html = tr._repr_html_()
    assert html.count("<details") == sum(1 for _ in tr.nodes()) and "<style>" in html
    assert "<script" not in html and "http" not in html  # self-contained
    data = json.loads(tr.to_json())
    assert data["roots"][0]["name"] == "MixtralForCausalLM.generate"
    assert data["steps"][1]["prepare"]["past_length"] == 5
    assert data["steps"][0]["position_ids"]["values"] == positions_from_mask(mask).tolist()
    moe = tr.find("MixtralSparseMoeBlock")
    assert [n.path for n in moe] == ["model.layers.0.block_sparse_moe"] * 2
    assert moe[0].mirrors == "transformers.models.mixtral.modeling_mixtral.MixtralSparseMoeBlock.forward"
    assert all(n.time_ms is not None for n in moe)
    assert "hf: modeling_mixtral.MixtralSparseMoeBlock.forward" in tr.to_text(mirrors=True)
    assert isinstance(tr, Trace) and "2 step(s)" in repr(tr)


def test_sdpa_trace_says_weights_are_not_formed(prompt):
    m = build("sdpa")
    ids, mask = prompt
    with mixtral_edu.trace(m) as tr:
        m(ids[1:])  # no padding, no cache: sdpa needs no mask at all
    assert tr.steps[0].mask_4d is None and tr.steps[0].layers[0].attn_weights is None
    text = str(tr)
    assert "not formed (sdpa" in text and "_for_sdpa" in text and "None: SDPA's own is_causal" in text


def test_prepare_inputs_called_by_hand_is_its_own_node_not_a_generate_step(model, prompt):
    ids, mask = prompt
    with mixtral_edu.trace(model) as tr:
        inputs = model.prepare_inputs_for_generation(ids, attention_mask=mask)
        model(**inputs)
    assert [r.label for r in tr.roots] == ["prepare_inputs_for_generation (called directly)",
                                          "MixtralForCausalLM.forward"]
    assert [s.kind for s in tr.steps] == ["forward"] and tr.steps[0].prepare is None
    assert tr.roots[0].info and tr.roots[0].result is not None     # what it did is still shown
    assert_clean(model)


# -- what a node shows is what the call saw, however late it is read ---------------------------

def _without_times(d):
    """A node dict without the wall times (which differ between runs)."""
    return {k: ([_without_times(c) for c in v] if k == "children" else v) for k, v in d.items() if k != "time_ms"}


def test_nodes_read_late_show_what_they_showed_at_the_time(model, prompt):
    """Nodes write out their summaries and facts when first read. Reading every node during the
    run (at each step's token) and reading them all after it must give the same tree."""
    ids, mask = prompt
    with mixtral_edu.trace(model) as late:
        model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=PAD)

    reads = []

    def read_everything(tokens, point):
        reads.append(sum(1 for _ in early.nodes()))
        for node in early.nodes():
            node.to_dict()  # writes out args, result and info now

    with mixtral_edu.trace(model) as early:
        with mixtral_edu.hooks(model, {"hook_next_tokens": read_everything}):
            model.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False, pad_token_id=PAD)
    assert len(reads) == 3 and reads[0] > 20  # read at every step, with the tree so far
    assert [_without_times(r.to_dict()) for r in early.roots] == [_without_times(r.to_dict()) for r in late.roots]
    assert early.to_text().count("\n") == late.to_text().count("\n")


def test_snapshots_write_out_as_summarize_would():
    from mixtral_edu.modeling.cache import DynamicCache
    from mixtral_edu.observe.records import snapshot, summarize, unsnap
    cache = DynamicCache()
    cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), 0)
    values = [torch.randn(2, 3), torch.arange(40).reshape(5, 8), torch.randn(4, 8), torch.ones(3, dtype=torch.bfloat16),
              torch.tensor([float("inf"), float("nan")]), torch.empty(2, 3, device="meta"), torch.tensor(True),
              None, 3, "x", (torch.randn(2), None, cache), cache, ((torch.zeros(1, 2, 5, 4), torch.zeros(1, 2, 5, 4)),)]
    for x in values:
        assert unsnap(snapshot(x)) == summarize(x), x


def test_snapshots_keep_the_values_of_call_time():
    from mixtral_edu.observe.records import snapshot, unsnap
    x = torch.tensor([[1, 2, 3]])
    first = snapshot(x)
    x.add_(10)  # changed in place after the call
    assert unsnap(first)["values"] == [[1, 2, 3]]
    assert unsnap(snapshot(x))["values"] == [[11, 12, 13]]


def test_nodes_read_while_their_call_is_open_still_get_their_result(model, prompt):
    """A hook inside layer 0's attention reads every node so far, the open ones included (their
    args are written out before their result exists). The finished tree must still be plain data."""
    ids, mask = prompt
    with mixtral_edu.trace(model) as late:
        model(ids, attention_mask=mask)

    def read_everything(q, point):
        for node in early.nodes():
            node.to_dict()

    with mixtral_edu.trace(model) as early:
        with mixtral_edu.hooks(model, {"model.layers.0.self_attn.hook_q": read_everything}):
            model(ids, attention_mask=mask)
    json.dumps(early.to_dict())  # no snapshot left unwritten
    assert [_without_times(r.to_dict()) for r in early.roots] == [_without_times(r.to_dict()) for r in late.roots]
