"""Plausible wrong answers to notebook 10's exercises: each gets NOT YET with a hint naming the mistake,
and no hint prints an expected value."""
import math

import torch

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import full_size as ex
from mixtral_edu.full_size import sizes


# -- 10.1 predicted shapes ----------------------------------------------------------------------------------

def _shapes(c, B, T, P, **wrong):
    S, H, Hkv, D = P + T, c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    out = {"query_states": (B, H, T, D), "cached_keys": (B, Hkv, S, D), "attention_pattern": (B, H, T, S),
           "router_logits": (B * T, c.num_local_experts), "logits": (B, T, c.vocab_size)}
    for key, make in wrong.items():
        out[key] = make(B, T, P, S, H, Hkv, D, c)
    return out


SHAPES = [
    Mutant("10.1", "cache with H heads", lambda c, B, T, P: _shapes(
        c, B, T, P, cached_keys=lambda B, T, P, S, H, Hkv, D, c: (B, H, S, D)), ["Hkv key/value heads"]),
    Mutant("10.1", "cache holds only the new tokens", lambda c, B, T, P: _shapes(
        c, B, T, P, cached_keys=lambda B, T, P, S, H, Hkv, D, c: (B, Hkv, T, D)), ["plus the T new ones"]),
    Mutant("10.1", "queries before the transpose", lambda c, B, T, P: _shapes(
        c, B, T, P, query_states=lambda B, T, P, S, H, Hkv, D, c: (B, T, H, D)), ["heads before positions"]),
    Mutant("10.1", "pattern over the new keys only", lambda c, B, T, P: _shapes(
        c, B, T, P, attention_pattern=lambda B, T, P, S, H, Hkv, D, c: (B, H, T, T)), ["P cached ones"]),
    Mutant("10.1", "pattern with kv heads", lambda c, B, T, P: _shapes(
        c, B, T, P, attention_pattern=lambda B, T, P, S, H, Hkv, D, c: (B, Hkv, T, S)), ["repeat_kv"]),
    Mutant("10.1", "router logits not flattened", lambda c, B, T, P: _shapes(
        c, B, T, P, router_logits=lambda B, T, P, S, H, Hkv, D, c: (B, T, c.num_local_experts)), ["flattened"]),
    Mutant("10.1", "logits of the last position only", lambda c, B, T, P: _shapes(
        c, B, T, P, logits=lambda B, T, P, S, H, Hkv, D, c: (B, c.vocab_size)), ["every position"]),
    Mutant("10.1", "a shape as a string", lambda c, B, T, P: _shapes(
        c, B, T, P, logits=lambda B, T, P, S, H, Hkv, D, c: "(B, T, V)"), ["tuple of whole numbers"]),
    Mutant("10.1", "a key missing", lambda c, B, T, P: {k: v for k, v in _shapes(c, B, T, P).items() if k != "logits"},
           ["exactly these keys"]),
]


# -- 10.2 KV cache bytes --------------------------------------------------------------------------------------

def _kv(c, n, b, nbytes, factor=2, heads="kv", layers=True, batch=True, per_head="head_dim", bits=False):
    D = c.hidden_size // c.num_attention_heads if per_head == "head_dim" else c.hidden_size
    h = c.num_key_value_heads if heads == "kv" else c.num_attention_heads
    per_token = factor * (c.num_hidden_layers if layers else 1) * h * D * nbytes * (8 if bits else 1)
    return per_token * n * (b if batch else 1)


def kv_stub(config, n_tokens, batch_size, bytes_per_element):   # the notebook's broken function, untouched
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = config.num_hidden_layers * config.num_attention_heads * head_dim * bytes_per_element
    return per_token * n_tokens * batch_size


KV = [
    Mutant("10.2", "both bugs (the stub)", kv_stub, ["besides its key"]),
    Mutant("10.2", "query heads cached", lambda *a: _kv(*a, heads="query"), ["query heads"]),
    Mutant("10.2", "keys only", lambda *a: _kv(*a, factor=1), ["besides its key"]),
    Mutant("10.2", "bits", lambda *a: _kv(*a, bits=True), ["bits"]),
    Mutant("10.2", "one layer", lambda *a: _kv(*a, layers=False), ["every layer"]),
    Mutant("10.2", "one sequence", lambda *a: _kv(*a, batch=False), ["batch_size"]),
    Mutant("10.2", "hidden size per head", lambda *a: _kv(*a, per_head="hidden"), ["head_dim"]),
    Mutant("10.2", "a float", lambda *a: _kv(*a) + 0.5, ["whole number"]),
    Mutant("10.2", "off by one token", lambda c, n, b, nb: _kv(c, n + 1, b, nb), ["too large"]),
]


# -- 10.3 the longest context that fits --------------------------------------------------------------------------

DT = {4: torch.float32, 2: torch.bfloat16, 1: torch.int8}


def _context(c, memory, b, nbytes, rolling, params="total", weights=True, batch=True, rounding="floor",
             clamp=True, honour_rolling=True, window_as_limit=False, kv_factor=1):
    count = sizes.parameter_count(c)
    free = memory - (getattr(count, params) * nbytes if weights else 0)
    if free < 0 and clamp:
        return 0
    per_token = (b if batch else 1) * sizes.kv_cache_bytes_per_token(c, DT[nbytes]) // kv_factor
    if honour_rolling and rolling and c.sliding_window is not None:
        if window_as_limit:
            return c.sliding_window
        if c.sliding_window * per_token <= free:
            return math.inf
    return -(-free // per_token) if rounding == "ceil" else free // per_token


CONTEXT = [
    Mutant("10.3", "active parameters", lambda *a: _context(*a, params="active"), ["active", "total"]),
    Mutant("10.3", "weights forgotten", lambda *a: _context(*a, weights=False), ["weights"]),
    Mutant("10.3", "batch forgotten", lambda *a: _context(*a, batch=False), ["batch_size"]),
    Mutant("10.3", "rounded up", lambda *a: _context(*a, rounding="ceil"), ["round down"]),
    Mutant("10.3", "negative when the weights do not fit", lambda *a: _context(*a, clamp=False), ["return 0"]),
    Mutant("10.3", "rolling buffer ignored", lambda *a: _context(*a, honour_rolling=False), ["math.inf"]),
    Mutant("10.3", "the window as the limit", lambda *a: _context(*a, window_as_limit=True), ["without end"]),
    Mutant("10.3", "keys only in the cache", lambda *a: _context(*a, kv_factor=2), ["2 x layers"]),
    Mutant("10.3", "a float", lambda *a: float(_context(*a)) + 0.5, ["whole number"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, SHAPES + KV + CONTEXT)


def test_no_hint_prints_an_expected_value():
    """The number a check compares against never appears in the NOT YET message of that case."""
    for key, mutants in (("10.2", KV), ("10.3", CONTEXT)):
        name, check = ex.EXERCISES[key]
        for m in mutants:
            message = check(m.fn).message
            for label, *args in (ex._kv_cases() if key == "10.2" else ex._context_cases()):
                if label not in message:
                    continue
                want = (sizes.kv_cache_bytes(args[0], args[1], batch_size=args[2], dtype=DT[args[3]])
                        if key == "10.2" else ex.reference_max_context(*args))
                if want not in (0, math.inf):
                    assert f"{want:,}" not in message and str(want) not in message, (m.name, message)
    for m in SHAPES:
        message = ex.check_predicted_shapes(m.fn).message
        for label, config, B, T, P in ex._shape_cases():
            if label in message:
                for shape in ex.reference_shapes(config, B, T, P).values():
                    assert str(shape) not in message, (m.name, message)
