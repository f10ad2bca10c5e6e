"""Train the tiny Mixtral on the synthetic corpus, with the real loss.

    python -m mixtral_edu.tiny.train --out runs/tiny            # the shipped recipe
    python -m mixtral_edu.tiny.train --out runs/tiny --check    # ...and compare it, byte for byte, with the shipped files
    python -m mixtral_edu.tiny.train --out /tmp/t --steps 20    # a quick look

Loss = cross-entropy + router_aux_loss_coef * load-balancing loss, exactly as
`MixtralForCausalLM.forward` computes it when given labels and asked for router
logits. Samples are wrapped as <s> text </s> and packed into fixed windows.
Deterministic for a seed on the same kind of CPU and thread count: float sums are
rounded in an order that depends on the CPU's vector width, so another CPU drifts in
the last bits within tens of steps (training.json records the CPU that made the shipped run).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from typing import List, Optional, Tuple

import torch

from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.config import MixtralConfig
from ..modeling.files import write_bytes_atomically, write_file_atomically
from ..modeling.generation_config import GenerationConfig
from . import corpus as corpus_mod
from .evaluate import cpu_name
from .tokenizer import save_tokenizer, train_tokenizer


@dataclass
class Recipe:
    """Everything that decides the shipped weights."""

    seed: int = 0
    steps: int = 2400
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    n_samples: int = 60000
    arith_weight: int = 2  # additions are the hardest domain: give them this many shares to 1 each for lang and kv
    vocab_size: int = 512
    hidden_size: int = 128
    intermediate_size: int = 128
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    num_local_experts: int = 8
    num_experts_per_tok: int = 2
    sliding_window: int = 32
    router_aux_loss_coef: float = 0.05
    router_jitter_noise: float = 0.0
    router_lr_scale: float = 1.0  # the routers' learning rate relative to the rest
    router_init_std: float = 0.0  # > 0: re-draw the routers' weights with this std (0: the usual initializer_range)
    revive_below: float = 0.04    # > 0: an expert whose share of a layer's routing slots falls below this...
    revive_every: int = 50        # ...(checked every this many steps, on a running average)...
    revive_until: float = 0.6     # ...during this fraction of training is replaced by a copy of the busiest one
    threads: int = 1  # two are ~1.7x faster on an idle 2-core CPU, but 5-30x slower once anything else runs (OpenMP)


def tiny_config(r: Recipe, tokenizer) -> MixtralConfig:
    """The model the recipe trains: every Mixtral feature live (MoE top-2, GQA, sliding window < context)."""
    return MixtralConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=r.hidden_size, intermediate_size=r.intermediate_size,
        num_hidden_layers=r.num_hidden_layers, num_attention_heads=r.num_attention_heads,
        num_key_value_heads=r.num_key_value_heads, num_local_experts=r.num_local_experts,
        num_experts_per_tok=r.num_experts_per_tok, sliding_window=r.sliding_window,
        max_position_embeddings=4 * r.seq_len, rope_theta=10000.0, router_aux_loss_coef=r.router_aux_loss_coef,
        router_jitter_noise=r.router_jitter_noise,
        bos_token_id=tokenizer.token_to_id("<s>"), eos_token_id=tokenizer.token_to_id("</s>"),
        pad_token_id=tokenizer.token_to_id("<pad>"), attn_implementation="sdpa",
    )


def pack(samples: List[str], tokenizer, bos: int, eos: int) -> torch.Tensor:
    """One long (n_tokens,) stream: <s> sample </s> <s> sample </s> ..."""
    stream: List[int] = []
    for enc in tokenizer.encode_batch(samples, add_special_tokens=False):
        stream += [bos] + enc.ids + [eos]
    return torch.tensor(stream, dtype=torch.long)


def lr_at(step: int, r: Recipe) -> float:
    """Linear warm-up, then cosine decay to min_lr."""
    if step < r.warmup:
        return r.lr * (step + 1) / r.warmup
    progress = (step - r.warmup) / max(1, r.steps - r.warmup)
    return r.min_lr + 0.5 * (r.lr - r.min_lr) * (1 + math.cos(math.pi * progress))


def train_model(r: Recipe, out: str, log_every: int = 10, progress: bool = True, save_every: int = 0) -> dict:
    """Train from scratch and save a Hugging Face model directory to `out`. Returns the curves."""
    torch.manual_seed(r.seed)
    random.seed(r.seed)
    torch.set_num_threads(r.threads)
    domains = ("arith",) * r.arith_weight + ("lang", "kv")
    texts = [t for _, t in corpus_mod.make_corpus(r.n_samples, seed=r.seed, domains=domains)]
    tokenizer = train_tokenizer(texts, vocab_size=r.vocab_size)
    config = tiny_config(r, tokenizer)
    model = MixtralForCausalLM(config)
    if r.router_init_std > 0:
        with torch.no_grad():
            for layer in model.model.layers:
                layer.block_sparse_moe.gate.weight.normal_(0.0, r.router_init_std)
    model.train()
    data = pack(texts, tokenizer, config.bos_token_id, config.eos_token_id)

    params = dict(model.named_parameters())
    router = [p for n, p in params.items() if n.endswith("block_sparse_moe.gate.weight")]
    decay = [p for n, p in params.items() if p.dim() >= 2 and not n.endswith("block_sparse_moe.gate.weight")]
    no_decay = [p for n, p in params.items() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay, "lr_scale": 1.0},
                             {"params": router, "weight_decay": r.weight_decay, "lr_scale": r.router_lr_scale},
                             {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}], lr=r.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(r.seed)
    curves = {"step": [], "loss": [], "ce_loss": [], "aux_loss": [], "lr": [], "tokens_per_s": [],
              "expert_share": [], "revived": []}
    running = torch.full((config.num_hidden_layers, config.num_local_experts), 1 / config.num_local_experts)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=r.steps, desc="train", unit="step")
    curves["load_average_start"] = os.getloadavg()[0]  # other work on the machine slows training: say so
    t0 = time.perf_counter()
    for step in range(r.steps):
        starts = torch.randint(0, data.numel() - r.seq_len - 1, (r.batch_size,), generator=gen)
        batch = torch.stack([data[s:s + r.seq_len] for s in starts.tolist()])   # (B, T)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, r) * g["lr_scale"]
        out_ = model(batch, labels=batch, output_router_logits=True, use_cache=False)
        opt.zero_grad(set_to_none=True)
        out_.loss.backward()
        leave_idle_experts_alone(model, out_.router_logits)
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
        logging = step % log_every == 0 or step == r.steps - 1
        share = _slot_share(out_.router_logits, config) if logging or r.revive_below > 0 else None  # (L, E)
        if r.revive_below > 0:
            running.mul_(0.9).add_(0.1 * share)  # running share of routing slots per (layer, expert)
            if step % r.revive_every == r.revive_every - 1 and step < r.revive_until * r.steps:
                curves["revived"] += revive_starved_experts(model, opt, running, r.revive_below, step, gen)
        if logging:
            elapsed = time.perf_counter() - t0
            aux = float(out_.aux_loss.detach())
            ce = float(out_.loss.detach()) - r.router_aux_loss_coef * aux
            tps = (step + 1) * r.batch_size * r.seq_len / elapsed
            for k, v in zip(curves, (step, float(out_.loss.detach()), ce, aux, lr_at(step, r), tps, share.tolist())):
                curves[k].append(v)
            if bar is not None:
                bar.set_postfix(loss=f"{float(out_.loss.detach()):.3f}", aux=f"{aux:.3f}", tok_s=f"{tps:,.0f}")
        if bar is not None:
            bar.update(1)
        if save_every and (step + 1) % save_every == 0 and step + 1 < r.steps:
            model.eval()
            save_model_dir(model, tokenizer, os.path.join(out, f"step_{step + 1}"), r, curves)
            model.train()
    if bar is not None:
        bar.close()
    curves["seconds"] = time.perf_counter() - t0
    curves["load_average_end"] = os.getloadavg()[0]
    model.eval()
    save_model_dir(model, tokenizer, out, r, curves)
    return curves


@torch.no_grad()
def leave_idle_experts_alone(model, router_logits) -> None:
    """Unset the gradients of every expert that no token of this batch chose: the optimizer skips it.

    The MoE loop calls every expert, as transformers does, so an expert that got no token has
    an all-zero gradient, and AdamW would still move it (weight decay, and the momentum of
    earlier steps). The recipe leaves such an expert as it is; the shipped weights were
    trained so. Which experts were chosen is read from the router logits the way the block
    routes them (softmax in fp32, then top-k), so it is exactly the block's choice.
    """
    for layer, logits in zip(model.model.layers, router_logits):
        moe = layer.block_sparse_moe
        probs = torch.softmax(logits, dim=1, dtype=torch.float)                   # (N, E)
        chosen = set(torch.topk(probs, moe.top_k, dim=-1).indices.unique().tolist())
        for e, expert in enumerate(moe.experts):
            if e not in chosen:
                for p in expert.parameters():
                    p.grad = None


@torch.no_grad()
def _slot_share(router_logits, config) -> torch.Tensor:
    """(L, E): the share of each layer's routing slots that went to each expert in this batch."""
    k, e = config.num_experts_per_tok, config.num_local_experts
    return torch.stack([torch.bincount(torch.topk(lg, k, -1).indices.flatten(), minlength=e).float()
                        / (lg.shape[0] * k) for lg in router_logits])


