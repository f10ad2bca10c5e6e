"""Checkpoints: our save/load roundtrips, and directories shared with transformers 4.41.2 both ways."""
from __future__ import annotations

import json
import os

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import mixtral_edu
from mixtral_edu.modeling.checkpoint import CheckpointMismatchError

from pairs import left_padded, make_pair, random_ids

IDS, MASK = left_padded(2, 8, pads=[0, 3], seed=30)


def logits(model, ids=IDS, mask=MASK):
    with torch.no_grad():
        return model(ids, attention_mask=mask).logits


def close(a, b):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def models():
    return make_pair(seed=1)


def test_single_file_roundtrip(models, tmp_path):
    ours, _ = models
    ours.save_pretrained(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["config.json", "generation_config.json", "model.safetensors"]
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}          # transformers refuses files without it
        assert sorted(f.keys()) == sorted(ours.state_dict())
    back = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert not back.training
    assert back.config == ours.config
    assert_same_weights(back, ours)
    assert torch.equal(logits(back), logits(ours))


def _tensor_bytes(t):
    return t.numel() * t.element_size()


def test_sharded_roundtrip_and_index_format(models, tmp_path):
    ours, _ = models
    limit = 30_000
    ours.save_pretrained(str(tmp_path), max_shard_size="30KB")
    with open(tmp_path / "model.safetensors.index.json") as f:
        index = json.load(f)
    assert set(index) == {"metadata", "weight_map"}
    assert set(index["metadata"]) == {"total_size"}
    state = ours.state_dict()
    assert index["metadata"]["total_size"] == sum(_tensor_bytes(t) for t in state.values())
    assert set(index["weight_map"]) == set(state)
    shards = sorted(set(index["weight_map"].values()))
    n = len(shards)
    assert n > 1
    assert shards == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    assert not (tmp_path / "model.safetensors").exists()
    for name in shards:
        tensors = load_file(str(tmp_path / name))
        assert set(tensors) == {k for k, v in index["weight_map"].items() if v == name}
        size = sum(_tensor_bytes(t) for t in tensors.values())
        assert size <= limit or len(tensors) == 1              # only a lone oversized tensor may exceed it
        for k, t in tensors.items():
            assert torch.equal(t, state[k]), k
    back = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert_same_weights(back, ours)
    assert torch.equal(logits(back), logits(ours))
    # saving again unsharded into the same directory leaves a loadable single-file checkpoint
    ours.save_pretrained(str(tmp_path))
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert_same_weights(mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path)), ours)


@pytest.mark.parametrize("shard", [None, "30KB"])
def test_transformers_saved_directory_loads_in_ours(models, tmp_path, shard):
    ours, theirs = models
    kw = {} if shard is None else {"max_shard_size": shard}
    theirs.save_pretrained(str(tmp_path), safe_serialization=True, **kw)
    assert ("model.safetensors.index.json" in os.listdir(tmp_path)) == (shard is not None)
    loaded = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert_same_weights(loaded, ours)
    close(logits(loaded), logits(theirs))


@pytest.mark.parametrize("shard", [None, "30KB"])
def test_our_directory_loads_in_transformers(models, tmp_path, shard):
    ours, _ = models
    ours.save_pretrained(str(tmp_path), max_shard_size=shard)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert isinstance(loaded, transformers.MixtralForCausalLM)
    assert not loaded.training
    for k, v in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    close(logits(loaded), logits(ours))


def test_backbone_saved_by_transformers_loads(models, tmp_path):
    """A bare MixtralModel directory (keys without "model.") loads into our backbone."""
    ours, theirs = models
    theirs.model.save_pretrained(str(tmp_path), safe_serialization=True)
    backbone = mixtral_edu.MixtralModel.from_pretrained(str(tmp_path))
    with torch.no_grad():
        close(backbone(IDS, attention_mask=MASK).last_hidden_state,
              theirs.model(IDS, attention_mask=MASK).last_hidden_state)


def test_strict_mismatch_lists_missing_unexpected_and_misshapen_keys(models, tmp_path):
    ours, _ = models
    ours.save_pretrained(str(tmp_path))
    path = str(tmp_path / "model.safetensors")
    tensors = load_file(path)
    missing = "model.layers.1.block_sparse_moe.experts.2.w3.weight"
    misshapen = "model.layers.0.self_attn.k_proj.weight"
    unexpected = "model.layers.0.block_sparse_moe.experts.9.w1.weight"
    del tensors[missing]
    tensors[misshapen] = torch.zeros(3, 32)
    tensors[unexpected] = torch.zeros(48, 32)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as info:
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert isinstance(info.value, ValueError)
    msg = str(info.value)
    for word, key in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", misshapen)):
        assert word in msg and key in msg, (word, key, msg)
    assert "(3, 32)" in msg and "(16, 32)" in msg          # both shapes of the misfit are shown


def test_pytorch_bin_only_is_refused_without_unpickling(models, tmp_path, monkeypatch):
    _, theirs = models
    theirs.save_pretrained(str(tmp_path), safe_serialization=False)
    assert "pytorch_model.bin" in os.listdir(tmp_path)
    assert not any(n.endswith(".safetensors") for n in os.listdir(tmp_path))

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load must not be called")
    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(FileNotFoundError) as info:
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    msg = str(info.value)
    assert "pytorch_model.bin" in msg and "pickle" in msg and "safetensors" in msg


def test_missing_directory_and_config_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError):
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))     # exists, but no config.json


def test_tied_word_embeddings_roundtrip(tmp_path):
    ours, theirs = make_pair(seed=2, tie_word_embeddings=True)
    assert ours.lm_head.weight is ours.model.embed_tokens.weight
    ours.save_pretrained(str(tmp_path / "ours"))
    with safe_open(str(tmp_path / "ours" / "model.safetensors"), framework="pt") as f:
        assert "lm_head.weight" not in f.keys() and "model.embed_tokens.weight" in f.keys()
    back = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "ours"))
    assert back.config.tie_word_embeddings
    assert back.lm_head.weight is back.model.embed_tokens.weight
    assert torch.equal(logits(back), logits(ours))
    hf_back = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"))
    assert hf_back.lm_head.weight.data_ptr() == hf_back.model.embed_tokens.weight.data_ptr()
    close(logits(hf_back), logits(ours))

    theirs.save_pretrained(str(tmp_path / "theirs"), safe_serialization=True)
    from_hf = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "theirs"))
    assert from_hf.lm_head.weight is from_hf.model.embed_tokens.weight
    close(logits(from_hf), logits(theirs))


def test_from_pretrained_dtype_and_overrides(models, tmp_path):
    ours, _ = models
    ours.save_pretrained(str(tmp_path))
    bf16 = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path), torch_dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    for k, v in ours.state_dict().items():
        assert torch.equal(bf16.state_dict()[k], v.to(torch.bfloat16)), k
    sdpa = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path), attn_implementation="sdpa")
    assert sdpa.config.attn_implementation == "sdpa"
    close(logits(sdpa), logits(ours))
    ids = random_ids(1, 4, seed=31)
    with torch.no_grad():
        close(sdpa(ids).logits, ours(ids).logits)
