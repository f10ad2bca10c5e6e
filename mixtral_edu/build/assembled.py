"""Where a piece is inline code inside a forward, the forward written as a chain of pieces.

RMSNorm, attention's softmax, routing, dispatch and the greedy step are not functions of
the model: they are lines inside `MixtralRMSNorm.forward`, `MixtralAttention.forward`,
`MixtralSparseMoeBlock.forward` and the loop of `generate`. To plug one in, its slot is the
forward around it, and the forward is replaced (on the instance only) by the one here: the
same statements in the same order, with the piece called as a function. The pieces a forward
uses that you did not plug in are ours, below (`attention_weights`, `route`, `dispatch`: each
the lines of transformers 4.41.2 it stands for). Function pieces (`repeat_kv`,
`apply_rotary_pos_emb`) are looked up in the modeling modules at call time, so yours are used
when they are plugged too. Every hook point fires as in the model, except the ones that sit
inside a piece (`hook_attn_scores`, `hook_router_probs`): your function does not expose them.

With our pieces in every place these forwards give the model's numbers (tested against
transformers 4.41.2).
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..modeling import attention as attention_module
from ..modeling.generation import as_id_list, prepare_attention_mask_for_generation
from .errors import PieceError

MSG_GREEDY_ONLY = ("Your greedy_step is plugged in, so generate runs greedy decoding with a cache, step by step "
                   "through your function; it cannot honour {options}. Take greedy_step out of the plugged "
                   "pieces to use them.")


# -- our pieces, for the places you have not plugged --------------------------------------------

def attention_weights(query_states: torch.Tensor, key_states: torch.Tensor,
                      attention_mask: Optional[torch.Tensor]) -> torch.Tensor:
    """q (B, H, T, D), k (B, H, S, D) (already repeated), mask (B, 1, T, S) additive -> (B, H, T, S)."""
    attn_weights = torch.matmul(query_states, key_states.transpose(2, 3)) / math.sqrt(query_states.shape[-1])
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    # softmax in fp32 whatever the model dtype, then back
    return F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query_states.dtype)


def route(router_logits: torch.Tensor, top_k: int):
    """router_logits (N, E) -> routing_weights (N, K) in the logits' dtype, selected_experts (N, K)."""
    routing_weights = F.softmax(router_logits, dim=1, dtype=torch.float)
    routing_weights, selected_experts = torch.topk(routing_weights, top_k, dim=-1)
    routing_weights /= routing_weights.sum(dim=-1, keepdim=True)
    return routing_weights.to(router_logits.dtype), selected_experts


def dispatch(hidden_states: torch.Tensor, routing_weights: torch.Tensor, selected_experts: torch.Tensor,
             experts) -> torch.Tensor:
    """Every expert on the tokens that chose it, weighted, summed back per token: (N, C) -> (N, C)."""
    final_hidden_states = torch.zeros_like(hidden_states)
    # (N, K, E) one-hot -> (E, K, N)
    expert_mask = F.one_hot(selected_experts, num_classes=len(experts)).permute(2, 1, 0)
    for expert_idx, expert_layer in enumerate(experts):
        idx, top_x = torch.where(expert_mask[expert_idx])
        current = expert_layer(hidden_states[top_x]) * routing_weights[top_x, idx, None]   # (n_e, C)
        final_hidden_states.index_add_(0, top_x, current.to(hidden_states.dtype))
    return final_hidden_states


# -- forwards around inline pieces --------------------------------------------------------------

def rms_norm_forward(norm, rms_norm: Callable) -> Callable:
    """MixtralRMSNorm.forward: the whole forward is the piece."""
    def forward(hidden_states):
        return rms_norm(hidden_states, norm.weight, norm.variance_epsilon)
    return forward


def attention_forward(attn, weights_fn: Callable) -> Callable:
    """MixtralAttention.forward (eager) with the scores -> masked softmax step as a piece."""
    def forward(hidden_states, attention_mask=None, position_ids=None, past_key_value=None,
                output_attentions=False, use_cache=False):
        bsz, q_len, _ = hidden_states.size()
        # (B, T, C) -> (B, T, heads, D) -> (B, heads, T, D)
        split = lambda x, heads: x.view(bsz, q_len, heads, attn.head_dim).transpose(1, 2)  # noqa: E731
        query_states = split(attn.q_proj(hidden_states), attn.num_heads)
        key_states = split(attn.k_proj(hidden_states), attn.num_key_value_heads)
        value_states = split(attn.v_proj(hidden_states), attn.num_key_value_heads)

        kv_seq_len = q_len
        if past_key_value is not None:
            kv_seq_len += past_key_value.get_usable_length(q_len, attn.layer_idx)
        cos, sin = attn.rotary_emb(value_states, seq_len=kv_seq_len)                    # (S, D) each
        query_states, key_states = attention_module.apply_rotary_pos_emb(
            query_states, key_states, cos, sin, position_ids)
        query_states, key_states = attn.hook_q(query_states), attn.hook_k(key_states)
        value_states = attn.hook_v(value_states)
        if past_key_value is not None:
            key_states, value_states = past_key_value.update(
                key_states, value_states, attn.layer_idx, {"sin": sin, "cos": cos})
        key_states = attention_module.repeat_kv(key_states, attn.num_key_value_groups)   # (B, H, S, D)
        value_states = attention_module.repeat_kv(value_states, attn.num_key_value_groups)

        weights = weights_fn(query_states, key_states, attention_mask)                  # (B, H, T, S)
        weights = F.dropout(weights, p=attn.attention_dropout, training=attn.training)
        weights = attn.hook_pattern(weights)
        # (B, H, T, D) -> (B, T, H, D) -> (B, T, H*D)
        out = torch.matmul(weights, value_states).transpose(1, 2).contiguous()
        out = attn.o_proj(attn.hook_z(out.reshape(bsz, q_len, attn.num_heads * attn.head_dim)))
        return out, (weights if output_attentions else None), past_key_value
    return forward


