"""MixtralConfig: transformers' defaults, validation with field names, config.json both ways."""
from __future__ import annotations

import inspect
import json

import pytest
import transformers

import mixtral_edu

from pairs import tiny_kwargs

# transformers' own Mixtral fields (its __init__ parameters) ...
HF_FIELDS = [p for p in inspect.signature(transformers.MixtralConfig.__init__).parameters
             if p not in ("self", "kwargs")]
# ... and the generic PretrainedConfig switches the model reads
COMMON_FIELDS = ["output_attentions", "output_hidden_states", "use_return_dict"]

# Bookkeeping keys that config.json files carry but that are not hyper-parameters
BOOKKEEPING = {"architectures", "torch_dtype", "transformers_version", "_name_or_path", "model_type",
               "attn_implementation"}


def test_every_transformers_field_exists_with_the_same_default():
    ours, theirs = mixtral_edu.MixtralConfig(), transformers.MixtralConfig()
    assert len(HF_FIELDS) >= 23
    for name in HF_FIELDS + COMMON_FIELDS:
        assert hasattr(ours, name), name
        assert getattr(ours, name) == getattr(theirs, name), (name, getattr(ours, name), getattr(theirs, name))
    assert ours.model_type == theirs.model_type == "mixtral"
    # every field both sides write to config.json also agrees
    od, hd = ours.to_dict(), theirs.to_dict()
    shared = (set(od) & set(hd)) - BOOKKEEPING
    assert set(HF_FIELDS) <= shared
    assert {k: od[k] for k in shared} == {k: hd[k] for k in shared}


def test_num_key_value_heads_none_means_one_per_head():
    ours = mixtral_edu.MixtralConfig(num_attention_heads=16, num_key_value_heads=None)
    theirs = transformers.MixtralConfig(num_attention_heads=16, num_key_value_heads=None)
    assert ours.num_key_value_heads == theirs.num_key_value_heads == 16


def test_head_dim_is_derived():
    assert mixtral_edu.MixtralConfig(**tiny_kwargs()).head_dim == 8
    assert mixtral_edu.MixtralConfig().head_dim == 128


@pytest.mark.parametrize("overrides,fields", [
    (dict(hidden_size=30, num_attention_heads=4), ["hidden_size", "num_attention_heads"]),
    (dict(num_attention_heads=4, num_key_value_heads=3), ["num_attention_heads", "num_key_value_heads"]),
    (dict(num_experts_per_tok=5, num_local_experts=4), ["num_experts_per_tok", "num_local_experts"]),
    (dict(num_experts=8), ["num_experts"]),
    (dict(attn_implementation="flash_attention_2"), ["attn_implementation"]),
    (dict(attn_implementation="Eager"), ["attn_implementation"]),
    (dict(hidden_size=36, num_attention_heads=4), ["hidden_size", "num_attention_heads"]),  # odd head dim
    (dict(sliding_window=0), ["sliding_window"]),
    (dict(num_hidden_layers=0), ["num_hidden_layers"]),
    (dict(vocab_size=-3), ["vocab_size"]),
    (dict(hidden_act="gelu"), ["hidden_act"]),
    (dict(eos_token_id=97), ["eos_token_id"]),
    (dict(eos_token_id=[2, 120]), ["eos_token_id"]),
    (dict(pad_token_id=-1), ["pad_token_id"]),
])
def test_validation_errors_name_the_fields(overrides, fields):
    with pytest.raises(ValueError) as info:
        mixtral_edu.MixtralConfig(**tiny_kwargs(**overrides))
    for field in fields:
        assert field in str(info.value), (field, str(info.value))


def test_attn_implementation_setter_validates():
    cfg = mixtral_edu.MixtralConfig(**tiny_kwargs())
    cfg.attn_implementation = "sdpa"
    assert cfg.attn_implementation == cfg._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="attn_implementation"):
        cfg.attn_implementation = "flex"
    assert cfg.attn_implementation == "sdpa"


def test_unknown_field_message_lists_it_and_bookkeeping_is_accepted():
    with pytest.raises(ValueError, match="num_expert"):
        mixtral_edu.MixtralConfig(num_expert=8, vocab_size=100)
    cfg = mixtral_edu.MixtralConfig(transformers_version="4.41.2", architectures=["MixtralForCausalLM"],
                                    torch_dtype="bfloat16", model_type="mixtral")
    assert cfg == mixtral_edu.MixtralConfig()


