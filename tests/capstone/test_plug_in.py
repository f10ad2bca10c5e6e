"""plug_in: the one mechanism, its checks, and what it leaves behind (nothing)."""
from __future__ import annotations

import pytest
import torch

import mixtral_edu
from mixtral_edu.build import PieceError, PieceNotWritten, plug_in
from mixtral_edu.build import assembled
from mixtral_edu.build.plug import RUNNING
from mixtral_edu.modeling import attention, causal_lm, masks, model as model_module, moe, rotary

from capstone_helpers import reference_pieces
from pairs import left_padded, make_pair


@pytest.fixture(scope="module")
def small():
    ours, _ = make_pair(seed=1, sliding_window=4)
    ids, mask = left_padded(2, 6, pads=[0, 2], seed=3)
    return ours, ids, mask


def _logits(model, ids, mask):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def test_unknown_piece_suggests_the_closest_name(small):
    model, _, _ = small
    with pytest.raises(PieceError, match=r"No piece called 'rms_nrom'.*Did you mean 'rms_norm'"):
        with plug_in(model, {"rms_nrom": lambda x, w, e: x}):
            pass


def test_a_signature_that_does_not_fit_is_refused_before_anything_changes(small):
    model, ids, mask = small
    before, original = _logits(model, ids, mask), attention.repeat_kv
    with pytest.raises(PieceError) as info:
        with plug_in(model, {"repeat_kv": reference_pieces()["repeat_kv"],
                             "rms_norm": lambda hidden_states, weight: hidden_states}):
            pass
    text = str(info.value)
    assert "rms_norm(hidden_states, weight, eps)" in text and "Chapter 05" in text and "(hidden_states, weight)" in text
    assert attention.repeat_kv is original          # nothing was plugged, not even the piece that fits
    assert torch.equal(before, _logits(model, ids, mask))


def test_not_callable_is_refused(small):
    with pytest.raises(PieceError, match="must be a function"):
        with plug_in(small[0], {"route": 3}):
            pass


def test_wrong_output_shape_names_piece_expected_got_and_chapter(small):
    model, ids, mask = small
    with pytest.raises(PieceError) as info:
        with plug_in(model, {"repeat_kv": lambda hidden_states, n_rep: hidden_states}):
            _logits(model, ids, mask)
    text = str(info.value)
    assert info.value.piece == "repeat_kv"
    assert "shape (2, 2, 6, 8) where the model needs shape (2, 4, 6, 8)" in text
    assert "Chapter 06" in text and "06_attention" in text


def test_wrong_output_dtype_is_named(small):
    model, ids, mask = small

    def route(router_logits, top_k):
        w, e = assembled.route(router_logits, top_k)
        return w.double(), e
    with pytest.raises(PieceError, match=r"first of the pair: a tensor of dtype torch.float64 where the model "
                                         r"needs torch.float32.*Chapter 07"):
        with plug_in(model, {"route": route}):
            _logits(model, ids, mask)


def test_a_stub_and_a_crash_are_named(small):
    model, ids, mask = small

    def rms_norm(hidden_states, weight, eps):
        raise NotImplementedError("Exercise 12.5")

    def dispatch(hidden_states, routing_weights, selected_experts, experts):
        return hidden_states[selected_experts]  # (N, K, C): one row per choice, not per token

    def rotate_half(x):
        return x[..., 0] @ x   # a crash inside the learner's code
    with pytest.raises(PieceNotWritten, match="rms_norm.*still a stub"):
        with plug_in(model, {"rms_norm": rms_norm}):
            _logits(model, ids, mask)
    with pytest.raises(PieceError, match=r"dispatch.*shape \(12, 2, 32\) where the model needs shape \(12, 32\)"):
        with plug_in(model, {"dispatch": dispatch}):
            _logits(model, ids, mask)
    with pytest.raises(PieceError, match="Your `rotate_half` raised RuntimeError") as info:
        with plug_in(model, {"rotate_half": rotate_half}):
            _logits(model, ids, mask)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert RUNNING == []