@torch.no_grad()
def revive_starved_experts(model, opt, running: torch.Tensor, below: float, step: int, gen) -> List[dict]:
    """Replace each starved expert by a copy of its layer's busiest one (weights, router row, optimizer state).

    Why this exists: transformers' load-balancing loss averages over *all layers together*
    (torch.cat of every layer's router logits), so it balances experts across the model but
    not within a layer: one layer can starve an expert while another overuses it, and the
    loss does not mind. A starved expert gets no gradient from the language-model loss, so
    it never comes back by itself. The copy starts with the busiest expert's tokens split
    between the two (its router row gets a little noise), and the two drift apart.
    """
    events = []
    for layer_idx, layer in enumerate(model.model.layers):
        moe = layer.block_sparse_moe
        for e in running[layer_idx].argsort().tolist():
            if running[layer_idx, e] >= below:
                break
            busiest = int(running[layer_idx].argmax())
            src, dst = moe.experts[busiest], moe.experts[e]
            for name in ("w1", "w2", "w3"):
                p_src, p_dst = getattr(src, name).weight, getattr(dst, name).weight
                p_dst.copy_(p_src)
                _copy_moments(opt, p_src, p_dst)
            gate = moe.gate.weight                                             # (E, C)
            noise = torch.randn(gate.shape[1], generator=gen) * 0.1 * gate[busiest].std()
            gate[e] = gate[busiest] + noise
            for value in opt.state.get(gate, {}).values():
                if torch.is_tensor(value) and value.dim() > 0:  # AdamW's moments, row by row
                    value[e] = value[busiest]
            running[layer_idx, e] = running[layer_idx, busiest] = running[layer_idx, busiest] / 2
            events.append({"step": step, "layer": layer_idx, "expert": e, "copied_from": busiest})
    return events