NON_DEFAULT = tiny_kwargs(sliding_window=7, eos_token_id=[2, 5], tie_word_embeddings=True,
                          attn_implementation="sdpa", num_experts_per_tok=1, router_aux_loss_coef=0.02,
                          router_jitter_noise=0.1, output_router_logits=True, use_cache=False, rms_norm_eps=1e-6)


@pytest.mark.parametrize("kw", [tiny_kwargs(), NON_DEFAULT, {}], ids=["tiny", "non-default", "defaults"])
def test_config_json_roundtrip(kw, tmp_path):
    cfg = mixtral_edu.MixtralConfig(**kw)
    cfg.save_pretrained(str(tmp_path))
    with open(tmp_path / "config.json") as f:
        raw = json.load(f)
    assert raw["model_type"] == "mixtral" and raw["architectures"] == ["MixtralForCausalLM"]
    back = mixtral_edu.MixtralConfig.from_pretrained(str(tmp_path))
    assert back == cfg
    assert back.to_dict() == cfg.to_dict()
    for name in HF_FIELDS + COMMON_FIELDS + ["attn_implementation"]:
        assert getattr(back, name) == getattr(cfg, name), name
    again = mixtral_edu.MixtralConfig.from_json_file(str(tmp_path / "config.json"), vocab_size=200)
    assert again.vocab_size == 200 and again.hidden_size == cfg.hidden_size


@pytest.mark.parametrize("kw", [tiny_kwargs(), NON_DEFAULT, {}], ids=["tiny", "non-default", "defaults"])
def test_transformers_reads_our_config_json(kw, tmp_path):
    ours = mixtral_edu.MixtralConfig(**kw)
    ours.save_pretrained(str(tmp_path))
    read = transformers.AutoConfig.from_pretrained(str(tmp_path))
    assert isinstance(read, transformers.MixtralConfig)
    direct = transformers.MixtralConfig(**kw)
    for name in HF_FIELDS + COMMON_FIELDS:
        assert getattr(read, name) == getattr(ours, name), name
        assert getattr(read, name) == getattr(direct, name), name
    # Our config.json also records "attn_implementation"; transformers 4.41.2 reads the file but
    # deliberately ignores that key (from_dict overwrites it with the from_pretrained argument),
    # so it is not compared here. It is harmless: both implementations give the same logits.
    hd, dd = read.to_dict(), direct.to_dict()
    assert {k: v for k, v in hd.items() if k not in BOOKKEEPING} == {k: v for k, v in dd.items() if k not in BOOKKEEPING}


@pytest.mark.parametrize("kw", [tiny_kwargs(), NON_DEFAULT], ids=["tiny", "non-default"])
def test_we_read_transformers_config_json(kw, tmp_path):
    theirs = transformers.MixtralConfig(**kw)
    theirs.save_pretrained(str(tmp_path))
    read = mixtral_edu.MixtralConfig.from_pretrained(str(tmp_path))
    for name in HF_FIELDS + COMMON_FIELDS:
        assert getattr(read, name) == getattr(theirs, name), name
    # transformers does not write the attention implementation: ours falls back to eager
    assert read.attn_implementation == "eager"
    assert read == mixtral_edu.MixtralConfig(**dict(kw, attn_implementation="eager"))


def test_from_dict_rejects_what_it_cannot_build(tmp_path):
    base = mixtral_edu.MixtralConfig(**tiny_kwargs()).to_dict()
    with pytest.raises(ValueError, match="model_type"):
        mixtral_edu.MixtralConfig.from_dict(dict(base, model_type="llama"))
    with pytest.raises(ValueError, match="RoPE scaling"):
        mixtral_edu.MixtralConfig.from_dict(dict(base, rope_scaling={"type": "linear", "factor": 2.0}))
    with pytest.raises(ValueError, match="head_dim"):
        mixtral_edu.MixtralConfig.from_dict(dict(base, head_dim=16))
    assert mixtral_edu.MixtralConfig.from_dict(dict(base, head_dim=8)) == mixtral_edu.MixtralConfig(**tiny_kwargs())
    with pytest.raises(FileNotFoundError, match="config.json"):
        mixtral_edu.MixtralConfig.from_pretrained(str(tmp_path))
