"""Reference solutions of notebook 04 (`MixtralModel.forward`). Not imported by the notebook."""
import torch


def sdpa_predictions():
    """The SDPA builder returns None only when is_causal (or nothing) is enough: no pad anywhere,
    T = S or T = 1, and no window or one longer than the key length (S < W, not S <= W + 1)."""
    return {
        "prefill T=S=6, no padding": False,
        "prefill T=S=6, left padding": True,
        "decode T=1 after P=6, no padding": False,
        "decode T=1 after P=6, left padding": True,
        "chunk T=3 after P=4, no padding": True,
        "prefill T=S=6, no 2D mask at all": False,
        "prefill T=S=6, window W=8": False,
        "prefill T=S=6, window W=6 (hides nothing)": True,
        "prefill T=S=6, window W=5 (hides nothing)": True,
        "prefill T=S=6, window W=3": True,
    }


def build_4d_mask(attention_mask, q_len, past_len=0, sliding_window=None, dtype=torch.float32):
    """Visible = causal (key <= absolute query position) & inside the window & a real key;
    then 0 where visible and finfo(dtype).min where not (never -inf: a row may hide every key)."""
    key_pos = torch.arange(attention_mask.shape[1])                # (S,)
    query_pos = past_len + torch.arange(q_len)                     # (T,) absolute positions
    allowed = key_pos[None, :] <= query_pos[:, None]               # (T, S) causal
    if sliding_window is not None:
        allowed &= key_pos[None, :] >= query_pos[:, None] - sliding_window   # W + 1 keys in 4.41.2
    allowed = allowed[None, None, :, :] & attention_mask.bool()[:, None, None, :]   # (B, 1, T, S)
    hidden = torch.tensor(torch.finfo(dtype).min, dtype=dtype)
    return torch.where(allowed, torch.tensor(0, dtype=dtype), hidden)


def named_outputs(outputs, use_cache, output_hidden_states, output_attentions, output_router_logits):
    """The tuple holds only the entries that are on, in the fixed order: walk the order and
    consume one tuple entry per name that is on."""
    order = [("last_hidden_state", True), ("past_key_values", use_cache),
             ("hidden_states", output_hidden_states), ("attentions", output_attentions),
             ("router_logits", output_router_logits)]
    remaining = list(outputs)
    named = {}
    for name, present in order:
        named[name] = remaining.pop(0) if present else None
    return named
