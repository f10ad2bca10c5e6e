"""The small package helpers notebooks 07, 09 and 10 use instead of plumbing of their own."""
import torch
import transformers

from mixtral_edu.tiny import evaluate
from mixtral_edu.tiny.corpus import make_corpus
from mixtral_edu.tiny.pretrained import load_tiny
from mixtral_edu.viz.source import string_literals


def test_domain_loss_is_transformers_loss_on_the_same_samples():
    model, tok = load_tiny()
    hf_model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**model.config.to_dict())).eval()
    hf_model.load_state_dict(model.state_dict(), strict=True)
    texts = [t for _, t in make_corpus(5, seed=3, domains=("lang",))]
    batch = tok(texts, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        want = float(hf_model(**batch, labels=labels, use_cache=False).loss)
    got = evaluate.domain_loss(model, tok, "lang", n=5, seed=3)
    assert abs(got - want) < 1e-5
    assert got == evaluate.domain_loss(model, tok, "lang", n=5, seed=3)      # the same samples every time


def test_chosen_experts_are_the_routers_top_k_of_real_tokens():
    model, tok = load_tiny()
    per_layer = evaluate.chosen_experts(model, tok, "kv", n=3, seed=4)
    texts = [t for _, t in make_corpus(3, seed=4, domains=("kv",))]
    assert len(per_layer) == model.config.num_hidden_layers
    for i, text in enumerate(texts):
        one = tok([text], return_tensors="pt")
        with torch.no_grad():
            logits = model(**one, output_router_logits=True).router_logits        # L x (T, E)
        for layer, chosen in enumerate(per_layer):
            assert torch.equal(chosen[i], logits[layer].topk(model.config.num_experts_per_tok).indices)


def test_repeat_rates_counts_pairs_and_overlap_across_slots():
    chosen = torch.tensor([[0, 1], [0, 2], [3, 0], [4, 5]])     # pairs: same first; overlap only across slots; none
    same_top1, shared_any = evaluate.repeat_rates(chosen)
    assert abs(same_top1 - 1 / 3) < 1e-6 and abs(shared_any - 2 / 3) < 1e-6


def test_string_literals_reads_the_source_without_running_it():
    def warns():
        raise RuntimeError("this is deprecated, use the other one")
    assert string_literals(warns, containing="deprecated") == ["this is deprecated, use the other one"]
    assert string_literals(warns, containing="absent") == []