def test_greedy_step_needs_the_causal_lm_and_greedy_decoding(small):
    model, ids, mask = small
    step = reference_pieces()["greedy_step"]
    with pytest.raises(PieceError, match="MixtralForCausalLM.generate, which this MixtralModel does not have"):
        with plug_in(model.model, {"greedy_step": step}):
            pass
    with plug_in(model, {"greedy_step": step}):
        with pytest.raises(PieceError, match="do_sample=True"):
            model.generate(ids, attention_mask=mask, max_new_tokens=2, do_sample=True)
    with pytest.raises(TypeError, match="needs a mixtral_edu MixtralForCausalLM"):
        with plug_in(torch.nn.Linear(2, 2), {"greedy_step": step}):
            pass


def test_function_slots_are_rebound_wherever_the_model_finds_them_and_put_back(small):
    model, ids, mask = small
    originals = {(m, n): getattr(m, n) for m, n in [
        (rotary, "apply_rotary_pos_emb"), (attention, "apply_rotary_pos_emb"), (rotary, "rotate_half"),
        (attention, "repeat_kv"), (masks, "prepare_4d_causal_attention_mask"),
        (model_module, "prepare_4d_causal_attention_mask"), (moe, "load_balancing_loss_func"),
        (causal_lm, "load_balancing_loss_func")]}
    pieces = {k: v for k, v in reference_pieces().items()
              if k in ("apply_rotary_pos_emb", "rotate_half", "repeat_kv", "build_4d_mask", "load_balancing_loss_func")}
    with plug_in(model, pieces):
        for (module, name), original in originals.items():
            assert getattr(module, name) is not original, f"{module.__name__}.{name} not rebound"
        assert attention.apply_rotary_pos_emb is rotary.apply_rotary_pos_emb       # one replacement, two homes
    for (module, name), original in originals.items():
        assert getattr(module, name) is original


def test_method_slots_live_on_the_instances_only(small):
    model, ids, mask = small
    cls_forward = type(model.model.norm).forward
    other, _ = make_pair(seed=2)
    with plug_in(model, {"rms_norm": reference_pieces()["rms_norm"], "route": reference_pieces()["route"]}):
        assert "forward" in vars(model.model.norm) and "forward" in vars(model.model.layers[0].block_sparse_moe)
        assert "forward" not in vars(other.model.norm)      # another model is untouched
        assert type(model.model.norm).forward is cls_forward
    assert "forward" not in vars(model.model.norm)


def test_nested_plug_ins_and_a_trace_inside(small):
    model, ids, mask = small
    ref = reference_pieces()
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=3)
        with plug_in(model, {"rms_norm": ref["rms_norm"]}):
            with plug_in(model, {"rms_norm": ref["rms_norm"], "repeat_kv": ref["repeat_kv"]}):
                with mixtral_edu.trace(model) as tr:
                    got = model.generate(ids, attention_mask=mask, max_new_tokens=3)
            assert "forward" in vars(model.model.norm)        # the outer one is back
        assert "forward" not in vars(model.model.norm)
    assert torch.equal(want, got)
    assert tr.find("input_layernorm") and tr.find("block_sparse_moe")


def test_hook_points_fire_in_the_assembled_forwards(small):
    model, ids, mask = small
    ref = reference_pieces()
    with torch.no_grad():
        _, acts = mixtral_edu.run_with_cache(model, ids, attention_mask=mask)
        with plug_in(model, {"attention_weights": ref["attention_weights"], "route": ref["route"],
                             "dispatch": ref["dispatch"]}):
            _, mine = mixtral_edu.run_with_cache(model, ids, attention_mask=mask)
    for name in ("model.layers.0.self_attn.hook_pattern", "model.layers.1.block_sparse_moe.hook_topk_weights",
                 "model.layers.1.block_sparse_moe.hook_out", "model.layers.0.self_attn.hook_q"):
        torch.testing.assert_close(acts[name], mine[name], atol=1e-6, rtol=0)
    assert "model.layers.0.self_attn.hook_attn_scores" not in mine    # inside your piece: not exposed
