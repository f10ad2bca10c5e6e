"""1. Generation throughput: mixtral_edu against transformers 4.41.2, same weights, greedy, CPU.

For each model, attention implementation and batch size, in one process and
interleaved repeat by repeat (ours, fast, theirs, theirs, fast, ours, ...):

  ours     = the teaching model as it ships: its MoE loop calls every expert, also on an
             empty batch, as transformers 4.41.2 does (the same work as theirs)
  fast     = the same weights inside `mixtral_edu.fast.moe.grouped_moe`: tokens grouped by
             expert once, only the experts some token chose are called (bit-equal results)

  prefill  = one forward call on the (B, prompt_len) prompt with use_cache=True, timed
             apart from the generate calls (a call of ~10 ms timed right after the other
             side's long generate picked up a cache/allocator order effect of up to 25%):
             ours and theirs alternate, each sample averages enough back-to-back calls
             to last >= 0.1 s, at least 7 samples
             -> prefill tokens/s = B * prompt_len / time
  decode   = (time of generate(new_tokens) - time of generate(1)) / (new_tokens - 1)
             generate(1) is setup + prefill + the first token, so the difference is
             exactly the new_tokens - 1 decode steps (each: prepare inputs, one forward
             on one token per row with the cache, argmax, append)
             -> decode tokens/s = B * (new_tokens - 1) / difference
  ratio    = ours / theirs (and fast / theirs) in tokens/s, per repeat (> 1: ours is faster)

eos stopping is off on both sides (eos_token_id=None), so every row gets all tokens.
"""
from __future__ import annotations

import copy
from typing import List

import torch

from mixtral_edu.fast.moe import grouped_moe

from .common import Settings, Stats, build_pair, calibrate, compare, greedy, paired, prompt


def run(settings: Settings, log=print) -> dict:
    rows: List[dict] = []
    for name in settings.models:
        for attn in settings.attn:
            ours, theirs = build_pair(name, attn, settings.seed)
            fast = copy.deepcopy(ours)
            with grouped_moe(fast):
                models = {"ours": ours, "fast": fast, "theirs": theirs}
                for batch in settings.batches:
                    rows.append(_one(name, attn, batch, models, settings, log))
            del ours, fast, theirs, models
    return {"rows": rows, "method": __doc__}


def _one(name: str, attn: str, batch: int, models: dict, s: Settings, log) -> dict:
    vocab = models["ours"].config.vocab_size
    ids, mask = prompt(batch, s.prompt_len, vocab, s.seed)

    def prefill(m):
        def f():
            with torch.no_grad():
                m(input_ids=ids, attention_mask=mask, use_cache=True)
        return f

    last = {}

    def gen(side, m, n):
        def f():
            last[side, n] = greedy(m, ids, mask, n)
        return f

    fns = {}
    for side, m in models.items():
        fns[f"{side}.gen1"] = gen(side, m, 1)
        fns[f"{side}.gen"] = gen(side, m, s.new_tokens)
    # warm-up: a short generate per side is enough (the timed ones repeat it)
    for m in models.values():
        greedy(m, ids, mask, 2)
    t = compare(fns, s.repeats, warmup=0, budget_s=None if s.quick else s.gen_budget_s)
    pre = {f"{side}.prefill": prefill(m) for side, m in models.items()}
    t.update(compare(pre, max(s.repeats, 7) if not s.quick else s.repeats, warmup=1,
                     inner=calibrate(pre["ours.prefill"], 0.02 if s.quick else 0.1)))

    # same tokens? (greedy on identical weights; fp32 near-ties may still split late)
    ours_ids, theirs_ids = last["ours", s.new_tokens], last["theirs", s.new_tokens]
    assert ours_ids.shape == (batch, s.prompt_len + s.new_tokens), ours_ids.shape
    assert theirs_ids.shape == ours_ids.shape, theirs_ids.shape
    # the fast path is bit-equal to the loop, so its tokens are ours exactly
    assert torch.equal(last["fast", s.new_tokens], ours_ids), "grouped_moe generated other tokens than the loop"
    new = slice(s.prompt_len, None)
    same = float((ours_ids[:, new] == theirs_ids[:, new]).float().mean())
    first_diff = _first_difference(ours_ids[:, new], theirs_ids[:, new])

    steps = s.new_tokens - 1
    row = {"model": name, "attn": attn, "batch": batch, "prompt_len": s.prompt_len,
           "repeats": len(t["ours.gen"].samples),
           "new_tokens": s.new_tokens, "same_tokens": same, "first_difference": first_diff}
    for side in models:
        decode_s = paired(t[f"{side}.gen"].samples, t[f"{side}.gen1"].samples, lambda a, b: a - b)
        row[side] = {
            "prefill_s": t[f"{side}.prefill"].to_dict(),
            "generate_1_s": t[f"{side}.gen1"].to_dict(),
            "generate_s": t[f"{side}.gen"].to_dict(),
            "prefill_tok_s": t[f"{side}.prefill"].map(lambda x: batch * s.prompt_len / x).to_dict(),
            "decode_step_s": decode_s.map(lambda x: x / steps).to_dict(),
            "decode_tok_s": decode_s.map(lambda x: batch * steps / x if x > 0 else float("nan")).to_dict(),
            "generate_tok_s": t[f"{side}.gen"].map(lambda x: batch * s.new_tokens / x).to_dict(),
        }
    row["prefill_ratio"] = paired(t["theirs.prefill"].samples, t["ours.prefill"].samples,
                                  lambda th, o: th / o).to_dict()
    row["decode_ratio"] = Stats([o / th for o, th in zip(row["ours"]["decode_tok_s"]["samples"],
                                                         row["theirs"]["decode_tok_s"]["samples"])]).to_dict()
    row["generate_ratio"] = paired(t["theirs.gen"].samples, t["ours.gen"].samples,
                                   lambda th, o: th / o).to_dict()
    row["fast_prefill_ratio"] = paired(t["theirs.prefill"].samples, t["fast.prefill"].samples,
                                       lambda th, o: th / o).to_dict()
    row["fast_decode_ratio"] = Stats([o / th for o, th in zip(row["fast"]["decode_tok_s"]["samples"],
                                                              row["theirs"]["decode_tok_s"]["samples"])]).to_dict()
    log(f"  generation {name} {attn} B={batch}: decode ours {row['ours']['decode_tok_s']['median']:.0f} tok/s, "
        f"fast {row['fast']['decode_tok_s']['median']:.0f}, theirs {row['theirs']['decode_tok_s']['median']:.0f}; "
        f"ratio ours {row['decode_ratio']['median']:.2f}, fast {row['fast_decode_ratio']['median']:.2f}; "
        f"prefill ratio {row['prefill_ratio']['median']:.2f}; same tokens {same:.0%}")
    return row


def _first_difference(a: torch.Tensor, b: torch.Tensor):
    """Index of the first generated position where any row differs (None: identical)."""
    diff = (a != b).any(dim=0).nonzero()
    return None if diff.numel() == 0 else int(diff[0])
