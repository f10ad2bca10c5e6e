"""Exercises of notebook 10 (full-size Mixtral).

    10.1 predict             predicted_shapes(config, batch_size, seq_len, past_len) -> dict of five shapes
    10.2 find the bug        kv_cache_bytes(config, n_tokens, batch_size, bytes_per_element) -> int
    10.3 implement a variant max_context(config, memory_bytes, batch_size, bytes_per_element, rolling_window) -> int

The references are `mixtral_edu.full_size.sizes` (checked by the test suite against real models
and against a traced forward on the meta device). No hint prints an expected value: the hints
name the mistake a wrong answer matches, or say which part to look at.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch

from . import ExerciseResult, NotYet, call, checker
from ._across_cases import answers, most_consistent
from ..full_size.presets import mixtral_8x7b, mixtral_8x22b
from ..full_size.sizes import kv_cache_bytes as reference_kv_cache_bytes
from ..full_size.sizes import kv_cache_bytes_per_token, parameter_count, shape_table
from ..i18n import N_, _
from ..modeling.config import MixtralConfig

# -- what the checks say (one place; N_ marks them for the catalog, _() translates them when shown) -----

SHAPE_KEYS = ("query_states", "cached_keys", "attention_pattern", "router_logits", "logits")
SHAPE_HINTS = {
    "dict": N_("return a dict with exactly these keys: query_states, cached_keys, attention_pattern, router_logits, "
               "logits."),
    "tuple": N_("{key}: give the shape as a tuple of whole numbers, e.g. (2, 3, 4)."),
    "query_states": N_("queries exist only for the T new tokens, one per query head, heads before positions "
                       "(the projection is split into heads and transposed)."),
    "query_states_kv": N_("every one of the H query heads has its own queries; only keys and values have Hkv heads."),
    "cached_keys": N_("the cache keeps Hkv key/value heads per layer, not H query heads (grouped-query attention)."),
    "cached_keys_len": N_("after this call the cache holds the P positions it had plus the T new ones."),
    "attention_pattern": N_("each of the T new queries scores every key it may see, the P cached ones and the "
                            "T new ones; after repeat_kv every query head has its keys."),
    "attention_pattern_kv": N_("repeat_kv has run before the scores: there is one pattern per query head, H of them."),
    "router_logits": N_("the router sees the N = B * T tokens flattened into one list, one score per expert."),
    "logits": N_("MixtralForCausalLM.forward in 4.41.2 returns logits for every position of the call, one score "
                 "per vocabulary entry; generate keeps only the last position afterwards."),
    "generic": N_("write it with the legend's letters first (B, T, P, S, H, Hkv, D, N, E, V), then substitute."),
}
KV_HINTS = {
    "number": N_("return a whole number of bytes (an int)."),
    "stub_no_gqa": N_("two symptoms: without grouped-query attention your count is half the right one (each cached "
                      "token stores something besides its key), and with it your count also grows with the number "
                      "of query heads (which heads does each layer cache?)."),
    "half": N_("your count is half of it: each cached token stores something besides its key."),
    "query_heads": N_("your count grows with the number of query heads: the cache stores keys and values for the "
                      "Hkv key/value heads only."),
    "bits": N_("that counts bits: bytes_per_element is already in bytes."),
    "layers": N_("every layer keeps its own cache: multiply by the number of layers."),
    "batch": N_("every sequence of the batch has its own cache: multiply by batch_size."),
    "hidden": N_("per head the cache holds head_dim = C / H numbers, not the hidden size C."),
    "too_big": N_("too large: count per token 2 (key and value) x layers x kv heads x head_dim x bytes."),
    "too_small": N_("too small: count per token 2 (key and value) x layers x kv heads x head_dim x bytes."),
}
CONTEXT_HINTS = {
    "number": N_("return a whole number of tokens (an int), or math.inf when no length is too long."),
    "active": N_("you budgeted the *active* parameters. Memory holds every expert (any token may pick any of "
                 "them): count the total."),
    "no_weights": N_("the weights sit in the same memory: subtract them from the budget before the cache."),
    "no_batch": N_("each of the batch_size sequences has its own cache of that many tokens."),
    "ceil": N_("one token too many: round down, the last token must fit entirely."),
    "negative": N_("when the weights alone do not fit, no context does: return 0, not a negative length."),
    "rolling_ignored": N_("with a rolling buffer the cache stops growing at sliding_window slots: once weights and "
                          "W slots fit, any length fits (math.inf)."),
    "rolling_window": N_("the window is how many slots the buffer keeps, not a limit on the context: a rolling "
                         "buffer lets the context grow without end once W slots fit."),
    "rolling_no_window": N_("rolling_window only matters when the config has a sliding_window; this one has none."),
    "rolling_too_small": N_("here even the W slots of the rolling buffer do not all fit: the context is limited by "
                            "the memory, as without a window."),
    "cache_per_token": N_("count the cache of one token as the model stores it: 2 x layers x kv heads x head_dim x "
                          "bytes."),
    "too_big": N_("too long: check what you subtract from the budget and what one token costs."),
    "too_small": N_("too short: check what you subtract from the budget and what one token costs."),
}
DTYPES = {4: torch.float32, 2: torch.bfloat16, 1: torch.int8}


def _small(**overrides) -> MixtralConfig:
    kw = dict(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8,
              num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
    kw.update(overrides)
    return MixtralConfig(**kw)


# -- 10.1 predict the shapes -----------------------------------------------------------------------

def reference_shapes(config: MixtralConfig, batch_size: int, seq_len: int, past_len: int) -> Dict[str, tuple]:
    """The five shapes, read from sizes.shape_table (which the notebook checks against a traced meta forward)."""
    rows = {r["name"]: tuple(r["shape"]) for r in shape_table(config, batch_size, seq_len, past_len)}
    attn = "model.layers.{i}.self_attn"
    return {"query_states": rows[attn + ".hook_q"], "cached_keys": rows["past_key_values[i]"],
            "attention_pattern": rows[attn + ".hook_pattern"],
            "router_logits": rows["model.layers.{i}.block_sparse_moe.hook_router_logits"],
            "logits": rows["hook_logits"]}


def _shape_cases():
    return [(N_("Mixtral 8x7B, B=1, T=16 new tokens, P=0 cached"), mixtral_8x7b(), 1, 16, 0),
            (N_("Mixtral 8x22B, one decode step: B=2, T=1, P=100"), mixtral_8x22b(), 2, 1, 100),
            (N_("small config, B=3, T=5, P=7"), _small(), 3, 5, 7)]


def _shape_mistakes(c: MixtralConfig, B: int, T: int, P: int) -> Dict[str, List[Tuple[str, tuple]]]:
    H, Hkv, D, E, V, S = (c.num_attention_heads, c.num_key_value_heads, c.head_dim, c.num_local_experts,
                          c.vocab_size, P + T)
    return {
        "query_states": [(SHAPE_HINTS["query_states"], (B, T, H, D)), (SHAPE_HINTS["query_states"], (B, H, S, D)),
                         (SHAPE_HINTS["query_states_kv"], (B, Hkv, T, D))],
        "cached_keys": [(SHAPE_HINTS["cached_keys"], (B, H, S, D)), (SHAPE_HINTS["cached_keys_len"], (B, Hkv, T, D)),
                        (SHAPE_HINTS["cached_keys_len"], (B, Hkv, P, D)), (SHAPE_HINTS["cached_keys"], (B, S, Hkv, D))],
        "attention_pattern": [(SHAPE_HINTS["attention_pattern"], (B, H, T, T)),
                              (SHAPE_HINTS["attention_pattern"], (B, H, S, S)),
                              (SHAPE_HINTS["attention_pattern_kv"], (B, Hkv, T, S))],
        "router_logits": [(SHAPE_HINTS["router_logits"], (B, T, E))],
        "logits": [(SHAPE_HINTS["logits"], (B, V)), (SHAPE_HINTS["logits"], (B, 1, V))],
    }


def _as_shape(value):
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return tuple(value)
    return None


@checker
def check_predicted_shapes(predicted_shapes: Callable) -> ExerciseResult:
    """predicted_shapes(config, batch_size, seq_len, past_len) -> {key: shape tuple} for the five SHAPE_KEYS."""
    cases = _shape_cases()
    for label, config, B, T, P in cases:
        got = call(predicted_shapes, config, B, T, P, name="predicted_shapes", label=label)
        if not isinstance(got, dict) or set(got) != set(SHAPE_KEYS):
            raise NotYet(_("case {label}: the result is not a dict with the five keys.").format(label=_(label)),
                         SHAPE_HINTS["dict"])
        want = reference_shapes(config, B, T, P)
        mistakes = _shape_mistakes(config, B, T, P)
        for key in SHAPE_KEYS:
            shape = _as_shape(got[key])
            if shape is None:
                raise NotYet(_("case {label}: {key} is a {kind}.").format(label=_(label), key=key,
                                                                          kind=type(got[key]).__name__),
                             _(SHAPE_HINTS["tuple"]).format(key=key))
            if shape == want[key]:
                continue
            why = next((hint for hint, wrong in mistakes[key] if wrong == shape), None)
            if why is None:
                why = SHAPE_HINTS[key] if len(shape) == len(want[key]) else SHAPE_HINTS["generic"]
            raise NotYet(_("case {label}: {key} is not the shape this call produces.").format(label=_(label), key=key),
                         why)
    return ExerciseResult(True, _("predicted_shapes is right for all {n} calls (prefill and decode, with and without "
                                  "a cache). The next cells check the same shapes on a traced run.").format(
        n=len(cases)))


# -- 10.2 KV cache bytes: find the bug ------------------------------------------------------------------

def _kv_cases():
    return [(N_("small config without GQA (num_key_value_heads = num_attention_heads), 10 tokens, 2 bytes"),
             _small(num_key_value_heads=8), 10, 1, 2),
            (N_("Mixtral 8x7B, 32,768 tokens, one sequence, bfloat16 (2 bytes)"), mixtral_8x7b(), 32768, 1, 2),
            (N_("Mixtral 8x22B, 1,000 tokens, batch of 4, float32 (4 bytes)"), mixtral_8x22b(), 1000, 4, 4),
            (N_("small config with GQA, 7 tokens, batch of 3, 1 byte (an 8-bit cache)"), _small(), 7, 3, 1)]


def _kv_mistakes(c: MixtralConfig, n: int, b: int, nbytes: int, want: int):
    G = c.num_attention_heads // c.num_key_value_heads
    both = want * G // 2
    candidates = [(KV_HINTS["stub_no_gqa"], both)] if G > 1 else []
    return candidates + [
        (KV_HINTS["half"], want // 2),
        (KV_HINTS["query_heads"], want * G),
        (KV_HINTS["bits"], want * 8),
        (KV_HINTS["layers"], want // c.num_hidden_layers),
        (KV_HINTS["batch"], want // b),
        (KV_HINTS["hidden"], want * c.num_attention_heads),
    ]


def _whole(value):
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _exact_answers(fn: Callable, name: str, cases, wants, convert: Callable, number_hint: str, mistakes_of: Callable,
                   shown: Callable, too: Dict[bool, str]) -> None:
    """NOT YET at the first case whose converted answer differs from want, naming the most consistent mistake."""
    results = answers(fn, [(c[0], c[1:]) for c in cases], name)
    for (label, *args), (_label, got, stop), want in zip(cases, results, wants):
        if stop is not None:
            raise stop
        value = convert(got)
        if value is None:
            raise NotYet(_("case {label}: the result is a {kind}, not a whole number.").format(
                label=_(label), kind=type(got).__name__), number_hint)
        if value == want:
            continue
        hint = most_consistent([(convert(g), mistakes_of(*a, wt))
                                for (_, *a), (_, g, _), wt in zip(cases, results, wants)])
        raise NotYet(_("case {label}: {value} is not right.").format(label=_(label), value=shown(value)),
                     hint or too[value > want])


@checker
def check_kv_cache_bytes(kv_cache_bytes: Callable) -> ExerciseResult:
    """kv_cache_bytes(config, n_tokens, batch_size, bytes_per_element) -> bytes of keys and values cached."""
    cases = _kv_cases()
    wants = [reference_kv_cache_bytes(c, n, batch_size=b, dtype=DTYPES[nbytes]) for _, c, n, b, nbytes in cases]
    _exact_answers(kv_cache_bytes, "kv_cache_bytes", cases, wants, _whole, KV_HINTS["number"],
                   lambda *a: [(h, w) for h, w in _kv_mistakes(*a) if w != a[-1]],
                   lambda v: _("{v:,} bytes").format(v=v),
                   {True: KV_HINTS["too_big"], False: KV_HINTS["too_small"]})
    return ExerciseResult(True, _("kv_cache_bytes agrees with mixtral_edu.full_size.sizes on all {n} cases.").format(
        n=len(cases)))


# -- 10.3 the longest context that fits: implement a variant ------------------------------------------------

GB = 10 ** 9


def reference_max_context(config: MixtralConfig, memory_bytes: int, batch_size: int = 1, bytes_per_element: int = 2,
                          rolling_window: bool = False):
    """Tokens per sequence that fit next to the weights (all experts, same dtype); math.inf when unbounded."""
    dtype = DTYPES[bytes_per_element]
    free = memory_bytes - parameter_count(config).total * bytes_per_element
    if free < 0:
        return 0
    per_token = batch_size * kv_cache_bytes_per_token(config, dtype)
    if rolling_window and config.sliding_window is not None and config.sliding_window * per_token <= free:
        return math.inf
    return free // per_token


def _context_cases():
    windowed = MixtralConfig.from_dict(mixtral_8x7b().to_dict(), sliding_window=4096)
    return [
        (N_("Mixtral 8x7B, bfloat16, two 80 GB GPUs (160 GB), one sequence"), mixtral_8x7b(), 160 * GB, 1, 2, False),
        (N_("Mixtral 8x7B, bfloat16, one 80 GB GPU"), mixtral_8x7b(), 80 * GB, 1, 2, False),
        (N_("Mixtral 8x22B, 8-bit, four 80 GB GPUs, batch of 8"), mixtral_8x22b(), 320 * GB, 8, 1, False),
        (N_("Mixtral 8x7B with sliding_window 4096, rolling buffer, 160 GB, batch of 4"), windowed, 160 * GB, 4, 2,
         True),
        (N_("the same windowed model without a rolling buffer (4.41.2's DynamicCache)"), windowed, 160 * GB, 4, 2,
         False),
        (N_("windowed 8x7B, rolling buffer, 94 GB, batch of 32: not even W slots fit"), windowed, 94 * GB, 32, 2, True),
        (N_("Mixtral 8x7B (no window), rolling buffer asked for, 100 GB"), mixtral_8x7b(), 100 * GB, 1, 2, True),
    ]


def _context_mistakes(c, memory, b, nbytes, rolling, want):
    count = parameter_count(c)
    per_token = kv_cache_bytes_per_token(c, DTYPES[nbytes])
    free = memory - count.total * nbytes
    out = [(CONTEXT_HINTS["active"], (memory - count.active * nbytes) // (b * per_token)),
           (CONTEXT_HINTS["no_weights"], memory // (b * per_token)),
           (CONTEXT_HINTS["cache_per_token"], free // (b * per_token // 2)),
           (CONTEXT_HINTS["negative"], free // (b * per_token)) if free < 0 else (None, None)]
    if free >= 0:
        out += [(CONTEXT_HINTS["no_batch"], free // per_token),
                (CONTEXT_HINTS["ceil"], -(-free // (b * per_token)))]
    if rolling and c.sliding_window is not None:
        out += [(CONTEXT_HINTS["rolling_ignored"], free // (b * per_token)) if want == math.inf else (None, None),
                (CONTEXT_HINTS["rolling_window"], c.sliding_window) if want == math.inf else (None, None),
                (CONTEXT_HINTS["rolling_too_small"], math.inf) if want != math.inf else (None, None)]
    if rolling and c.sliding_window is None:
        out += [(CONTEXT_HINTS["rolling_no_window"], math.inf)]
    return [(h, w) for h, w in out if h is not None and w != want]


def _context_value(got):
    return math.inf if isinstance(got, float) and got == math.inf else _whole(got)


@checker
def check_max_context(max_context: Callable) -> ExerciseResult:
    """max_context(config, memory_bytes, batch_size, bytes_per_element, rolling_window) -> tokens per sequence."""
    cases = _context_cases()
    wants = [reference_max_context(*c[1:]) for c in cases]
    _exact_answers(max_context, "max_context", cases, wants, _context_value, CONTEXT_HINTS["number"],
                   _context_mistakes, lambda v: "math.inf" if v == math.inf else _("{v:,} tokens").format(v=v),
                   {True: CONTEXT_HINTS["too_big"], False: CONTEXT_HINTS["too_small"]})
    return ExerciseResult(True, _("max_context is right on all {n} cases (weights of every expert, the cache per "
                                  "sequence, and the rolling buffer's cap).").format(n=len(cases)))


EXERCISES = {
    "10.1": ("predicted_shapes", check_predicted_shapes),
    "10.2": ("kv_cache_bytes", check_kv_cache_bytes),
    "10.3": ("max_context", check_max_context),
}
