"""Score a trained tiny model: can it add, does it speak the grammar, how does it route?

    python -m mixtral_edu.tiny.evaluate mixtral_edu/tiny/model            # print the metrics
    python -m mixtral_edu.tiny.evaluate DIR --write-card                   # also write DIR/README.md

All prompts come from a seed different from training's. Routing statistics are
read from the router logits the model returns (`output_router_logits=True`).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import corpus
from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.files import write_file_atomically

EVAL_SEED = 20261125  # training uses small seeds (0 by default); held-out prompts use this one


def _generate_texts(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64) -> List[str]:
    """Greedy continuations (text after the prompt, special tokens dropped), left-padded batches."""
    outs: List[str] = []
    for i in range(0, len(prompts), batch_size):
        enc = tokenizer(list(prompts[i:i + batch_size]), return_tensors="pt", padding=True)
        ids = model.generate(enc.input_ids, attention_mask=enc.attention_mask, max_new_tokens=max_new_tokens)
        new = ids[:, enc.input_ids.shape[1]:]
        outs += tokenizer.batch_decode(new, skip_special_tokens=True)
    return outs


def addition_accuracy(model, tokenizer, n: int = 500, seed: int = EVAL_SEED) -> Dict:
    """Greedy exact match on held-out two-digit additions ("37+48=" -> "85")."""
    pairs = corpus.addition_prompts(n, seed)
    answers = _generate_texts(model, tokenizer, [p for p, _ in pairs], max_new_tokens=5)
    correct = [a.strip() == want for a, (_, want) in zip(answers, pairs)]
    examples = [f"{p}{a}" for (p, _), a in zip(pairs[:8], answers[:8])]
    return {"n": n, "accuracy": sum(correct) / n, "examples": examples}


def grammar_rate(model, tokenizer, n: int = 300, seed: int = EVAL_SEED) -> Dict:
    """Share of greedy sentence completions that the grammar's own checker accepts."""
    prefixes = corpus.lang_prompts(n, seed)
    conts = _generate_texts(model, tokenizer, prefixes, max_new_tokens=24)
    sentences = []
    for p, c in zip(prefixes, conts):
        text = p + c
        end = text.find(" .")
        sentences.append(text[:end + 2] if end >= 0 else text)
    ok = [corpus.check_sentence(s) for s in sentences]
    return {"n": n, "grammatical": sum(ok) / n, "examples": sentences[:8]}


def record_rate(model, tokenizer, n: int = 100) -> Dict:
    """Share of records/programs started from '{' or 'x =' that come out well formed."""
    prompts = ["{" if i % 2 == 0 else "x =" for i in range(n)]
    conts = _generate_texts(model, tokenizer, prompts, max_new_tokens=40)
    texts = [p + c for p, c in zip(prompts, conts)]
    ok = [corpus.check_record(t) for t in texts]
    return {"n": n, "well_formed": sum(ok) / n, "examples": texts[:4]}


@torch.no_grad()
def domain_stats(model, tokenizer, n_per_domain: int = 200, seed: int = EVAL_SEED) -> Dict:
    """Per domain: perplexity, and per layer the share of routing slots each expert got
    (expert_share, sums to 1 per layer) and the share of tokens that chose it (token_share: K times that).

    Also the share of consecutive token pairs whose top-1 expert is the same (Mixtral paper, section 5).
    """
    cfg = model.config
    stats: Dict = {}
    for domain in corpus.DOMAINS:
        texts = [t for _, t in corpus.make_corpus(n_per_domain, seed=seed, domains=(domain,))]
        nll, n_tok = 0.0, 0
        counts = torch.zeros(cfg.num_hidden_layers, cfg.num_local_experts)
        same, pairs = torch.zeros(cfg.num_hidden_layers), 0
        for text in texts:
            ids = torch.tensor([[cfg.bos_token_id] + tokenizer(text, add_special_tokens=False).input_ids
                                + [cfg.eos_token_id]])
            out = model(ids, labels=ids, output_router_logits=True, use_cache=False)
            n = ids.shape[1] - 1
            nll += (float(out.loss) - cfg.router_aux_loss_coef * float(out.aux_loss)) * n
            n_tok += n
            for layer, logits in enumerate(out.router_logits):       # (T, E)
                top = torch.topk(logits, cfg.num_experts_per_tok, dim=-1).indices
                counts[layer] += torch.bincount(top.flatten(), minlength=cfg.num_local_experts)
                same[layer] += (top[1:, 0] == top[:-1, 0]).sum()
            pairs += ids.shape[1] - 1
        share = counts / counts.sum(dim=1, keepdim=True)
        routed = counts.sum(dim=1, keepdim=True) / cfg.num_experts_per_tok  # tokens routed per layer
        stats[domain] = {"perplexity": math.exp(nll / n_tok), "tokens": n_tok,
                         "expert_share": share.tolist(), "token_share": (counts / routed).tolist(), "same_top1_consecutive": (same / pairs).tolist()}
    return stats