def _copy_moments(opt, src: torch.Tensor, dst: torch.Tensor) -> None:
    """Give dst the optimizer's running moments of src, so the copy takes the same next step."""
    if src not in opt.state:
        return
    if dst not in opt.state:
        opt.state[dst] = {k: v.clone() if torch.is_tensor(v) else v for k, v in opt.state[src].items()}
        return
    for key, value in opt.state[src].items():
        if torch.is_tensor(value) and value.dim() > 0:  # exp_avg, exp_avg_sq (dst keeps its own step count)
            opt.state[dst][key].copy_(value)


def save_model_dir(model, tokenizer, out: str, r: Recipe, curves: dict) -> None:
    """config + safetensors + tokenizer files + generation config + recipe + curves (json and png)."""
    os.makedirs(out, exist_ok=True)
    cfg = model.config
    # generate's defaults, written by save_pretrained with the weights (greedy, 32 new tokens)
    model.generation_config = GenerationConfig(bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id,
                                               pad_token_id=cfg.pad_token_id, do_sample=False, max_new_tokens=32)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out)
    write_file_atomically(os.path.join(out, "training.json"),
                          json.dumps({"recipe": asdict(r), "torch": torch.__version__, "machine": machine(),
                                      "curves": curves}))
    plot_curves(curves, os.path.join(out, "training_curves.png"))


