"""What every benchmark shares: settings, timing with statistics, the machine, the models.

Timing rules: warm up first, then take `repeats` samples; when several variants are
compared, each repeat runs all of them back to back (order alternating between
repeats) so that a burst of load from elsewhere hits every variant alike. A ratio
is computed per repeat from the paired samples, then summarised like any sample:
median, interquartile range (IQR) and min-max.
"""
from __future__ import annotations

import datetime as _dt
import gc
import math
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# the machine is offline: neither library may try the hub
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- settings ----------------------------------------------------------------------------------

# ~50M parameters in total (GQA 4:1 like Mixtral; 8 experts, top-2): see parameter_count in results.
MEDIUM = dict(vocab_size=8192, hidden_size=512, intermediate_size=368, num_hidden_layers=8,
              num_attention_heads=8, num_key_value_heads=2, num_local_experts=8, num_experts_per_tok=2,
              max_position_embeddings=4096, rope_theta=1e6, sliding_window=None,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)
# --quick stands in a toy random model for the 50M one: same code paths, milliseconds per call.
SMALL = dict(MEDIUM, vocab_size=512, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)


@dataclass
class Settings:
    quick: bool = False
    models: Tuple[str, ...] = ("tiny", "medium")      # "tiny": the shipped model; else a random config
    attn: Tuple[str, ...] = ("eager", "sdpa")
    batches: Tuple[int, ...] = (1, 8)
    prompt_len: int = 64
    new_tokens: int = 128
    repeats: int = 5
    gen_budget_s: float = 40.0       # per (model, attn, batch): fewer repeats (>= 3) when one takes long
    # instrumentation
    trace_new_tokens: int = 32
    inst_repeats: int = 7
    # MoE dispatch
    moe_tokens: Tuple[int, ...] = (1, 8, 64, 512, 4096)
    moe_min_sample_s: float = 0.05   # calls per sample are batched until a sample lasts this long
    moe_repeats: int = 7
    # KV cache on/off
    kv_model: str = "medium"
    kv_prompt_len: int = 8
    kv_new_tokens: int = 128
    kv_repeats: int = 3
    # memory: one fresh process per configuration
    mem_models: Tuple[str, ...] = ("tiny", "medium")
    mem_batches: Tuple[int, ...] = (1, 8)
    mem_parallel: int = 2
    mem_background: bool = False     # --quick: run the memory processes while the rest runs (timings are moot)
    # notebooks / docs (off unless asked: they have their own budgets)
    notebooks: bool = False
    docs: bool = False
    threads: Optional[int] = None
    seed: int = 0

    @classmethod
    def make(cls, quick: bool = False, **overrides) -> "Settings":
        if quick:
            base = cls(quick=True, models=("small",), attn=("sdpa",), batches=(1, 2), prompt_len=16,
                       new_tokens=8, repeats=2, trace_new_tokens=4, inst_repeats=2, moe_tokens=(1, 8, 64),
                       moe_min_sample_s=0.002, moe_repeats=2, kv_model="small", kv_prompt_len=4,
                       kv_new_tokens=12, kv_repeats=1, mem_models=("tiny",), mem_batches=(1,), mem_background=True)
        else:
            base = cls()
        for k, v in overrides.items():
            if v is not None:
                setattr(base, k, v)
        return base

    def to_dict(self) -> dict:
        return asdict(self)


def model_kwargs(name: str) -> dict:
    return {"medium": MEDIUM, "small": SMALL}[name]


MODEL_TITLES = {"tiny": "tiny (shipped)", "medium": "random ~50M", "small": "random toy (--quick)"}


# -- statistics ------------------------------------------------------------------------------------

@dataclass
class Stats:
    """A sample of numbers (seconds, ratios, ...) and its summary."""
    samples: List[float] = field(default_factory=list)

    def _q(self, q: float) -> float:
        return float(np.percentile(self.samples, q)) if self.samples else math.nan

    @property
    def median(self) -> float:
        return self._q(50)

    @property
    def q1(self) -> float:
        return self._q(25)

    @property
    def q3(self) -> float:
        return self._q(75)

    @property
    def min(self) -> float:
        return float(min(self.samples)) if self.samples else math.nan

    @property
    def max(self) -> float:
        return float(max(self.samples)) if self.samples else math.nan

    def map(self, fn: Callable[[float], float]) -> "Stats":
        return Stats([fn(s) for s in self.samples])

    def to_dict(self) -> dict:
        return {"median": self.median, "q1": self.q1, "q3": self.q3, "min": self.min, "max": self.max,
                "n": len(self.samples), "samples": list(self.samples)}


def paired(a: Sequence[float], b: Sequence[float], fn: Callable[[float, float], float]) -> Stats:
    """Per-repeat combination of two paired samples, e.g. a ratio."""
    return Stats([fn(x, y) for x, y in zip(a, b)])