def routing_summary(stats: Dict) -> Dict:
    """Smallest expert share anywhere (of routing slots, and of tokens), overall per layer (domains
    weighted equally), and domain-vs-domain differences."""
    domains = list(stats)
    shares = {d: torch.tensor(stats[d]["expert_share"]) for d in domains}   # (L, E) each
    overall = sum(shares.values()) / len(shares)
    tv = {}
    for i, a in enumerate(domains):
        for b in domains[i + 1:]:
            # total variation distance between two domains' expert-usage distributions, per layer
            tv[f"{a}-{b}"] = (0.5 * (shares[a] - shares[b]).abs().sum(dim=1)).tolist()
    out = {"min_expert_share_overall": float(overall.min()),
           "overall_share": overall.tolist(),
           "total_variation_by_layer": tv,
           "mean_total_variation": float(torch.tensor(list(tv.values())).mean())}
    if all("token_share" in stats[d] for d in domains):  # as domain_stats gives them
        tokens = sum(torch.tensor(stats[d]["token_share"]) for d in domains) / len(domains)  # (L, E)
        out["min_token_share_overall"] = float(tokens.min())
    return out


def evaluate_model(model, tokenizer, quick: bool = False) -> Dict:
    """All metrics; quick=True uses fewer prompts (for tests)."""
    k = 4 if quick else 1
    stats = domain_stats(model, tokenizer, n_per_domain=200 // k)
    return {"addition": addition_accuracy(model, tokenizer, n=500 // k),
            "grammar": grammar_rate(model, tokenizer, n=300 // k),
            "records": record_rate(model, tokenizer, n=100 // k),
            "domains": stats, "routing": routing_summary(stats),
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
                        "threads": torch.get_num_threads()}}


@torch.no_grad()
def domain_loss(model, tokenizer, domain: str, n: int = 12, seed: int = EVAL_SEED) -> float:
    """Mean next-token cross-entropy (nats per token) on n held-out samples of one domain.

    One left-padded batch; padding gets no loss. Quick enough to measure with and without a
    hook (notebook 07 switches an expert off and compares).
    """
    texts = [t for _, t in corpus.make_corpus(n, seed=seed, domains=(domain,))]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)     # (B, T), no loss on padding
    out = model(batch.input_ids, attention_mask=batch.attention_mask, labels=labels, use_cache=False)
    return float(out.loss)


@torch.no_grad()
def chosen_experts(model, tokenizer, domain: str, n: int = 16, seed: int = EVAL_SEED) -> List[List[torch.Tensor]]:
    """Per layer, per sample: the (T_real, K) experts each real token chose, best first (padding left out)."""
    from ..observe.capture import run_with_cache
    texts = [t for _, t in corpus.make_corpus(n, seed=seed, domains=(domain,))]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    _, acts = run_with_cache(model, batch.input_ids, attention_mask=batch.attention_mask,
                             names="*.block_sparse_moe.hook_topk_indices")
    B, T = batch.input_ids.shape
    K = model.config.num_experts_per_tok
    out = []
    for layer in range(model.config.num_hidden_layers):
        chosen = acts[f"model.layers.{layer}.block_sparse_moe.hook_topk_indices"].view(B, T, K)   # (N, K) -> (B, T, K)
        out.append([chosen[i, batch.attention_mask[i].bool()] for i in range(B)])
    return out


def repeat_rates(chosen: torch.Tensor) -> Tuple[float, float]:
    """chosen (T, K): the experts of T consecutive tokens at one layer, best first (Mixtral paper, section 5).

    same_top1: share of the T - 1 neighbouring pairs whose best expert is the same.
    shared_any: share of pairs whose K chosen experts have at least one expert in common.
    """
    a, b = chosen[:-1], chosen[1:]                                             # (T-1, K) each
    same_top1 = (a[:, 0] == b[:, 0]).float().mean().item()
    shared_any = (a[:, :, None] == b[:, None, :]).any(-1).any(-1).float().mean().item()   # (T-1, K, K) -> (T-1,)
    return same_top1, shared_any


def cpu_name() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def write_card(directory: str, metrics: Dict) -> None:
    """README.md model card: what the model is, how it was trained, what it scores."""
    with open(os.path.join(directory, "training.json")) as f:
        training = json.load(f)
    r, curves = training["recipe"], training["curves"]
    cfg = json.load(open(os.path.join(directory, "config.json")))
    from ..full_size.sizes import parameter_count  # noqa: WPS433 (kept local: sizes is optional for training)
    from ..modeling.config import MixtralConfig
    pc = parameter_count(MixtralConfig.from_dict(cfg))
    dom = metrics["domains"]
    rows = "\n".join(f"| {d} | {dom[d]['perplexity']:.3f} | {dom[d]['tokens']} |" for d in dom)
    tv = metrics["routing"]["total_variation_by_layer"]
    tv_rows = "\n".join(f"| {pair} | " + " | ".join(f"{v:.2f}" for v in vals) + " |" for pair, vals in tv.items())
    layers = len(next(iter(tv.values())))
    n_exp = cfg["num_local_experts"]
    usage_rows = "\n".join(f"| {d} | {i} | " + " | ".join(f"{100 * v:.0f}" for v in row) + " |"
                           for d in dom for i, row in enumerate(dom[d]["token_share"]))
    revived = curves.get("revived", [])
    router = []
    if r.get("router_init_std", 0) > 0:
        router.append(f"router weights drawn with std {r['router_init_std']}")
    if r.get("router_lr_scale", 1.0) != 1.0:
        router.append(f"router learning rate {r['router_lr_scale']} x the rest")
    if r.get("revive_below", 0) > 0:
        router.append(f"an expert whose running share of a layer's routing slots fell below {r['revive_below']} "
                      f"(checked every {r['revive_every']} steps during the first {r['revive_until']:.0%} of "
                      f"training) was replaced by a copy of that layer's busiest expert: {len(revived)} times, "
                      f"the last at step {revived[-1]['step'] + 1 if revived else '-'}")
    router_text = ("Routers: " + "; ".join(router) + ". Why: transformers' load-balancing loss averages "
                   "over all layers together, so it balances experts across the model but not within "
                   "a layer, and an expert no token picks gets no gradient to come back with."
                   ) if router else ""
    idle = ("An expert that no token of a batch chose takes no optimizer step in that batch (its gradient "
            "is left unset, so AdamW's weight decay and momentum do not move it).")
    made_on = training.get("machine", {})
    repro = ("The recipe gives these weights byte for byte on the same kind of CPU "
             f"({made_on.get('cpu', 'see training.json')}, torch CPU kernels {made_on.get('cpu_capability', '?')}, "
             f"{r['threads']} thread): check with `python -m mixtral_edu.tiny.train --out DIR --check`. "
             "Another CPU rounds float sums in another order and drifts in the last bits within tens of steps.")
    load = ""
    if "load_average_start" in curves:
        load = f", 1-minute load average {curves['load_average_start']:.1f} at the start and " \
               f"{curves['load_average_end']:.1f} at the end"
    text = f"""# mixtral-edu tiny Mixtral

A {pc.total / 1e6:.2f}M-parameter Mixtral ({pc.active / 1e6:.2f}M active per token) trained from
scratch on this project's synthetic corpus (`mixtral_edu.tiny.corpus`: additions, a small
English-like grammar, key-value records and little programs). It exists to be looked
at: its outputs can be checked by eye and its experts show structure.

Every Mixtral feature is live: {cfg['num_hidden_layers']} layers, {cfg['num_local_experts']} experts with
top-{cfg['num_experts_per_tok']} routing, grouped-query attention ({cfg['num_attention_heads']} query heads,
{cfg['num_key_value_heads']} kv heads), and a sliding window of {cfg['sliding_window']} tokens, shorter than the
{r['seq_len']}-token training context. Load it with `mixtral_edu.load_tiny()`, or with
transformers 4.41.2's `AutoModelForCausalLM` / `AutoTokenizer` on this directory.

## Training recipe

`python -m mixtral_edu.tiny.train --out DIR` (defaults are this recipe): seed {r['seed']}, {r['steps']} steps of
AdamW (lr {r['lr']} with {r['warmup']} warm-up steps and cosine decay to {r['min_lr']}, weight decay
{r['weight_decay']}, gradient clip {r['grad_clip']}), batches of {r['batch_size']} x {r['seq_len']} packed tokens
from {r['n_samples']} samples, byte-level BPE vocabulary of {cfg['vocab_size']}. Loss = cross-entropy +
{r['router_aux_loss_coef']} x load-balancing loss. {router_text}
{idle}
Took {curves['seconds']:.0f} s on this machine ({metrics['machine']['cpu']}, {os.cpu_count()} cores,
{r['threads']} training thread(s), torch {training['torch']}{load}).
Final loss {curves['loss'][-1]:.3f}, aux loss {curves['aux_loss'][-1]:.3f} (2.0 = perfectly balanced).
{repro}

![training curves](training_curves.png)

## Measured (`python -m mixtral_edu.tiny.evaluate DIR`, prompts from seed {EVAL_SEED})

| metric | value |
|---|---|
| greedy exact match, two-digit additions | {metrics['addition']['accuracy']:.1%} of {metrics['addition']['n']} |
| grammatical sentence completions (the grammar's checker) | {metrics['grammar']['grammatical']:.1%} of {metrics['grammar']['n']} |
| well-formed records/programs | {metrics['records']['well_formed']:.1%} of {metrics['records']['n']} |
| smallest share of tokens that use an expert, any layer (top-2: 25% if even) | {metrics['routing']['min_token_share_overall']:.1%} |
| smallest expert share of routing slots, any layer (12.5% if even) | {metrics['routing']['min_expert_share_overall']:.1%} |
| mean routing difference between domains (total variation) | {metrics['routing']['mean_total_variation']:.2f} |

Per-domain perplexity (held-out samples):

| domain | perplexity | tokens |
|---|---|---|
{rows}

Expert usage by domain and layer: % of the domain's tokens that chose each expert among their
top {cfg['num_experts_per_tok']} (each row sums to {100 * cfg['num_experts_per_tok']}%):

| domain | layer | {' | '.join(f'e{e}' for e in range(n_exp))} |
|---|---|{'---|' * n_exp}
{usage_rows}

Routing difference between domains per layer (total variation distance of expert-usage
distributions; 0 = identical routing, 1 = disjoint experts):

| domains | {' | '.join(f'layer {i}' for i in range(layers))} |
|---|{'---|' * layers}
{tv_rows}

Examples: {', '.join(f'`{e}`' for e in metrics['addition']['examples'][:4])};
{', '.join(f'`{e}`' for e in metrics['grammar']['examples'][:3])}.
"""
    write_file_atomically(os.path.join(directory, "README.md"), text)
    write_file_atomically(os.path.join(directory, "metrics.json"), json.dumps(metrics, indent=1))


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory")
    p.add_argument("--write-card", action="store_true", help="write README.md and metrics.json into the directory")
    args = p.parse_args(argv)
    from .tokenizer import load_tokenizer
    model = MixtralForCausalLM.from_pretrained(args.directory)
    tok = load_tokenizer(args.directory)
    m = evaluate_model(model, tok)
    print(json.dumps({"addition": m["addition"]["accuracy"], "grammar": m["grammar"]["grammatical"],
                      "records": m["records"]["well_formed"], "routing": {
                          k: m["routing"][k] for k in ("min_expert_share_overall", "min_token_share_overall",
                                                       "mean_total_variation")},
                      "perplexity": {d: m["domains"][d]["perplexity"] for d in m["domains"]}}, indent=1))
    if args.write_card:
        write_card(args.directory, m)


if __name__ == "__main__":
    main()
