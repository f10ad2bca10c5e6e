"""Exercises of notebook 10 (full-size Mixtral): count parameters and KV-cache bytes from a config.

    check_parameter_count(count)     count(config) -> (total, active)
    check_kv_bytes_per_token(fn)     fn(config, bytes_per_element) -> bytes one more cached token costs

Both compare with `mixtral_edu.full_size.sizes` (whose numbers the test suite checks against
real models) on the published Mixtral configs and on small variants that catch
the usual slips: GQA, tied embeddings, the router, the norms, K of E experts.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

from . import ExerciseResult, call_learner
from ..modeling.config import MixtralConfig
from ..full_size.presets import mixtral_8x7b, mixtral_8x22b
from ..full_size.sizes import format_bytes, format_count, kv_cache_bytes_per_token, parameter_count


def _small(**overrides) -> MixtralConfig:
    kw = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8,
              num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
    kw.update(overrides)
    return MixtralConfig(**kw)


def _cases() -> List[Tuple[str, MixtralConfig]]:
    return [
        ("Mixtral 8x7B", mixtral_8x7b()),
        ("Mixtral 8x22B", mixtral_8x22b()),
        ("small: 8 query heads, 2 kv heads, 4 experts, top-2", _small()),
        ("small with top_k=1 and 6 experts", _small(num_experts_per_tok=1, num_local_experts=6)),
        ("small with tied embeddings (lm_head shares embed_tokens)", _small(tie_word_embeddings=True)),
        ("small without GQA (num_key_value_heads = num_attention_heads)", _small(num_key_value_heads=8)),
    ]


# -- parameters ------------------------------------------------------------------------

def _parameter_hint(c: MixtralConfig, got: int, want: int, which: str) -> str:
    """Name the component that explains the difference got - want, if one does."""
    C, I, L, V = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    H, Hkv, D, E, K = c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.num_local_experts, c.num_experts_per_tok
    diff = got - want
    expert = 3 * C * I
    known = {
        -V * C: "you left out one V x C matrix: the embeddings, or lm_head (stored separately unless "
                "tie_word_embeddings is true).",
        V * C: "you counted lm_head although tie_word_embeddings is true: it is the embedding matrix, stored once."
               if c.tie_word_embeddings else "you counted one V x C matrix too many.",
        -(2 * L + 1) * C: "you forgot the RMSNorm weights: two per layer (C each) plus the final norm.",
        -2 * L * C: "you forgot the two RMSNorm weights per layer (C each).",
        -C: "you forgot the final norm (C weights).",
        -L * C * E: "you forgot the router: gate is (E, C) in every layer, and it runs for every token.",
        2 * L * C * (H - Hkv) * D: "k_proj and v_proj have only Hkv heads (grouped-query attention): they are "
                                   "(Hkv*D, C), not (H*D, C).",
        -L * E * C * I if which == "total" else -L * K * C * I: "an expert has three matrices: w1 and w3 (I, C) "
                                                                "and w2 (C, I).",
    }
    if which == "active":
        known.update({
            L * (E - K) * expert: "active counts only the K chosen experts per layer, not all E.",
            -L * (K - 1) * expert: "active includes K experts per layer (top-K), not one.",
            -L * C * E: "the router is active: every token is scored by the gate, in every layer.",
        })
        if abs(got - parameter_count(c).total * K / E) <= 1:
            return ("total * K / E scales *everything* down, but attention, embeddings, norms and router "
                    "are used by every token: only the experts are sparse.")
    for delta, text in known.items():
        if diff == delta:
            return text
    return (f"off by {diff:+,}. Count per layer: attention (q, k, v, o), router (E x C), E experts of "
            "3 C x I matrices, two norms; then embeddings, lm_head and the final norm.")


def check_parameter_count(count: Callable) -> ExerciseResult:
    """count(config) -> (total, active): stored parameters, and those one token uses."""
    cases = _cases()
    for label, cfg in cases:
        got, err = call_learner(count, (cfg,), "count", label)
        if err is not None:
            return err
        want = parameter_count(cfg)
        if not isinstance(got, (tuple, list)) or len(got) != 2:
            return ExerciseResult(False, f"case {label}: return a pair (total, active), got {got!r}.")
        total, active = (int(x) for x in got)
        if total != want.total:
            return ExerciseResult(False, f"case {label}: total {total:,} ({format_count(total)}), expected "
                                         f"{want.total:,} ({format_count(want.total)}).\nHint: "
                                         + _parameter_hint(cfg, total, want.total, "total"))
        if active != want.active:
            return ExerciseResult(False, f"case {label}: active {active:,} ({format_count(active)}), expected "
                                         f"{want.active:,} ({format_count(want.active)}).\nHint: "
                                         + _parameter_hint(cfg, active, want.active, "active"))
    return ExerciseResult(True, f"count agrees with mixtral_edu.full_size.sizes.parameter_count on all {len(cases)} configs "
                                f"(8x7B: {parameter_count(mixtral_8x7b())}).")


# -- KV cache ---------------------------------------------------------------------------

def check_kv_bytes_per_token(kv_bytes_per_token: Callable) -> ExerciseResult:
    """kv_bytes_per_token(config, bytes_per_element) -> int, e.g. bytes_per_element=2 for bf16."""
    import torch
    dtypes = {4: torch.float32, 2: torch.bfloat16, 1: torch.int8}
    cases = [(f"{label}, {n} byte(s) per element", cfg, n) for label, cfg in _cases()[:3] for n in (2, 4)]
    cases.append(("small, 1 byte per element (an 8-bit cache)", _small(), 1))
    for label, cfg, n in cases:
        got, err = call_learner(kv_bytes_per_token, (cfg, n), "kv_bytes_per_token", label)
        if err is not None:
            return err
        want = kv_cache_bytes_per_token(cfg, dtypes[n])
        try:
            got = int(got)
        except Exception:
            return ExerciseResult(False, f"case {label}: return a number of bytes (an int), got {got!r}.")
        if got == want:
            continue
        ratio = got / want
        G = cfg.num_attention_heads // cfg.num_key_value_heads
        hints = [
            (G, "you cached all H query heads. With grouped-query attention only the Hkv key/value heads are "
                "cached: num_key_value_heads, not num_attention_heads."),
            (0.5, "count both the keys and the values: a factor 2."),
            (1 / cfg.num_hidden_layers, "every layer has its own cache: multiply by the number of layers L."),
            (8, "that is bits: bytes_per_element is already in bytes."),
            (1 / n, "multiply by the bytes per element."),
            (cfg.num_attention_heads, "the keys of one head are head_dim = C / H numbers, not C."),
        ]
        for r, text in hints:
            if abs(ratio - r) < 1e-9 and r != 1:
                return ExerciseResult(False, f"case {label}: {got:,} bytes, expected {want:,}.\nHint: {text}")
        return ExerciseResult(False, f"case {label}: {got:,} bytes, expected {want:,} (ratio {ratio:.3g}).\nHint: "
                                     "2 (key and value) x L layers x Hkv kv heads x D head_dim x bytes per element.")
    per_token = format_bytes(kv_cache_bytes_per_token(mixtral_8x7b(), torch.bfloat16))
    return ExerciseResult(True, f"kv_bytes_per_token agrees with mixtral_edu.full_size.sizes.kv_cache_bytes_per_token on "
                                f"all {len(cases)} cases (8x7B in bf16: {per_token} per token).")
