"""Reference solutions of notebook 03 (MixtralForCausalLM.forward). Try the exercises first."""
import torch
import torch.nn.functional as F


def shifted_cross_entropy(logits, labels):
    """The given function averaged per row, then over rows: a row with fewer kept labels weighed as much as
    a full one, and a row with none gave NaN. One cross-entropy over the whole flattened batch fixes both."""
    V = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1, :].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100)


def masked_load_balancing_loss(router_logits, num_experts, top_k, attention_mask):
    """Like the unmasked loss, but every average runs over real tokens only; the (B, T) mask is repeated
    once per layer, because the logits are L blocks of B*T rows."""
    logits = torch.cat(router_logits, dim=0)                                 # (L*B*T, E)
    probs = logits.softmax(dim=-1)
    chosen = F.one_hot(probs.topk(top_k, dim=-1).indices, num_experts).float()   # (L*B*T, K, E)
    n_layers = logits.shape[0] // attention_mask.numel()
    keep = attention_mask.reshape(-1).repeat(n_layers).float()               # (L*B*T,): layer after layer
    f = (chosen * keep[:, None, None]).sum(dim=0) / keep.sum()               # (K, E)
    P = (probs * keep[:, None]).sum(dim=0) / keep.sum()                      # (E,)
    return num_experts * (f * P).sum()


def output_names(labels, output_router_logits, use_cache, output_hidden_states, output_attentions):
    """Fixed order, absent entries left out; aux_loss comes with the router logits, labels or not."""
    present = [("loss", labels), ("aux_loss", output_router_logits), ("logits", True),
               ("past_key_values", use_cache), ("hidden_states", output_hidden_states),
               ("attentions", output_attentions), ("router_logits", output_router_logits)]
    return [name for name, there in present if there]
