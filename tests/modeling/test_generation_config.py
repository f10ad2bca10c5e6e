"""generation_config: a model loaded from a folder carries it, and generate takes its defaults from
it exactly where transformers 4.41.2 does; arguments passed to generate still win."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
import transformers

import mixtral_edu
from mixtral_edu.modeling.generation_config import GenerationConfig
from mixtral_edu.tiny.pretrained import TINY_DIR

from pairs import left_padded, make_pair


@pytest.fixture(scope="module")
def tiny():
    ours, tok = mixtral_edu.load_tiny()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(
        TINY_DIR, attn_implementation=ours.config.attn_implementation).eval()
    return ours, theirs, tok


def both(ours, theirs, ids, seed=0, **kw):
    torch.manual_seed(seed)
    a = ours.generate(ids, **kw)
    torch.manual_seed(seed)
    b = theirs.generate(ids, **kw)
    return a, b


def test_shipped_model_generates_its_32_new_tokens_like_transformers(tiny):
    ours, theirs, tok = tiny
    assert ours.generation_config.max_new_tokens == theirs.generation_config.max_new_tokens == 32
    ids = tok(['{id: 42, name: "'], return_tensors="pt").input_ids
    a, b = both(ours, theirs, ids)
    assert torch.equal(a, b)
    text = tok.decode(a[0])
    assert text.endswith("}</s>") and "city" in text     # the whole record, not cut off at 20 tokens
    assert a.shape[1] > 20


@pytest.mark.parametrize("kw", [
    dict(max_new_tokens=3),
    dict(max_length=12),                      # max_new_tokens=32 from the file still wins over max_length
    dict(max_new_tokens=None, max_length=12),
    dict(max_new_tokens=None),                # falls back to max_length 20 (with transformers' warning)
    dict(eos_token_id=None, max_new_tokens=40),
    dict(pad_token_id=None),
    dict(do_sample=True, top_k=5),
    dict(do_sample=True, temperature=0.6, top_p=0.8, top_k=None),
    dict(use_cache=False, max_new_tokens=4),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_arguments_win_over_the_shipped_generation_config(tiny, kw):
    ours, theirs, tok = tiny
    ids = tok(["the small cat sees", "a red ball"], return_tensors="pt", padding=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using the model-agnostic default")
        a, b = both(ours, theirs, ids.input_ids, seed=5, attention_mask=ids.attention_mask, **kw)
    assert torch.equal(a, b), kw


CUSTOM = dict(do_sample=True, temperature=0.7, top_k=6, top_p=0.85, max_new_tokens=9, eos_token_id=[2, 7],
              pad_token_id=0, bos_token_id=1)


@pytest.mark.filterwarnings("ignore:`do_sample` is set to `False`")
@pytest.mark.parametrize("writer", ["ours", "transformers"])
def test_saved_folder_with_a_custom_generation_config(tmp_path, writer):
    ours, theirs = make_pair(seed=21)
    if writer == "ours":
        ours.generation_config = GenerationConfig(**CUSTOM)
        ours.save_pretrained(str(tmp_path))
    else:
        theirs.generation_config = transformers.GenerationConfig(**CUSTOM)
        theirs.save_pretrained(str(tmp_path), safe_serialization=True)
    with open(tmp_path / "generation_config.json") as f:
        written = json.load(f)
    assert {k: written[k] for k in CUSTOM} == CUSTOM
    a_model = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    b_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    for k, v in CUSTOM.items():
        assert getattr(a_model.generation_config, k) == getattr(b_model.generation_config, k) == v, k
    ids, mask = left_padded(3, 5, pads=[0, 1, 3], seed=22)
    for seed in range(3):                                   # sampling with the file's settings, seeded
        a, b = both(a_model, b_model, ids, seed=seed, attention_mask=mask)
        assert torch.equal(a, b)
        assert a.shape[1] <= 5 + 9
    a, b = both(a_model, b_model, ids, attention_mask=mask, do_sample=False, max_new_tokens=4)
    assert torch.equal(a, b) and a.shape[1] == 9


def test_without_a_file_the_defaults_come_from_config_json(tmp_path):
    ours, theirs = make_pair(seed=23)
    ours.save_pretrained(str(tmp_path))
    (tmp_path / "generation_config.json").unlink()
    a_model = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    b_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    for k in ("bos_token_id", "eos_token_id", "pad_token_id", "max_length", "max_new_tokens", "do_sample"):
        assert getattr(a_model.generation_config, k) == getattr(b_model.generation_config, k), k
    ids, mask = left_padded(2, 4, pads=[0, 2], seed=24)
    with pytest.warns(UserWarning, match="Using the model-agnostic default `max_length`"):
        a = a_model.generate(ids, attention_mask=mask)
    with pytest.warns(UserWarning, match="Using the model-agnostic default `max_length`"):
        b = b_model.generate(ids, attention_mask=mask)
    assert torch.equal(a, b) and a.shape[1] == 20


def test_prompt_at_max_length_is_an_error_as_in_transformers(tiny):
    ours, theirs, tok = tiny
    ids = tok(["the small cat sees a red ball"], return_tensors="pt").input_ids
    for model in (ours, theirs):
        with pytest.raises(ValueError, match="max_length"):
            model.generate(ids, max_length=ids.shape[1], max_new_tokens=None)


def test_warns_past_max_position_embeddings_where_transformers_does(caplog):
    ours, theirs = make_pair(seed=25, max_position_embeddings=12)
    ids, _ = left_padded(1, 8, pads=[0], seed=26)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours.generate(ids, max_new_tokens=4)               # ends at 12 = max_position_embeddings: no warning
    with pytest.warns(UserWarning, match="max_position_embeddings=12"):
        a = ours.generate(ids, max_new_tokens=6)
    transformers.logging.set_verbosity_warning()
    try:
        b = theirs.generate(ids, max_new_tokens=6)
    finally:
        transformers.logging.set_verbosity_error()
    assert torch.equal(a, b)


def test_generation_config_fields_we_do_not_implement_are_refused(tmp_path):
    ours, _ = make_pair(seed=27)
    ours.save_pretrained(str(tmp_path))
    with open(tmp_path / "generation_config.json", "w") as f:
        json.dump({"num_beams": 4, "eos_token_id": 2}, f)
    model = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    ids, _ = left_padded(1, 4, pads=[0], seed=28)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(ids, max_new_tokens=2)
    model.generation_config.extra.pop("num_beams")           # the fix the message names
    assert model.generate(ids, max_new_tokens=2).shape == (1, 6)
