"""3. MoE dispatch: the readable per-expert loop against the sorted ("grouped") dispatch.

One MixtralSparseMoeBlock (layer 0 of the model, with its weights) runs forward on
(1, N, C) random hidden states for several token counts N. Three variants on the same
weights, timed side by side: ours (mixtral_edu.modeling.moe, transformers' per-expert loop),
ours grouped (mixtral_edu.fast.moe.grouped_moe: tokens sorted by expert once), and transformers'
own MixtralSparseMoeBlock as reference.
Small N calls are batched so that one sample lasts at least `moe_min_sample_s`; the
time reported is per forward call.
"""
from __future__ import annotations

import copy
from contextlib import ExitStack
from typing import List

import torch

from mixtral_edu.fast.moe import grouped_moe

from .common import Settings, build_pair, calibrate, compare, paired


def run(settings: Settings, log=print) -> dict:
    with ExitStack() as stack:  # the grouped copies run grouped until the end
        return _run(settings, stack, log)


def _run(s: Settings, stack: ExitStack, log) -> dict:
    rows: List[dict] = []
    configs = []
    for name in s.models:
        ours, theirs = build_pair(name, "sdpa", s.seed)
        loop = copy.deepcopy(ours.model.layers[0].block_sparse_moe)
        grouped = copy.deepcopy(loop)
        stack.enter_context(grouped_moe(grouped))
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
    """How many experts got at least one token (the others run on an empty batch)."""
    with torch.no_grad():
        router_logits = block.gate(x.view(-1, x.shape[-1]))                     # (N, E)
    return int(torch.unique(torch.topk(router_logits, block.top_k, dim=-1).indices).numel())