def fmt_num(x: float, digits: int = 3) -> str:
    """Three significant figures, no exponent for everyday sizes."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if x == 0:
        return "0"
    mag = int(math.floor(math.log10(abs(x))))
    decimals = max(0, digits - 1 - mag)
    return f"{x:,.{decimals}f}"


def fmt_stats(d: dict, scale: float = 1.0, unit: str = "", spread: bool = True) -> str:
    """'12.3 ms (11.9–12.8)': median and IQR of a Stats.to_dict()."""
    if not d or not d.get("n"):
        return "n/a"
    text = f"{fmt_num(d['median'] * scale)}{unit}"
    if spread and d["n"] > 1:
        text += f" ({fmt_num(d['q1'] * scale)}–{fmt_num(d['q3'] * scale)})"
    return text


def fmt_ratio(d: dict, spread: bool = True) -> str:
    if not d or not d.get("n"):
        return "n/a"
    text = f"{d['median']:.2f}x"
    if spread and d["n"] > 1:
        text += f" ({d['q1']:.2f}–{d['q3']:.2f})"
    return text


# -- timing ------------------------------------------------------------------------------------------

def _sample(fn: Callable[[], object], inner: int) -> float:
    """Seconds per call of fn, over `inner` calls, with the garbage collector held off.

    (No gc.collect() per sample: with torch and transformers loaded one full collection
    takes up to a second. `freeze_heap()` at start-up makes the collections that do
    happen between samples cheap.)
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - t0) / inner
    finally:
        if was_enabled:
            gc.enable()


def freeze_heap() -> None:
    """Collect once, then move every object alive now out of the collector's sight (gc.freeze)."""
    gc.collect()
    gc.freeze()


def calibrate(fn: Callable[[], object], min_sample_s: float, max_inner: int = 10_000) -> int:
    """Calls per sample so that one sample lasts about min_sample_s (fn is called once here)."""
    t = _sample(fn, 1)
    return int(min(max_inner, max(1, math.ceil(min_sample_s / max(t, 1e-7)))))


def compare(fns: Dict[str, Callable[[], object]], repeats: int, warmup: int = 1, inner: int = 1,
            budget_s: Optional[float] = None, min_repeats: int = 3) -> Dict[str, Stats]:
    """Time several variants side by side: per repeat each runs once, order alternating.

    budget_s: when one repeat (all variants) takes so long that `repeats` of them would
    exceed budget_s, stop after as many as fit, but never fewer than min_repeats.
    """
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    freeze_heap()  # whatever the warm-up imported or built stays out of the timed collections
    out = {n: Stats() for n in names}
    t0 = time.perf_counter()
    for r in range(repeats):
        if budget_s is not None and r >= min(min_repeats, repeats):
            per_repeat = (time.perf_counter() - t0) / r
            if (r + 1) * per_repeat > budget_s:
                break
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].samples.append(_sample(fns[n], inner))
    return out


# -- the machine -----------------------------------------------------------------------------------

def _cpu_model() -> str:
    from mixtral_edu.tiny.evaluate import cpu_name
    return cpu_name()


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine_info() -> dict:
    import transformers
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_available": affinity,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "git_commit": commit + (" (with uncommitted changes)" if dirty else ""),
    }


# -- models ------------------------------------------------------------------------------------------

def quiet_transformers() -> None:
    import transformers
    transformers.logging.set_verbosity_error()


def our_config(name: str):
    """mixtral_edu's MixtralConfig of a benchmark model (for the size formulas)."""
    import mixtral_edu
    if name == "tiny":
        from mixtral_edu.tiny.pretrained import TINY_DIR
        return mixtral_edu.MixtralConfig.from_pretrained(TINY_DIR)
    return mixtral_edu.MixtralConfig(**model_kwargs(name))


def build_ours(name: str, attn: str, seed: int = 0):
    """Our MixtralForCausalLM in eval mode: the shipped tiny model, or a seeded random config."""
    import mixtral_edu
    if name == "tiny":
        from mixtral_edu.tiny.pretrained import load_tiny
        return load_tiny(attn_implementation=attn)[0].eval()
    torch.manual_seed(seed)
    return mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**model_kwargs(name),
                                                                    attn_implementation=attn)).eval()


def build_theirs(name: str, attn: str, state_dict: Optional[dict] = None):
    """transformers' MixtralForCausalLM with the same config (and weights, when state_dict is given)."""
    import transformers
    quiet_transformers()
    if name == "tiny":
        from mixtral_edu.tiny.pretrained import TINY_DIR
        model = transformers.MixtralForCausalLM.from_pretrained(TINY_DIR, attn_implementation=attn,
                                                                torch_dtype=torch.float32)
    else:
        model = transformers.MixtralForCausalLM(transformers.MixtralConfig(**model_kwargs(name),
                                                                           attn_implementation=attn))
        if state_dict is not None:
            model.load_state_dict(state_dict, strict=True)
    assert model.config._attn_implementation == attn, model.config._attn_implementation
    return model.eval()


def build_pair(name: str, attn: str, seed: int = 0):
    """(ours, theirs) with identical weights and the same attention implementation."""
    ours = build_ours(name, attn, seed)
    theirs = build_theirs(name, attn, None if name == "tiny" else ours.state_dict())
    return ours, theirs


def prompt(batch: int, length: int, vocab_size: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of random ordinary tokens (never pad/bos/eos), no padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab_size, (batch, length), generator=g)
    return ids, torch.ones_like(ids)


def greedy(model, ids, mask, new_tokens: int, **kw):
    """Greedy generation of exactly new_tokens tokens: no eos stopping on either side."""
    return model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                          eos_token_id=None, pad_token_id=model.config.pad_token_id, **kw)
