"""Shared by every test folder (pytest loads this file for all of tests/).

The helpers of the "proof of equality" suite, mixtral_edu against transformers 4.41.2, live
here: tiny configs, ids, masks, and `make_pair` (ours, theirs) with the very same weights
(ours are initialised from a seed, then loaded into transformers' model with strict=True),
so any difference in the outputs is a difference in the code. transformers is imported
only by the helpers that need it: tests that do not compare with it never load it.
Import them as `from conftest import make_pair`; `import browser` gives tests/browser.py.
"""
from __future__ import annotations

import os
import sys
import tempfile

# Set before transformers is imported anywhere: the machine is offline and no
# test may try the hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Keep hypothesis' caches (example database, constants) out of the repository.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY",
                      os.path.join(tempfile.gettempdir(), "mixtral_edu_tests_hypothesis"))

# tests/ itself, so the shared modules (this file, browser.py) import from any subfolder
# whatever pytest's import mode
TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from typing import Optional, Tuple  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import mixtral_edu  # noqa: E402

# The models are tiny and the 2 CPU cores are shared: with several intra-op threads
# each forward spends ~1 s waiting on busy cores, with one it takes milliseconds.
torch.set_num_threads(1)


def _transformers():
    """transformers, imported on first use (deprecation chatter such as seen_tokens is expected)."""
    import transformers
    transformers.logging.set_verbosity_error()
    return transformers


PAD, BOS, EOS = 0, 1, 2

# The tiny model every test starts from. initializer_range is raised from 0.02 to
# 0.2 on purpose: with 0.02 and hidden_size 32 the attention would be almost
# uniform and the router almost indifferent, so positional, masking or routing
# bugs could hide below the tolerance. rope_theta 1e4 (not 1e6) gives head_dim 8
# rotations that change noticeably over a few dozen positions for the same reason.
TINY = dict(
    vocab_size=97,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_local_experts=4,
    num_experts_per_tok=2,
    max_position_embeddings=256,
    rope_theta=10000.0,
    initializer_range=0.2,
    pad_token_id=PAD,
    bos_token_id=BOS,
    eos_token_id=EOS,
    attn_implementation="eager",
)


def tiny_kwargs(**overrides) -> dict:
    kw = dict(TINY)
    kw.update(overrides)
    return kw


def make_pair(seed: int = 0, **config_overrides) -> Tuple[mixtral_edu.MixtralForCausalLM,
                                                          "transformers.MixtralForCausalLM"]:
    """(ours, theirs): MixtralForCausalLM in eval mode with identical weights.

    The attention implementation is always passed explicitly to transformers:
    left unset, transformers 4.41.2 picks "sdpa" by itself while ours defaults to "eager".
    """
    transformers = _transformers()
    kw = tiny_kwargs(**config_overrides)
    torch.manual_seed(seed)
    ours = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**kw)).eval()
    theirs = transformers.MixtralForCausalLM(transformers.MixtralConfig(**kw)).eval()
    assert theirs.config._attn_implementation == kw["attn_implementation"]
    theirs.load_state_dict(ours.state_dict(), strict=True)
    return ours, theirs


def random_ids(batch: int, length: int, seed: int = 0, low: int = 3, high: int = TINY["vocab_size"]) -> torch.Tensor:
    """(B, T) token ids that are never pad/bos/eos (so no prompt looks right-padded)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(low, high, (batch, length), generator=g)


def left_padded(batch: int, length: int, pads: Optional[list] = None, seed: int = 0
                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, T); row b starts with pads[b] pad tokens."""
    if pads is None:
        pads = [(2 * b) % max(length - 1, 1) for b in range(batch)]
    ids = random_ids(batch, length, seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b, p in enumerate(pads):
        ids[b, :p] = PAD
        mask[b, :p] = 0
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids as generation computes them: first real token is 0, pads get 1."""
    pos = mask.long().cumsum(-1) - 1
    return pos.masked_fill(mask == 0, 1)


def to_hf_cache(cache) -> "transformers.DynamicCache":
    """A transformers DynamicCache holding (clones of) the same tensors as our cache or legacy tuple."""
    transformers = _transformers()
    legacy = cache.to_legacy_cache() if isinstance(cache, mixtral_edu.Cache) else cache
    return transformers.DynamicCache.from_legacy_cache(
        tuple((k.clone(), v.clone()) for k, v in legacy))


def assert_legacy_equal(a, b, atol: float = 1e-5) -> None:
    """Two legacy caches: tuples of (key, value) tuples of equal tensors."""
    assert type(a) is tuple and type(b) is tuple
    assert len(a) == len(b)
    for (ka, va), (kb, vb) in zip(a, b):
        torch.testing.assert_close(ka, kb, atol=atol, rtol=0)
        torch.testing.assert_close(va, vb, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def pair():
    """The default tiny eager pair, shared within a test module (tests must not modify it)."""
    return make_pair()


# -- the exercise checkers' mutation score (tests/exercises) -----------------------------------------

def pytest_terminal_summary(terminalreporter):
    harness = sys.modules.get("exercise_harness")  # loaded only when mutation tests ran
    results = harness.RESULTS if harness is not None else None
    if not results:
        return
    total = sum(len(v) for v in results.values())
    caught = sum(c for v in results.values() for _, c, _ in v)
    named = sum(n for v in results.values() for _, _, n in v)
    write = terminalreporter.write_line
    write("")
    write(f"mutation score: {caught}/{total} wrong answers caught ({caught / total:.0%}), "
          f"{named}/{total} with a hint naming the mistake ({named / total:.0%})")
    for key in sorted(results, key=lambda k: tuple(int(x) for x in k.split("."))):
        v = results[key]
        missed = [name for name, c, n in v if not n]
        write(f"  {key}: {sum(n for _, _, n in v)}/{len(v)}" + (f"  (missed: {', '.join(missed)})" if missed else ""))
