"""Plausible wrong answers to notebook 03's exercises: each gets NOT YET with a hint naming the mistake."""
import torch
import torch.nn.functional as F

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import causal_lm as ex
from mixtral_edu.tiny.pretrained import load_tiny


# -- 03.1 -------------------------------------------------------------------------------------------
def per_row_mean(logits, labels):          # the untouched stub's bug
    V = logits.shape[-1]
    rows = [F.cross_entropy(logits[b, :-1, :].reshape(-1, V), labels[b, 1:].reshape(-1), ignore_index=-100)
            for b in range(logits.shape[0])]
    return torch.stack(rows).mean()


def per_row_nanmean(logits, labels):
    return torch.stack([F.cross_entropy(logits[b, :-1], labels[b, 1:], ignore_index=-100)
                        for b in range(logits.shape[0])]).nanmean()


def no_shift(logits, labels):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100)


def wrong_way(logits, labels):
    return F.cross_entropy(logits[:, 1:].reshape(-1, logits.shape[-1]), labels[:, :-1].reshape(-1), ignore_index=-100)


def summed(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, reduction="sum")


def ignored_counted(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1).clamp(min=0))


def all_pairs(logits, labels):
    return summed(logits, labels) / labels[:, 1:].numel()


def per_token(logits, labels):
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                           ignore_index=-100, reduction="none")


# -- 03.2 -------------------------------------------------------------------------------------------
def lb(**mistake):
    def masked_load_balancing_loss(router_logits, num_experts, top_k, attention_mask):
        return ex._lb_variant(router_logits, num_experts, top_k, attention_mask, **mistake)
    return masked_load_balancing_loss


def lb_in_bf16(router_logits, num_experts, top_k, attention_mask):
    return ex._lb_variant(tuple(g.bfloat16() for g in router_logits), num_experts, top_k, attention_mask).float()


# -- 03.3 -------------------------------------------------------------------------------------------
def names(order=("loss", "aux_loss", "logits", "past_key_values", "hidden_states", "attentions", "router_logits"),
          aux_needs_labels=False, always_loss=False):
    def output_names(labels, output_router_logits, use_cache, output_hidden_states, output_attentions):
        there = {"loss": labels or always_loss,
                 "aux_loss": output_router_logits and (labels or not aux_needs_labels), "logits": True,
                 "past_key_values": use_cache, "hidden_states": output_hidden_states,
                 "attentions": output_attentions, "router_logits": output_router_logits}
        return [n for n in order if there[n]]
    return output_names


MUTANTS = [
    Mutant("03.1", "the untouched stub: mean of row means", per_row_mean, ["weigh", "few labels"]),
    Mutant("03.1", "mean of row means, NaN rows skipped", per_row_nanmean, ["weigh"]),
    Mutant("03.1", "no shift", no_shift, ["t + 1"]),
    Mutant("03.1", "shifted the wrong way", wrong_way, ["other way"]),
    Mutant("03.1", "sum", summed, ["sum or a mean"]),
    Mutant("03.1", "-100 turned into token 0", ignored_counted, ["skip"]),
    Mutant("03.1", "divided by all pairs", all_pairs, ["divide by"]),
    Mutant("03.1", "per-token losses", per_token, ["one number"]),
    Mutant("03.1", "NaN", lambda lo, la: per_row_mean(lo, la) * float("nan"), ["NaN"]),
    Mutant("03.2", "mask ignored", lb(f_mask=False, p_mask=False), ["pads were counted"]),
    Mutant("03.2", "mask on f only", lb(p_mask=False), ["not to P"]),
    Mutant("03.2", "mask on P only", lb(f_mask=False), ["not to f"]),
    Mutant("03.2", "mask repeated per entry, not per layer", lb(layout="interleaved"), ["per LAYER"]),
    Mutant("03.2", "divided by every row", lb(denominator="all"), ["number of real tokens"]),
    Mutant("03.2", "mean of per-layer losses", lb(per_layer=True), ["concatenate"]),
    Mutant("03.2", "no factor E", lb(times_e=False), ["multiply by the number of experts"]),
    Mutant("03.2", "P from logits", lb(softmax=False), ["PROBABILITY"]),
    Mutant("03.2", "f from the top choice only", lb(top1=True), ["all K choices"]),
    Mutant("03.2", "a Python float", lambda *a: float(ex.reference_masked_lb(*a)), ["0-dim tensor"]),
    Mutant("03.3", "hidden_states before past_key_values",
           names(order=("loss", "aux_loss", "logits", "hidden_states", "past_key_values", "attentions",
                        "router_logits")), ["wrong order"]),
    Mutant("03.3", "router_logits right after aux_loss",
           names(order=("loss", "aux_loss", "router_logits", "logits", "past_key_values", "hidden_states",
                        "attentions")), ["wrong order"]),
    Mutant("03.3", "aux_loss only with labels", names(aux_needs_labels=True), ["with or without labels"]),
    Mutant("03.3", "loss always there", names(always_loss=True), ["only when labels"]),
    Mutant("03.3", "logits first", names(order=("logits", "loss", "aux_loss", "past_key_values", "hidden_states",
                                                "attentions", "router_logits")), ["wrong order"]),
    Mutant("03.3", "a string", lambda *flags: "loss, logits", ["list of field names"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)


def test_the_reference_loss_is_the_models():
    """shifted_cross_entropy is what MixtralForCausalLM.forward computes, and the masked aux loss is the model's
    aux_loss for a padded batch (on the tiny model)."""
    model, tok = load_tiny()
    batch = tok(["the small cat sees a red ball .", "37+48="], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    with torch.no_grad():
        out = model(**batch, labels=labels, output_router_logits=True)
    assert torch.allclose(ex.shifted_cross_entropy(out.logits, labels), out.loss - model.config.router_aux_loss_coef
                          * out.aux_loss, atol=1e-5)
    assert torch.allclose(ex.reference_masked_lb(out.router_logits, model.config.num_local_experts,
                                                 model.config.num_experts_per_tok, batch.attention_mask),
                          out.aux_loss, atol=1e-6)
    assert not torch.allclose(ex._lb_variant(out.router_logits, model.config.num_local_experts,
                                             model.config.num_experts_per_tok, batch.attention_mask,
                                             f_mask=False, p_mask=False), out.aux_loss, atol=1e-4)
