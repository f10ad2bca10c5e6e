"""One traced run of the tiny model and every view drawn from it (shared by the classroom tests)."""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def run():
    """(model, tokenizer, trace) of a greedy generate on a left-padded batch of two prompts."""
    import torch
    torch.set_num_threads(1)
    from mixtral_edu.tiny.pretrained import load_tiny
    from mixtral_edu.viz.runs import config_values, traced_generate
    model, tok = load_tiny(attn_implementation="eager")
    batch = tok(["the small cat sees", "37+48="], padding=True, return_tensors="pt")
    with config_values(model, sliding_window=8):
        tr, _ = traced_generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=5,
                                eos_token_id=None)
    return model, tok, tr


def figures():
    """{name: plotly figure} of every static view."""
    from mixtral_edu import viz
    from mixtral_edu.tiny.corpus import samples_by_domain
    from mixtral_edu.tiny.evaluate import EVAL_SEED
    model, tok, tr = run()
    return {
        "mask": viz.mask_figure(tr, tokenizer=tok, sliding_window=8),
        "cache": viz.cache_figure(tr, tokenizer=tok, sliding_window=8),
        "routing": viz.routing_figure(tr, tokenizer=tok),
        "balance": viz.balance_figure(viz.balance_stats(model, tok, samples_by_domain(8, EVAL_SEED))),
        "attention": viz.attention_figure(tr, step=0, tokenizer=tok, sliding_window=8),
        "sampling": viz.sampling_figure(tr, step=0, tokenizer=tok, top_k=20, top_p=0.9),
        "callchain": viz.callchain_figure(trace=tr, here="moe"),
    }


def html_views():
    """{name: view} of the views that are HTML (and a live view, exported by its figure)."""
    import transformers.models.mixtral.modeling_mixtral as hf
    from mixtral_edu import viz
    from mixtral_edu.modeling.decoder import MixtralRMSNorm
    model, tok, tr = run()
    return {
        "table": viz.table(["domain", "tokens", "loss"], [["arith", 238, "0.231"], ["lang <s>", 224, "1.02"]],
                           caption="Loss per domain."),
        "side_by_side": viz.side_by_side(hf.MixtralRMSNorm.forward, MixtralRMSNorm.forward,
                                         excerpt=("variance", "return")),
        "callchain_map": viz.callchain_html(trace=tr, here="attention"),
        "live_view": viz.mask_explorer(model, tok, prompt="the small cat sees", sliding_window=3),
    }
