"""Reference solutions of notebook 07 (the sparse MoE block). Not shown in the student notebook."""
import torch
import torch.nn.functional as F

from mixtral_edu import disable_expert, hooks
from mixtral_edu.tiny.evaluate import domain_loss


def route(router_logits, top_k):
    """07.1: the bug was a softmax in the logits' dtype; run it in float32, as the block does."""
    probs = F.softmax(router_logits.float(), dim=-1)                          # (N, E), float32
    weights, experts = torch.topk(probs, top_k, dim=-1)                       # (N, K) each, best first
    weights = weights / weights.sum(dim=-1, keepdim=True)                     # the K kept weights sum to 1
    return weights.to(router_logits.dtype), experts


def dispatch(x, routing_weights, selected_experts, experts):
    """07.2: two bugs: the output buffer must have x's dtype, and contributions must be added, not assigned."""
    final = torch.zeros_like(x)                                                # (N, C), x's dtype
    expert_mask = F.one_hot(selected_experts, num_classes=len(experts)).permute(2, 1, 0)  # (E, K, N)
    for e, expert in enumerate(experts):
        slot, token = torch.where(expert_mask[e])                              # (n_e,), (n_e,)
        out = expert(x[token]) * routing_weights[token, slot, None]            # (n_e, C)
        final.index_add_(0, token, out.to(x.dtype))                            # add: a token has K contributions
    return final


def dispatch_grouped(x, routing_weights, selected_experts, experts):
    """07.3: sort the N*K (token, expert) pairs by expert once; each expert runs on one contiguous slice."""
    top_k = selected_experts.shape[1]
    flat_expert = selected_experts.reshape(-1)                                 # (N*K,) pair p = n * K + k
    order = torch.argsort(flat_expert, stable=True)                            # pairs grouped by expert
    token = order // top_k                                                     # (N*K,) token of each sorted pair
    weight = routing_weights.reshape(-1)[order, None]                          # (N*K, 1) its weight
    counts = torch.bincount(flat_expert, minlength=len(experts)).tolist()      # (E,) rows per expert
    rows = x[token]                                                            # (N*K, C), one gather
    outs, start = [], 0
    for expert, n in zip(experts, counts):
        outs.append(expert(rows[start:start + n]))                             # (n_e, C), a view of rows
        start += n
    final = torch.zeros_like(x)                                                # (N, C)
    final.index_add_(0, token, (torch.cat(outs) * weight).to(x.dtype))         # one scatter, summing
    return final


def loss_change(model, tokenizer, layer, expert, domain):
    """07.4: the domain's loss with the expert switched off, minus the loss with it on."""
    with_expert = domain_loss(model, tokenizer, domain)
    with hooks(model, disable_expert(layer, expert)):
        without = domain_loss(model, tokenizer, domain)
    return without - with_expert
