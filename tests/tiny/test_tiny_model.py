"""The shipped tiny model: loads both ways, generates deterministically, meets its floors.

Held-out prompts come from `evaluate.EVAL_SEED`, not the training seed.
"""
import json
import os

import pytest
import torch

import mixtral_edu
from mixtral_edu.tiny import evaluate
from mixtral_edu.tiny.pretrained import TINY_DIR
from mixtral_edu.tiny.train import Recipe, revive_starved_experts, tiny_config, train_model


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


def test_addition_floor_on_held_out_prompts(tiny):
    model, tok = tiny
    add = evaluate.addition_accuracy(model, tok, n=200)
    assert add["accuracy"] >= 0.95, add["examples"]
    assert all(e.split("=")[1].isdigit() for e in add["examples"]), add["examples"]


@pytest.fixture(scope="module")
def routing(tiny):
    return evaluate.routing_summary(evaluate.domain_stats(*tiny, n_per_domain=60))


def test_no_expert_starves_in_any_layer(routing):
    # the floor: every expert is chosen by at least 2% of the tokens in every layer
    share = torch.tensor(routing["overall_share"])                       # (L, E) share of routing slots
    assert share.shape == (4, 8) and torch.allclose(share.sum(1), torch.ones(4))
    assert routing["min_token_share_overall"] >= 0.02, share
    assert routing["min_token_share_overall"] == pytest.approx(2 * routing["min_expert_share_overall"])


def test_domains_route_differently(routing):
    assert routing["mean_total_variation"] >= 0.1


def test_the_card_reports_the_measured_numbers():
    card = open(os.path.join(TINY_DIR, "README.md")).read()
    metrics = json.load(open(os.path.join(TINY_DIR, "metrics.json")))
    assert f"{metrics['addition']['accuracy']:.1%} of {metrics['addition']['n']}" in card
    assert f"{metrics['routing']['min_token_share_overall']:.1%}" in card
    assert "| arith | 0 |" in card and "| kv | 3 |" in card              # usage by domain and layer


def test_reviving_a_starved_expert_copies_the_busiest_one():
    from mixtral_edu.tiny.tokenizer import train_tokenizer
    r = Recipe(num_hidden_layers=2, hidden_size=32, intermediate_size=32, vocab_size=300)
    tok = train_tokenizer(["12+34=46", "the cat sees a dog ."] * 20, vocab_size=300)
    model = mixtral_edu.MixtralForCausalLM(tiny_config(r, tok))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 5, 6, 7]]), labels=torch.tensor([[1, 5, 6, 7]]), output_router_logits=True).loss.backward()
    opt.step()
    running = torch.full((2, 8), 0.125)
    running[1, 3], running[1, 6] = 0.01, 0.30                            # layer 1: expert 3 starves, 6 is busiest
    events = revive_starved_experts(model, opt, running, below=0.04, step=7, gen=torch.Generator().manual_seed(0))
    assert events == [{"step": 7, "layer": 1, "expert": 3, "copied_from": 6}]
    moe = model.model.layers[1].block_sparse_moe
    for name in ("w1", "w2", "w3"):
        a, b = getattr(moe.experts[3], name).weight, getattr(moe.experts[6], name).weight
        assert torch.equal(a, b) and torch.equal(opt.state[a]["exp_avg"], opt.state[b]["exp_avg"])
    gate = moe.gate.weight.detach()
    assert not torch.equal(gate[3], gate[6]) and torch.allclose(gate[3], gate[6], atol=0.5 * float(gate[6].abs().max()))
    assert running[1, 3] == running[1, 6] == pytest.approx(0.15)
    assert revive_starved_experts(model, opt, running, below=0.04, step=8, gen=torch.Generator()) == []


def test_a_short_training_run_lowers_the_loss(tmp_path):
    r = Recipe(steps=12, batch_size=8, seq_len=32, n_samples=600, warmup=2, num_hidden_layers=2,
               hidden_size=32, intermediate_size=32, sliding_window=16, vocab_size=300, lr=1e-2)
    curves = train_model(r, str(tmp_path), log_every=1, progress=False)
    first, last = curves["ce_loss"][0], sum(curves["ce_loss"][-3:]) / 3
    assert last < first - 0.5
    assert os.path.isfile(tmp_path / "training_curves.png")
    reloaded = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert reloaded.config.num_hidden_layers == 2


def test_experts_no_token_chose_get_no_optimizer_step():
    from mixtral_edu.tiny.train import leave_idle_experts_alone
    torch.manual_seed(0)
    cfg = mixtral_edu.MixtralConfig(vocab_size=50, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, num_key_value_heads=1, num_local_experts=4)
    model = mixtral_edu.MixtralForCausalLM(cfg).train()
    ids = torch.tensor([[5, 7]])                    # 2 tokens x top-2 of 4 experts: at most 4 of 4 slots
    out = model(ids, labels=ids, output_router_logits=True)
    out.loss.backward()
    chosen = [set(torch.topk(lg.softmax(-1), 2).indices.flatten().tolist()) for lg in out.router_logits]
    idle = [(l, e) for l in range(2) for e in range(4) if e not in chosen[l]]
    assert idle, "this batch leaves some expert idle"
    experts = lambda l, e: model.model.layers[l].block_sparse_moe.experts[e]  # noqa: E731
    # the loop ran every expert, so an idle one holds a zero gradient, which AdamW would still act on
    assert all(torch.count_nonzero(p.grad) == 0 for l, e in idle for p in experts(l, e).parameters())
    leave_idle_experts_alone(model, out.router_logits)
    assert all(p.grad is None for l, e in idle for p in experts(l, e).parameters())
    assert all(p.grad is not None for l in range(2) for e in chosen[l] for p in experts(l, e).parameters())


def test_the_recipe_retrains_the_shipped_run_bit_for_bit_at_its_start(tmp_path):
    # The whole recipe (6-16 min) is checked with `python -m mixtral_edu.tiny.train --out DIR --check`;
    # here its first 21 steps (inside the warm-up, where the schedule does not depend on the step
    # count) must give the shipped run's tokenizer, config and logged numbers exactly.
    from mixtral_edu.tiny.train import compare_with
    shipped = json.load(open(os.path.join(TINY_DIR, "training.json")))
    curves = train_model(Recipe(steps=21), str(tmp_path), progress=False)
    assert curves["step"] == [0, 10, 20]
    for key in ("loss", "ce_loss", "aux_loss", "lr", "expert_share"):
        assert curves[key] == shipped["curves"][key][:3], key
    lines, identical = compare_with(str(tmp_path), TINY_DIR)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        assert f"{name}: identical" in lines
    assert "model.safetensors: DIFFERENT" in " ".join(lines) and not identical   # 21 steps are not 2400


def test_the_project_readme_quotes_the_shipped_models_numbers():
    readme = open(os.path.join(os.path.dirname(__file__), "..", "..", "README.md"), encoding="utf-8").read()
    metrics = json.load(open(os.path.join(TINY_DIR, "metrics.json")))
    seconds = json.load(open(os.path.join(TINY_DIR, "training.json")))["curves"]["seconds"]
    assert f"{metrics['addition']['accuracy']:.1%} of\n500" in readme
    assert f"at least {metrics['routing']['min_token_share_overall']:.1%} of the tokens" in readme
    assert f"(total variation {metrics['routing']['mean_total_variation']:.2f})" in readme
    assert f"({seconds:.0f} s on one thread" in readme
