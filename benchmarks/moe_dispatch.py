"""3. MoE dispatch: the readable per-expert loop against the sorted ("grouped") dispatch.

One MixtralSparseMoeBlock (layer 0 of the model, with its weights) runs forward on
(1, N, C) random hidden states for several token counts N. Three variants on the same
weights, timed side by side: ours with dispatch="loop" (the default, transformers' loop),
ours with dispatch="grouped", and transformers' own MixtralSparseMoeBlock as reference.
Small N calls are batched so that one sample lasts at least `moe_min_sample_s`; the
time reported is per forward call.
"""
from __future__ import annotations

import copy
from typing import List

import torch

from .common import Settings, build_pair, calibrate, compare, paired


def run(settings: Settings, log=print) -> dict:
    s = settings
    rows: List[dict] = []
    configs = []
    for name in s.models:
        ours, theirs = build_pair(name, "sdpa", s.seed)
        loop = copy.deepcopy(ours.model.layers[0].block_sparse_moe)
        loop.dispatch = "loop"
        grouped = copy.deepcopy(loop)
        grouped.dispatch = "grouped"
        reference = copy.deepcopy(theirs.model.layers[0].block_sparse_moe)
        del ours, theirs
        cfg = {"model": name, "hidden_size": loop.hidden_dim, "intermediate_size": loop.ffn_dim,
               "experts": loop.num_experts, "top_k": loop.top_k}
        configs.append(cfg)
        g = torch.Generator().manual_seed(s.seed)
        for n in s.moe_tokens:
            x = torch.randn(1, n, loop.hidden_dim, generator=g)
            with torch.no_grad():
                a, b, c = loop(x)[0], grouped(x)[0], reference(x)[0]
            max_diff = max(float((a - b).abs().max()), float((a - c).abs().max()))

            def call(block):
                def f():
                    with torch.no_grad():
                        block(x)
                return f

            fns = {"loop": call(loop), "grouped": call(grouped), "transformers": call(reference)}
            inner = calibrate(fns["loop"], s.moe_min_sample_s)
            t = compare(fns, s.moe_repeats, warmup=1, inner=inner)
            row = dict(cfg, tokens=n, calls_per_sample=inner, max_abs_diff=max_diff,
                       times={k: v.to_dict() for k, v in t.items()},
                       speedup_grouped=paired(t["loop"].samples, t["grouped"].samples, lambda l, gr: l / gr).to_dict(),
                       loop_vs_transformers=paired(t["loop"].samples, t["transformers"].samples,
                                                   lambda l, r: l / r).to_dict(),
                       busy_experts=_busy_experts(loop, x))
            log(f"  moe {name} N={n}: loop {t['loop'].median * 1e3:.3f} ms, grouped {t['grouped'].median * 1e3:.3f} ms "
                f"(speedup {row['speedup_grouped']['median']:.2f}x), transformers {t['transformers'].median * 1e3:.3f} ms")
            rows.append(row)
    return {"rows": rows, "configs": configs, "method": __doc__}


def _busy_experts(block, x: torch.Tensor) -> int:
    """How many experts got at least one token (the loop skips the others)."""
    with torch.no_grad():
        _, _, selected = block.route(x.view(-1, x.shape[-1]))
    return int(torch.unique(selected).numel())
