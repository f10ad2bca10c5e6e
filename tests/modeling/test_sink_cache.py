"""mixtral_edu.modeling.cache.SinkCache behaves as transformers 4.41.2's SinkCache, through real forward passes."""
import pytest
import torch
import transformers

from mixtral_edu.modeling.cache import SinkCache
from mixtral_edu.observe.oracle import hf_twin, prepare_both
from mixtral_edu.tiny.pretrained import load_tiny


@pytest.fixture(scope="module")
def models():
    model, tok = load_tiny()
    return model, hf_twin(model), tok


@pytest.mark.parametrize("sinks", [0, 2])
def test_sink_cache_generates_as_transformers(models, sinks):
    """A left-padded batch runs 8 greedy steps past a window of 8: same cropped masks and positions from
    prepare_inputs_for_generation, same cache lengths, same logits (the kept keys are re-rotated alike)."""
    model, hf_model, tok = models
    batch = tok(["the small cat sees", "37+48="], return_tensors="pt", padding=True)
    ids, mask = batch.input_ids, batch.attention_mask
    ours, theirs = SinkCache(8, sinks), transformers.SinkCache(8, sinks)
    for _ in range(8):
        inputs, _ = prepare_both(model, hf_model, ids, ours, hf_past_key_values=theirs, attention_mask=mask,
                                 use_cache=True)
        with torch.no_grad():
            a = model(**inputs).logits[:, -1]
            b = hf_model(**{**inputs, "past_key_values": theirs}).logits[:, -1]
        assert torch.allclose(a, b, atol=1e-5)
        assert ours.get_seq_length() == theirs.get_seq_length() <= 8
        assert ours.seen_tokens == theirs.seen_tokens
        for layer in range(len(ours)):
            assert torch.allclose(ours.key_cache[layer], theirs.key_cache[layer], atol=1e-5)
            assert torch.equal(ours.value_cache[layer], theirs.value_cache[layer])
        ids = torch.cat([ids, a.argmax(-1)[:, None]], -1)
        mask = torch.cat([mask, mask.new_ones((2, 1))], -1)
    assert inputs["attention_mask"].shape[1] == 8 < mask.shape[1] - 1        # the mask was cropped


def test_sink_cache_rejects_a_window_without_room():
    with pytest.raises(ValueError, match="num_sink_tokens"):
        SinkCache(window_length=4, num_sink_tokens=4)