def machine() -> dict:
    """What decides the last bits of a run besides the recipe: the CPU and the kernels torch picks for it."""
    return {"cpu": cpu_name(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


# files that the recipe decides; README.md and metrics.json come from `python -m mixtral_edu.tiny.evaluate`,
# and training.json / training_curves.png also hold timings, which no two runs share
REPRODUCED = ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json")


def compare_with(out: str, reference: str) -> Tuple[List[str], bool]:
    """(one line per reproduced file, then the curves and revivals; whether all of them are identical)."""
    checks = []  # (line, identical)
    for name in REPRODUCED:
        a, b = os.path.join(out, name), os.path.join(reference, name)
        if not (os.path.isfile(a) and os.path.isfile(b)):
            checks.append((f"{name}: missing in {out if not os.path.isfile(a) else reference}", False))
            continue
        ha, hb = (hashlib.sha256(open(x, "rb").read()).hexdigest() for x in (a, b))
        checks.append((f"{name}: " + ("identical" if ha == hb else f"DIFFERENT (sha256 {ha[:12]} vs {hb[:12]})"),
                       ha == hb))
    with open(os.path.join(out, "training.json")) as f, open(os.path.join(reference, "training.json")) as g:
        new, old = json.load(f), json.load(g)
    steps = new["curves"]["step"]
    first = next((s for s, x, y in zip(steps, new["curves"]["loss"], old["curves"]["loss"]) if x != y), None)
    same = first is None and len(steps) == len(old["curves"]["step"])
    checks.append(("loss curve: " + ("identical" if same else f"first differs at step {first}"), same))
    same = new["curves"]["revived"] == old["curves"]["revived"]
    checks.append(("revived experts: " + ("identical" if same else "DIFFERENT"), same))
    lines = [line for line, _ in checks]
    if old.get("machine") and old["machine"] != new.get("machine"):
        lines.append(f"note: the shipped run was made on {old['machine']}, this one on {new.get('machine')}")
    return lines, all(ok for _, ok in checks)


def plot_curves(curves: dict, path: str) -> None:
    """Loss and aux-loss curves, side by side."""
    # draw on a bare Figure: switching pyplot's backend would break plots in a notebook afterwards
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    a, b = fig.subplots(1, 2)
    a.plot(curves["step"], curves["ce_loss"], color="#0072B2", label="cross-entropy")
    a.set(xlabel="step", ylabel="loss (nats/token)", title="Language-model loss", yscale="log")
    from matplotlib.ticker import FormatStrFormatter
    a.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # 1.5, 2, 4 rather than 2 x 10^0
    a.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    a.legend()
    b.plot(curves["step"], curves["aux_loss"], color="#D55E00", label="load-balancing loss")
    b.axhline(2.0, color="gray", ls="--", label="perfect balance (= top-k = 2)")
    revived = sorted({ev["step"] for ev in curves.get("revived", [])})
    if revived:  # a rug along the bottom: when the trainer replaced a starved expert
        b.plot(revived, [0.04] * len(revived), "|", color="#009E73", ms=12, mew=1.5,
               transform=b.get_xaxis_transform(), label="starved expert replaced")
    b.set(xlabel="step", ylabel="aux loss", title="Router load-balancing loss")
    b.legend(loc="upper right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    write_bytes_atomically(path, png.getvalue())


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory to write the model to")
    for field, default in asdict(Recipe()).items():
        p.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--save-every", type=int, default=0, help="also save a snapshot every N steps")
    p.add_argument("--check", action="store_true",
                   help="afterwards, compare the files with the shipped model's, byte for byte (exit 1 if any differs)")
    args = vars(p.parse_args(argv))
    out, quiet, save_every = args.pop("out"), args.pop("no_progress"), args.pop("save_every")
    check = args.pop("check")
    r = Recipe(**args)
    if r.steps <= 0 or r.batch_size <= 0 or r.seq_len < 8:
        p.error("--steps and --batch-size must be positive and --seq-len at least 8")
    curves = train_model(r, out, progress=not quiet, save_every=save_every)
    print(f"trained {r.steps} steps in {curves['seconds']:.0f} s; final loss {curves['loss'][-1]:.3f}; "
          f"saved to {out}")
    if check:
        from .pretrained import TINY_DIR
        lines, identical = compare_with(out, TINY_DIR)
        print("compared with the shipped model in " + TINY_DIR + ":\n  " + "\n  ".join(lines))
        if not identical:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
