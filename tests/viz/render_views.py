"""Render every static view to PNG for a person to look at: artifacts/views/<name>.png.

    .venv/bin/python tests/viz/render_views.py            # all views
    .venv/bin/python tests/viz/render_views.py mask cache # some

Uses the trained tiny model when it ships (mixtral_edu/tiny/model/), else a small
random model with a real tokenizer. Each figure is written as HTML with plotly.js
inlined (nothing fetched) and screenshotted in Debian's headless Chromium.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "artifacts" / "views"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: browser.py
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def model_and_tokenizer():
    """(model, tokenizer, trained?): the trained tiny model, or a seeded random stand-in."""
    import torch
    torch.set_num_threads(1)
    from mixtral_edu.tiny.pretrained import TINY_DIR, load_tiny
    if os.path.isfile(os.path.join(TINY_DIR, "config.json")):
        model, tok = load_tiny(attn_implementation="eager")
        return model, tok, True
    import mixtral_edu
    from mixtral_edu.tiny.corpus import make_corpus
    from mixtral_edu.tiny.tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
    folder = Path(tempfile.gettempdir()) / "mixtral_edu_viz_tokenizer"
    if not (folder / "tokenizer.json").exists():
        save_tokenizer(train_tokenizer([t for _, t in make_corpus(600, 0)], vocab_size=320), str(folder))
    tok = load_tokenizer(str(folder))
    torch.manual_seed(0)
    config = mixtral_edu.MixtralConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, sliding_window=6,
        max_position_embeddings=256, rope_theta=1e4, initializer_range=0.2, pad_token_id=3, bos_token_id=1,
        eos_token_id=2, attn_implementation="eager")
    return mixtral_edu.MixtralForCausalLM(config).eval(), tok, False


def figures(names=None):
    """{name: plotly Figure} for the views asked for (all by default)."""
    from mixtral_edu.viz.runs import config_values, traced_generate
    model, tok, trained = model_and_tokenizer()
    # two prompts of different lengths (row 0 gets left padding) from two domains
    batch = tok(["the small cat sees", "37+48="], padding=True, return_tensors="pt")
    with config_values(model, sliding_window=8):  # short enough to hide keys within a few steps
        tr, _ = traced_generate(model, batch["input_ids"], batch["attention_mask"], max_new_tokens=6,
                                eos_token_id=None)  # eos would end the arithmetic row early
    from mixtral_edu.tiny.corpus import samples_by_domain
    from mixtral_edu.tiny.evaluate import EVAL_SEED
    from mixtral_edu.viz import attention, balance, cache, callchain, masks, routing, sampling
    makers = {
        "mask": lambda: masks.mask_figure(tr, tokenizer=tok, sliding_window=8),
        "mask_step0": lambda: masks.mask_figure(tr, step=0, tokenizer=tok, sliding_window=8),
        "cache": lambda: cache.cache_figure(tr, tokenizer=tok, sliding_window=8),
        "routing": lambda: routing.routing_figure(tr, tokenizer=tok),
        "balance": lambda: balance.balance_figure(balance.balance_stats(model, tok, samples_by_domain(24, EVAL_SEED))),
        "attention": lambda: attention.attention_figure(tr, step=0, row=0, tokenizer=tok),
        "sampling": lambda: sampling.sampling_figure(tr, step=0, tokenizer=tok, top_k=20, top_p=0.9),
        "callchain": lambda: callchain.callchain_figure(trace=tr),
    }
    wanted = names or list(makers)
    return {n: makers[n]() for n in wanted if n in makers}


def render(figs, out_dir: Path = OUT, width: int = 1200) -> list:
    """Screenshot each figure (inline plotly.js, no network) to out_dir/<name>.png; returns the paths."""
    import browser as br
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with br.serve(out_dir) as base, br.chromium(viewport=(width, 900)) as browser:
        for name, fig in figs.items():
            html_path = out_dir / f"{name}.html"
            fig.write_html(str(html_path), include_plotlyjs=True, full_html=True,
                           default_width=f"{width - 40}px")
            page, log = br.new_page(browser)
            page.goto(base + html_path.name)
            page.wait_for_selector(".js-plotly-plot .main-svg")
            page.wait_for_timeout(300)
            png = out_dir / f"{name}.png"
            page.locator(".js-plotly-plot").first.screenshot(path=str(png))  # the figure, not the blank page below
            paths.append(png)
            assert not log.problems(), (name, log.problems())
            page.context.close()
            html_path.unlink()  # several MB each with plotly.js inlined; the PNG is what we keep
    return paths


if __name__ == "__main__":
    for p in render(figures(sys.argv[1:] or None)):
        print(p)
