"""Reference solutions of notebook 09 (training the tiny model). Not shown in the student notebook."""
import math

import torch
import torch.nn.functional as F


def lr_schedule(step, recipe):
    """09.1: a linear ramp that reaches lr at step warmup - 1, then half a cosine down to min_lr."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)       # 0 -> 1
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * progress))


def repeat_rates(chosen):
    """09.4: compare each token with the next; for overlap, ask whether their sets of experts intersect."""
    pairs = list(zip(chosen[:-1].tolist(), chosen[1:].tolist()))                  # T - 1 neighbouring pairs
    same_top1 = sum(a[0] == b[0] for a, b in pairs) / len(pairs)
    shared_any = sum(bool(set(a) & set(b)) for a, b in pairs) / len(pairs)
    return same_top1, shared_any


def route_top1(router_logits):
    """09.2: the best expert, weighted by its own probability (no renormalisation, so the router gets a gradient)."""
    probs = F.softmax(router_logits, dim=-1, dtype=torch.float)                    # (N, E), float32
    weights, experts = torch.topk(probs, 1, dim=-1)                                # (N, 1) each
    return weights.to(router_logits.dtype), experts


def per_layer_balancing_loss(gate_logits, num_experts, top_k):
    """09.3: the Switch loss E * sum(f * P) of each layer on its own, averaged over the layers."""
    losses = []
    for logits in gate_logits:                                                     # (N, E) per layer
        probs = F.softmax(logits, dim=-1)                                          # (N, E)
        chosen = torch.topk(probs, top_k, dim=-1).indices                          # (N, K)
        f = F.one_hot(chosen, num_experts).float().mean(dim=0)                     # (K, E) share per slot
        p = probs.mean(dim=0)                                                      # (E,)
        losses.append((f * p[None]).sum() * num_experts)
    return float(torch.stack(losses).mean())
