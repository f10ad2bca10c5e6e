import json
import os

import pytest

from mixtral_edu.tiny.corpus import addition_prompts, lang_prompts, make_corpus
from mixtral_edu.tiny.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    load_tokenizer,
    save_tokenizer,
    train_tokenizer,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def texts():
    return [text for _, text in make_corpus(3000, seed=0)]


@pytest.fixture(scope="module")
def tok(texts):
    return train_tokenizer(texts, vocab_size=512)


@pytest.fixture(scope="module")
def hf_tok(tok, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tok")
    save_tokenizer(tok, str(directory))
    return load_tokenizer(str(directory))


def test_special_token_ids(tok):
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>", "<pad>")] == [0, 1, 2, 3]
    assert (UNK_ID, BOS_ID, EOS_ID, PAD_ID) == (0, 1, 2, 3)


def test_vocab_size_and_determinism(tok, texts):
    assert 4 + 256 < tok.get_vocab_size() <= 512
    assert train_tokenizer(texts, vocab_size=512).to_str() == tok.to_str()
    assert train_tokenizer(texts, vocab_size=300).get_vocab_size() == 300


@pytest.mark.parametrize("extra", ["", "héllo  wörld 🙂\n\tend ", "  leading", "{x: [1, 2]}"])
def test_roundtrip_is_exact(tok, texts, extra):
    for text in texts[:300] + [extra]:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert UNK_ID not in ids
        assert tok.decode(ids) == text


def test_digits_are_single_tokens(tok):
    for text in ("37+48=85", "x = 1234;", "{id: 999}"):
        tokens = [t.lstrip("Ġ") for t in tok.encode(text, add_special_tokens=False).tokens]
        digits = [t for t in tokens if any(c.isdigit() for c in t)]
        assert digits and all(len(t) == 1 for t in digits), tokens
    for d in "0123456789":
        assert tok.token_to_id(d) is not None


def test_common_words_are_single_tokens(tok):
    # BPE learnt the small lang vocabulary, so sentences are short in tokens
    assert tok.encode("the small cat sees a red ball .", add_special_tokens=False).tokens == [
        "the", "Ġsmall", "Ġcat", "Ġsees", "Ġa", "Ġred", "Ġball", "Ġ."]


def test_prompt_tokens_are_a_prefix_of_the_sample_tokens(tok):
    # what the model sees at eval time must match what it saw in training
    for prompt, answer in addition_prompts(50, seed=1):
        full = tok.encode(prompt + answer).ids
        assert full[: len(tok.encode(prompt).ids)] == tok.encode(prompt).ids
    for prompt in lang_prompts(50, seed=1):
        full = tok.encode(prompt + " sees a dog .").ids
        assert full[: len(tok.encode(prompt).ids)] == tok.encode(prompt).ids


def test_bos_is_prepended_eos_is_not(tok):
    ids = tok.encode("37+48=").ids
    assert ids[0] == BOS_ID and ids.count(BOS_ID) == 1 and EOS_ID not in ids


def test_bad_input(texts):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(texts, vocab_size=100)
    with pytest.raises(ValueError, match="strings"):
        train_tokenizer(make_corpus(10, seed=0))


def test_saved_files(tok, tmp_path):
    save_tokenizer(tok, str(tmp_path / "out"))
    assert sorted(os.listdir(tmp_path / "out")) == [
        "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert config["padding_side"] == "left"


def test_auto_tokenizer_loads_offline(hf_tok):
    from transformers import PreTrainedTokenizerFast

    assert isinstance(hf_tok, PreTrainedTokenizerFast)
    assert (hf_tok.unk_token_id, hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (
        0, 1, 2, 3)
    assert hf_tok.padding_side == "left"


def test_auto_tokenizer_prepends_bos_and_roundtrips(hf_tok, tok):
    for text in ("37+48=85", "the cats see the dog .", 'x = 7; y = x + 3;'):
        ids = hf_tok(text)["input_ids"]
        assert ids[0] == BOS_ID and ids == tok.encode(text).ids
        # " ." must survive decoding (transformers' space clean-up is off)
        assert hf_tok.decode(ids, skip_special_tokens=True) == text


def test_auto_tokenizer_left_pads_a_batch(hf_tok):
    batch = hf_tok(["37+48=", "the small cat sees a red ball ."], padding=True)
    assert set(batch) == {"input_ids", "attention_mask"}  # no token_type_ids for the model
    short, long = batch["input_ids"]
    n_pad = len(long) - len(hf_tok("37+48=")["input_ids"])
    assert n_pad > 0
    assert short[:n_pad] == [PAD_ID] * n_pad and short[n_pad] == BOS_ID
    assert batch["attention_mask"][0] == [0] * n_pad + [1] * (len(short) - n_pad)
    assert long[0] == BOS_ID and PAD_ID not in long
