"""Reference solutions of chapter 12 (build it yourself): one function per piece, same names as the stubs.

The chapter's code never imports this file. `mixtral_edu.build.chapter` loads it in place of the
stubs only when the environment variable MIXTRAL_EDU_SOLUTIONS is set (CI and the docs site).
"""
import math

import torch
import torch.nn.functional as F


def greedy_step(model, input_ids, attention_mask, past_key_values):
    """Let the model cut out this step's tokens and positions, run it, take the best last-position id."""
    inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                 attention_mask=attention_mask, use_cache=True)
    outputs = model(**inputs, return_dict=True)
    return outputs.logits[:, -1, :].argmax(dim=-1), outputs.past_key_values


def position_ids_from_mask(attention_mask, num_new):
    """Count the real tokens so far: the first real token of a row is 0; a pad gets 1 (any valid
    row of the rotary table would do: its query is thrown away). Keep this step's num_new."""
    counted = torch.cumsum(attention_mask.long(), dim=-1) - 1
    counted = torch.where(attention_mask == 0, torch.ones_like(counted), counted)
    return counted[:, attention_mask.shape[1] - num_new:]


def load_balancing_loss_func(gate_logits, num_experts, top_k, attention_mask):
    """E * sum over experts of (share of routing slots) * (mean router probability), real tokens only.

    The dtypes follow transformers: the slot shares in float32, the probabilities in the logits' dtype
    (a bfloat16 model averages them in bfloat16)."""
    stacked = torch.cat(tuple(gate_logits), dim=0)                          # (L*N, E), layer after layer
    probs = torch.softmax(stacked, dim=-1)
    slots = F.one_hot(torch.topk(probs, top_k, dim=-1).indices, num_experts).float()   # (L*N, K, E)
    if attention_mask is None:
        share, mean_prob = slots.mean(dim=0), probs.mean(dim=0)             # (K, E), (E,)
    else:  # each layer saw the same (B, T) tokens, in the same order; 0/1 integers keep probs' dtype
        real = attention_mask.reshape(-1).repeat(len(gate_logits)).to(stacked.device)   # (L*N,)
        share = (slots * real[:, None, None]).sum(dim=0) / real.sum()        # (K, E)
        mean_prob = (probs * real[:, None]).sum(dim=0) / real.sum()         # (E,)
    return num_experts * torch.sum(share * mean_prob[None, :])


def build_4d_mask(attention_mask, q_len, past_len, sliding_window, dtype):
    """Key j is visible to query i (absolute position past_len + i) when j <= past_len + i, it lies
    within the window (at most sliding_window positions back) and it is a real token."""
    keys = torch.arange(attention_mask.shape[1], device=attention_mask.device)[None, :]       # (1, S)
    queries = torch.arange(past_len, past_len + q_len, device=attention_mask.device)[:, None]  # (T, 1)
    ok = keys <= queries
    if sliding_window is not None:
        ok = ok & (queries - keys <= sliding_window)
    ok = ok[None, None, :, :] & attention_mask[:, None, None, :].bool()                      # (B, 1, T, S)
    blocked = torch.full(ok.shape, torch.finfo(dtype).min, dtype=dtype, device=attention_mask.device)
    return torch.where(ok, torch.zeros((), dtype=dtype), blocked)


def rms_norm(hidden_states, weight, eps):
    """Divide by the root mean square (in float32), cast back to the input's dtype, then scale."""
    x = hidden_states.to(torch.float32)
    x = x * torch.rsqrt(torch.mean(x * x, dim=-1, keepdim=True) + eps)
    return weight * x.to(hidden_states.dtype)


def rotate_half(x):
    """Halves (x1, x2) -> (-x2, x1): each pair (d, d + D/2) turned by 90 degrees."""
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q, k, cos, sin, position_ids):
    """Pick each token's row of the tables by its position, the same for every head, and rotate."""
    c = cos[position_ids].unsqueeze(1)   # (B, T, D) -> (B, 1, T, D)
    s = sin[position_ids].unsqueeze(1)
    return q * c + rotate_half(q) * s, k * c + rotate_half(k) * s


def repeat_kv(hidden_states, n_rep):
    """Each kv head n_rep times in a row: query head h reads kv head h // n_rep."""
    return torch.repeat_interleave(hidden_states, n_rep, dim=1)


def attention_weights(query_states, key_states, attention_mask):
    """Scaled dot products plus the additive mask, softmax over the keys in float32, back to the dtype."""
    scores = query_states @ key_states.transpose(-1, -2) / math.sqrt(query_states.shape[-1])
    if attention_mask is not None:
        scores = scores + attention_mask
    return torch.softmax(scores.to(torch.float32), dim=-1).to(query_states.dtype)


def route(router_logits, top_k):
    """Softmax over all experts in float32, keep the top_k, rescale them to sum to 1, model dtype."""
    probs = torch.softmax(router_logits.to(torch.float32), dim=-1)
    weights, experts = torch.topk(probs, top_k, dim=-1)
    return (weights / weights.sum(dim=-1, keepdim=True)).to(router_logits.dtype), experts


def dispatch(hidden_states, routing_weights, selected_experts, experts):
    """Per expert: the (token, slot) pairs that chose it, its output times that slot's weight, summed in."""
    out = torch.zeros_like(hidden_states)
    for e, expert in enumerate(experts):
        token, slot = torch.nonzero(selected_experts == e, as_tuple=True)
        contribution = expert(hidden_states[token]) * routing_weights[token, slot].unsqueeze(-1)
        out.index_add_(0, token, contribution.to(out.dtype))
    return out
