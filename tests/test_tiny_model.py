"""The shipped tiny model: loads both ways, generates deterministically, meets its floors.

Held-out prompts come from `evaluate.EVAL_SEED`, not the training seed.
"""
import json
import os

import pytest
import torch

import mixtral_edu
from mixtral_edu import evaluate
from mixtral_edu.pretrained import TINY_DIR
from mixtral_edu.train import Recipe, train


@pytest.fixture(scope="module")
def tiny():
    return mixtral_edu.load_tiny()


def test_directory_is_a_small_hf_model_dir():
    names = set(os.listdir(TINY_DIR))
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "generation_config.json", "README.md", "training.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pth")) for n in names)
    size = sum(os.path.getsize(os.path.join(TINY_DIR, n)) for n in names)
    assert size <= 10 * 1024 * 1024


def test_every_architecture_feature_is_live(tiny):
    cfg = tiny[0].config
    recipe = json.load(open(os.path.join(TINY_DIR, "training.json")))["recipe"]
    assert cfg.num_hidden_layers >= 3 and cfg.num_local_experts == 8 and cfg.num_experts_per_tok == 2
    assert cfg.num_key_value_heads < cfg.num_attention_heads            # grouped-query attention
    assert cfg.sliding_window is not None and cfg.sliding_window < recipe["seq_len"]


def test_transformers_loads_the_same_directory_with_equal_logits(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = tiny
    theirs = AutoModelForCausalLM.from_pretrained(TINY_DIR, attn_implementation=model.config._attn_implementation)
    their_tok = AutoTokenizer.from_pretrained(TINY_DIR)
    texts = ["12+34=", "the small cat sees"]
    a, b = tok(texts, return_tensors="pt", padding=True), their_tok(texts, return_tensors="pt", padding=True)
    assert torch.equal(a.input_ids, b.input_ids) and their_tok.padding_side == "left"
    with torch.no_grad():
        ours = model(**a).logits
        ref = theirs(**b).logits
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_generation_is_deterministic(tiny):
    model, tok = tiny
    batch = tok(["21+45=", "a big dog"], return_tensors="pt", padding=True)
    first = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=8)
    second = model.generate(batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=8)
    assert torch.equal(first, second)


def test_grammar_floor_on_held_out_prompts(tiny):
    model, tok = tiny
    gram = evaluate.grammar_rate(model, tok, n=100)
    assert gram["grammatical"] >= 0.90, gram["examples"]


def test_addition_answers_are_well_formed_sums_of_digits(tiny):
    # the answer is a number and the model stops with </s>; its accuracy is measured in the model card
    model, tok = tiny
    add = evaluate.addition_accuracy(model, tok, n=50)
    assert all(e.split("=")[1].isdigit() for e in add["examples"]), add["examples"]


def test_domains_route_differently(tiny):
    model, tok = tiny
    stats = evaluate.domain_stats(model, tok, n_per_domain=40)
    assert evaluate.routing_summary(stats)["mean_total_variation"] >= 0.1


def test_a_short_training_run_lowers_the_loss(tmp_path):
    r = Recipe(steps=12, batch_size=8, seq_len=32, n_samples=600, warmup=2, num_hidden_layers=2,
               hidden_size=32, intermediate_size=32, sliding_window=16, vocab_size=300, lr=1e-2)
    curves = train(r, str(tmp_path), log_every=1, progress=False)
    first, last = curves["ce_loss"][0], sum(curves["ce_loss"][-3:]) / 3
    assert last < first - 0.5
    assert os.path.isfile(tmp_path / "training_curves.png")
    reloaded = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert reloaded.config.num_hidden_layers == 2
