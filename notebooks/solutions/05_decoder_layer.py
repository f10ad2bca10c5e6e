"""Reference solutions of notebook 05 (the decoder layer). Not imported by the notebook."""
import torch


def rms_norm(x, weight, eps):
    """The two bugs: eps was a number written into the code (use the argument), and the weight was
    multiplied in float32 before the single cast (transformers casts back first, then multiplies:
    in bfloat16 the two orders round differently)."""
    input_dtype = x.dtype
    x32 = x.to(torch.float32)
    normalised = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + eps)
    return weight * normalised.to(input_dtype)


def decoder_layer(layer, hidden_states, attention_mask, position_ids):
    """Pre-norm: each sublayer reads a normalised copy of the stream; its raw output is added back."""
    residual = hidden_states
    normed = layer.input_layernorm(hidden_states)
    attn_out = layer.self_attn(normed, attention_mask=attention_mask, position_ids=position_ids)[0]
    resid_mid = residual + attn_out
    moe_out = layer.block_sparse_moe(layer.post_attention_layernorm(resid_mid))[0]
    return resid_mid + moe_out


def logit_contributions(model, acts, b, t, target_id):
    """The stream is a sum of parts; the final RMSNorm scales the whole sum by one number (1 / its RMS)
    and then by its weight, and lm_head is linear: so each part's share of the logit is
    (part / rms(stream) * norm.weight) . lm_head.weight[target_id], and the shares add up to the logit."""
    layers = model.config.num_hidden_layers
    parts = [acts["model.layers.0.hook_resid_pre"][b, t]]             # the embeddings
    for i in range(layers):
        parts.append(acts[f"model.layers.{i}.hook_attn_out"][b, t])
        parts.append(acts[f"model.layers.{i}.block_sparse_moe.hook_out"][b, t])
    stream = acts[f"model.layers.{layers - 1}.hook_resid_post"][b, t]   # (C,) = sum(parts)
    final_norm = model.model.norm
    scale = final_norm.weight / torch.sqrt(stream.pow(2).mean() + final_norm.variance_epsilon)   # (C,)
    direction = model.lm_head.weight[target_id] * scale                                          # (C,)
    return torch.stack([part @ direction for part in parts])                                     # (2L + 1,)