def moe_forward(block, route_fn: Callable, dispatch_fn: Callable) -> Callable:
    """MixtralSparseMoeBlock.forward with routing and dispatch as pieces."""
    def forward(hidden_states):
        batch_size, sequence_length, hidden_dim = hidden_states.shape
        if block.training and block.jitter_noise > 0:
            hidden_states = hidden_states * torch.empty_like(hidden_states).uniform_(
                1.0 - block.jitter_noise, 1.0 + block.jitter_noise)
        hidden_states = hidden_states.view(-1, hidden_dim)                                # (N, C)
        router_logits = block.hook_router_logits(block.gate(hidden_states))               # (N, E)
        routing_weights, selected_experts = route_fn(router_logits, block.top_k)          # (N, K) each
        selected_experts = block.hook_topk_indices(selected_experts)
        routing_weights = block.hook_topk_weights(routing_weights)
        out = dispatch_fn(hidden_states, routing_weights, selected_experts, block.experts)  # (N, C)
        return block.hook_out(out.reshape(batch_size, sequence_length, hidden_dim)), router_logits
    return forward


# -- adapters around the model's own functions ---------------------------------------------------

def with_position_ids(prepare: Callable, position_ids_fn: Callable) -> Callable:
    """prepare_inputs_for_generation as it is, its position ids then made by your function."""
    def prepare_inputs_for_generation(input_ids, past_key_values=None, attention_mask=None, **kwargs):
        inputs = prepare(input_ids, past_key_values=past_key_values, attention_mask=attention_mask, **kwargs)
        if attention_mask is not None and kwargs.get("position_ids") is None:
            fed = inputs["input_ids"] if inputs.get("input_ids") is not None else inputs["inputs_embeds"]
            inputs["position_ids"] = position_ids_fn(inputs["attention_mask"], fed.shape[1])   # (B, T)
        return inputs
    return prepare_inputs_for_generation


def with_mask(ours: Callable, build_4d_mask: Callable) -> Callable:
    """prepare_4d_causal_attention_mask(attention_mask, input_shape, inputs_embeds, P, sliding_window)
    -> your build_4d_mask(attention_mask, q_len, past_len, sliding_window, dtype).

    Yours builds every mask made from a 2D padding mask (generate always passes one); a call
    with no mask or a ready 4D mask is ours, as before.
    """
    def prepare_4d_causal_attention_mask(attention_mask, input_shape, inputs_embeds, past_key_values_length,
                                         sliding_window=None):
        if attention_mask is None or attention_mask.dim() != 2:
            return ours(attention_mask, input_shape, inputs_embeds, past_key_values_length, sliding_window)
        return build_4d_mask(attention_mask, input_shape[1], past_key_values_length, sliding_window,
                             inputs_embeds.dtype)
    return prepare_4d_causal_attention_mask


def greedy_generate(model, greedy_step: Callable) -> Callable:
    """generate's loop, greedy, with a cache: your greedy_step makes each step's tokens.

    The bookkeeping around it is generate's: finished rows get the pad id, the mask grows by a
    column of ones per step, the loop ends at max length or when every row has emitted eos.
    """
    def generate(input_ids=None, attention_mask=None, max_new_tokens=None, max_length=None,
                 eos_token_id="config", pad_token_id="config", do_sample=False, use_cache=True, **options):
        asked = [f"{k}={v!r}" for k, v in options.items() if v not in (None, False)]
        asked += (["do_sample=True"] if do_sample else []) + ([] if use_cache else ["use_cache=False"])
        if asked:
            raise PieceError(MSG_GREEDY_ONLY.format(options=", ".join(asked)), "greedy_step")
        eos_ids = as_id_list(model.config.eos_token_id if eos_token_id == "config" else eos_token_id)
        pad_id = model.config.pad_token_id if pad_token_id == "config" else pad_token_id
        pad_id = eos_ids[0] if pad_id is None and eos_ids else pad_id
        if max_new_tokens is not None:
            max_length = input_ids.shape[1] + max_new_tokens
        max_length = 20 if max_length is None else max_length
        if attention_mask is None:
            attention_mask = prepare_attention_mask_for_generation(input_ids, pad_id, eos_ids)
        unfinished = input_ids.new_ones(input_ids.shape[0])                                # (B,)
        stop = torch.tensor(eos_ids or [], dtype=torch.long, device=input_ids.device)
        past_key_values = None
        while input_ids.shape[1] < max_length:
            next_tokens, past_key_values = greedy_step(model, input_ids, attention_mask, past_key_values)
            if eos_ids:  # rows that already finished receive pad
                next_tokens = next_tokens * unfinished + pad_id * (1 - unfinished)
            next_tokens = model.hook_next_tokens(next_tokens)                              # (B,)
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(next_tokens), 1))], dim=-1)
            unfinished = unfinished & ~torch.isin(next_tokens, stop)
            if eos_ids and unfinished.max() == 0:
                break
        return input_ids
    return generate
