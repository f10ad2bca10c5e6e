"""Exercises of notebook 00 (orientation).

    00.1 check_left_pad(left_pad)
        left_pad(sequences: list of lists of ids, pad_id) -> (input_ids (B, T), attention_mask (B, T))
    00.2 check_active_parameters(active_parameters)
        active_parameters(config: MixtralConfig) -> int, the parameters one token uses
    00.3 check_predicted_shapes(predicted_shapes)
        predicted_shapes(B, T, V, new_tokens) -> dict of the shapes one generate call produces

References: the tiny model's tokenizer (`tokenizer.pad`, left padding), `mixtral_edu.full_size.sizes.parameter_count`,
and a live trace of `generate` on a small random model. Hints name the mistake, never the expected values.
"""
from __future__ import annotations

import functools
from typing import List, Tuple

import torch

from . import CASE, ExerciseResult, NotYet, call, checker, difference, name_the_mistake
from ..full_size import sizes
from ..full_size.presets import get_preset
from ..i18n import N_, _

# -- the sentences a learner reads (one place; N_ marks them for the catalog, _() translates them when shown) --
PAD_RIGHT = N_("that is right padding: the pads go on the LEFT, so that every row ends with its last real token "
               "and the next token of every row lands in the same column.")
PAD_MASK_INVERTED = N_("the mask is inverted: 1 marks a real token, 0 a pad.")
PAD_MASK_FROM_IDS = N_("the mask was computed from the ids (id != pad_id), but a real token can have the same id as "
                       "the pad: build the mask from the lengths of the sequences, not from the values.")
PAD_MASK_ALL_ONES = N_("the attention_mask must be 0 where you put a pad, and 1 on the real tokens.")
PAD_WRONG_ID = N_("the pads must be the pad_id you are given, whatever its value.")
PAD_NOT_TENSORS = N_("return (input_ids, attention_mask), both torch tensors of shape (B, T).")
PAD_SHAPE = N_("B rows (one per sequence) and T columns, T = the length of the longest sequence.")
PAD_DTYPE = N_("token ids and masks are torch.long: build them from Python ints, or pass dtype=torch.long.")
PAD_DEFAULT = N_("pad each row on the left with pad_id up to the longest row; mask = 1 for real tokens, 0 for pads.")
PAD_PASSED = N_("left_pad agrees with the tokenizer on all {n} cases.")

ACT_TOTAL = N_("that is the total: each token runs only K of the E experts of every layer, so the other E - K "
               "experts of each layer do not count.")
ACT_ROUTER = N_("you left out the router (gate, C x E per layer): it runs for every token, so it is active.")
ACT_NORMS = N_("you left out the RMSNorm weights (2 per layer plus the final one): small, but active.")
ACT_EMBED = N_("you left out one V x C matrix: the embedding table and the lm_head (unless tied) both count, as in "
               "the published active counts (13B for 8x7B).")
ACT_TIED = N_("with tie_word_embeddings the lm_head IS the embedding matrix: count it once.")
ACT_KV = N_("k_proj and v_proj have only Hkv heads (grouped-query attention): C x (Hkv * D) each, not C x (H * D).")
ACT_IDLE = N_("you counted the E - K experts a token does NOT use; count the K it does use.")
ACT_ONE_EXPERT = N_("each token uses K experts per layer, not one: K = config.num_experts_per_tok.")
ACT_TWO_MATRICES = N_("an expert has three C x I matrices (w1, w2, w3), not two.")
ACT_TYPE = N_("return a whole number (a Python int).")
ACT_DEFAULT = N_("go part by part: embeddings, then per layer attention (q, k, v, o), router, K experts, two norms; "
                 "then the final norm and the lm_head. Compare each part with the breakdown table in section 4.")
ACT_PASSED = N_("active_parameters agrees with mixtral_edu.sizes on all {n} cases "
                "(tiny, 8x7B, 8x22B, top-1, tied head).")

SHAPE_KEYS = ("prefill_input_ids", "decode_input_ids", "decode_logits", "final_cache_length", "output")
SHAPE_NOT_DICT = N_("return a dict with the keys {keys}.")
SHAPE_HINTS = {
    "prefill_input_ids": N_("the prefill has no cache yet: it feeds every column of the padded prompt, pads "
                            "included, for every row."),
    "decode_input_ids": N_("with a cache, a decode step feeds only the token(s) the cache has not seen: one new "
                           "token per row."),
    "decode_logits": N_("forward returns logits for every position it was fed, (B, fed, V); only afterwards does "
                        "the loop keep the last one."),
    "final_cache_length": N_("count what was fed: the whole prompt, then one token per decode step. The token chosen "
                             "at the last step is appended to the output but never fed, so it is not in the cache."),
    "output": N_("generate returns the prompt (with its pads) followed by the new tokens."),
}
SHAPE_WRONG = N_("{key} is not right for B={B}, T={T}, V={V}, new_tokens={n}")
SHAPE_PASSED = N_("predicted_shapes matches a live trace of generate in all {n} settings.")


# -- 00.1 left padding ------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _tokenizer():
    from ..tiny.pretrained import TINY_DIR
    from ..tiny.tokenizer import load_tokenizer
    tok = load_tokenizer(TINY_DIR)
    tok.deprecation_warnings["Asking-to-pad-a-fast-tokenizer"] = True  # pad() on ids is what we want here
    return tok


def reference_left_pad(sequences: List[List[int]], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """What the tokenizer does for a batch: pad on the left to the longest row; mask 1 = real, 0 = pad."""
    out = _tokenizer().pad({"input_ids": [list(s) for s in sequences]}, padding=True, return_tensors="pt")
    ids, mask = out["input_ids"], out["attention_mask"]
    return ids.masked_fill(mask == 0, pad_id), mask  # pad with the requested id (the tokenizer uses its own)


def _left_pad_cases():
    return [
        (N_("two prompts of different lengths"), [[1, 22, 26, 14, 23, 27, 32], [1, 20, 14, 24, 32]], 3),
        (N_("three prompts, the longest in the middle"), [[1, 262, 339], [1, 7, 8, 9, 10, 11], [1]], 3),
        (N_("a real token equal to the pad id (3)"), [[1, 3, 3, 9], [1, 5]], 3),
        (N_("prompts of equal length need no padding"), [[1, 5, 6], [1, 7, 8]], 3),
        (N_("another pad id (0), and a real 0 in a row"), [[1, 0], [1, 6, 0, 8]], 0),
    ]


def _left_pad_mistakes(seqs, pad_id):
    T = max(len(s) for s in seqs)
    ids, mask = reference_left_pad(seqs, pad_id)
    right = torch.tensor([list(s) + [pad_id] * (T - len(s)) for s in seqs])
    right_mask = torch.tensor([[1] * len(s) + [0] * (T - len(s)) for s in seqs])
    return [
        (PAD_RIGHT, (right, right_mask)),
        (PAD_RIGHT, (right, mask)),
        (PAD_MASK_INVERTED, (ids, 1 - mask)),
        (PAD_MASK_FROM_IDS, (ids, (ids != pad_id).long())),
        (PAD_MASK_ALL_ONES, (ids, torch.ones_like(mask))),
        (PAD_WRONG_ID, lambda: (reference_left_pad(seqs, 3 if pad_id != 3 else 0)[0], mask)),
        (PAD_WRONG_ID, lambda: (reference_left_pad(seqs, 0 if pad_id != 0 else 2)[0], mask)),
    ]


@checker
def check_left_pad(left_pad) -> ExerciseResult:
    """left_pad(sequences, pad_id) -> (input_ids (B, T) long, attention_mask (B, T) long)."""
    cases = _left_pad_cases()
    for label, seqs, pad_id in cases:
        want = reference_left_pad(seqs, pad_id)
        got = call(left_pad, [list(s) for s in seqs], pad_id, label=label)
        if not isinstance(got, (tuple, list)) or len(got) != 2 or not all(isinstance(x, torch.Tensor) for x in got):
            raise NotYet(_("case {label}: returned {kind}, expected two tensors").format(label=_(label),
                                                                                       kind=type(got).__name__),
                         PAD_NOT_TENSORS)
        for name, g, w in (("input_ids", got[0], want[0]), ("attention_mask", got[1], want[1])):
            problem = difference(g, w, what=name)
            if problem is None:
                continue
            hint = {"shape": PAD_SHAPE, "dtype": PAD_DTYPE}.get(problem.kind)
            if hint is None:
                hint = name_the_mistake(tuple(got), _left_pad_mistakes(seqs, pad_id), default=PAD_DEFAULT)
            raise NotYet(_(CASE).format(label=_(label), problem=problem), hint)
    return ExerciseResult(True, _(PAD_PASSED).format(n=len(cases)))


# -- 00.2 active parameters ---------------------------------------------------------------------------

def _active_cases():
    tiny_top1 = get_preset("tiny")
    tiny_top1.num_experts_per_tok = 1
    tied = get_preset("tiny")
    tied.tie_word_embeddings = True
    return [
        (N_("the tiny preset"), get_preset("tiny")),
        ("Mixtral 8x7B", get_preset("mixtral-8x7b")),
        ("Mixtral 8x22B", get_preset("mixtral-8x22b")),
        (N_("tiny with top-1 routing (K = 1)"), tiny_top1),
        (N_("tiny with lm_head tied to the embeddings"), tied),
    ]


def _active_mistakes(config):
    count = sizes.parameter_count(config)
    b, L, want = count.breakdown, config.num_hidden_layers, count.active
    E, K, C, I = config.num_local_experts, config.num_experts_per_tok, config.hidden_size, config.intermediate_size
    expert = 3 * C * I
    hd, H, Hkv = config.head_dim, config.num_attention_heads, config.num_key_value_heads
    out = [
        (ACT_TOTAL, count.total),
        (ACT_ROUTER, want - L * b["router_per_layer"]),
        (ACT_NORMS, want - b["norms"]),
        (ACT_EMBED, want - b["embeddings"]),
        (ACT_KV, want + 2 * L * C * hd * (H - Hkv)),
        (ACT_IDLE, want + L * (E - 2 * K) * expert),
        (ACT_TWO_MATRICES, want - L * K * C * I),
    ]
    if K != 1:
        out.append((ACT_ONE_EXPERT, want - L * (K - 1) * expert))
    if config.tie_word_embeddings:
        out.append((ACT_TIED, want + b["embeddings"]))
    return out


@checker
def check_active_parameters(active_parameters) -> ExerciseResult:
    """active_parameters(config) -> the number of parameters one token passes through."""
    cases = _active_cases()
    for label, config in cases:
        want = sizes.parameter_count(config).active
        got = call(active_parameters, config, label=label)
        if isinstance(got, torch.Tensor) and got.numel() == 1 and not got.is_floating_point():
            got = int(got)
        if not isinstance(got, int) or isinstance(got, bool):
            raise NotYet(_("case {label}: returned a {kind}, expected an int").format(label=_(label),
                                                                                   kind=type(got).__name__),
                         ACT_TYPE)
        if got != want:
            hint = name_the_mistake(got, _active_mistakes(config), default=ACT_DEFAULT)
            raise NotYet(_("case {label}: {got:,} is not the active count").format(label=_(label), got=got), hint)
    return ExerciseResult(True, _(ACT_PASSED).format(n=len(cases)))


# -- 00.3 predict the shapes of one generate call ---------------------------------------------------

@functools.lru_cache(maxsize=4)
def _toy_model(vocab: int):
    """A small random Mixtral with vocabulary `vocab` (seeded), for live traces of generate."""
    from ..modeling.causal_lm import MixtralForCausalLM
    from ..modeling.config import MixtralConfig
    config = MixtralConfig(vocab_size=vocab, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                           num_experts_per_tok=1, max_position_embeddings=64, pad_token_id=0, bos_token_id=1,
                           eos_token_id=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MixtralForCausalLM(config).eval()


def reference_shapes(B: int, T: int, V: int, new_tokens: int) -> dict:
    """Read off a live trace of generate: B left-padded prompts of T columns, new_tokens new ones, no eos."""
    from ..observe.tracer import trace
    model = _toy_model(V)
    g = torch.Generator().manual_seed(B * 100 + T)
    ids = torch.randint(3, V, (B, T), generator=g)
    mask = torch.ones_like(ids)
    mask[0, : T // 2] = 0                                    # row 0 is padded on the left
    ids = ids.masked_fill(mask == 0, 0)
    with torch.no_grad(), trace(model, depth=2) as tr:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, eos_token_id=None)
    last = tr.steps[-1]
    forwards = tr.find("MixtralForCausalLM.forward")
    return {
        "prefill_input_ids": tuple(tr.steps[0].input_ids.shape),
        "decode_input_ids": tuple(last.input_ids.shape),
        "decode_logits": tuple(forwards[-1].result["logits"]["shape"]),
        "final_cache_length": int(last.layers[0].cache_after),
        "output": tuple(out.shape),
    }


def _shape_cases():
    return [(2, 5, 11, 3), (4, 9, 40, 2), (1, 3, 7, 5), (3, 6, 19, 4)]


def _as_shape(x):
    if isinstance(x, torch.Size):
        return tuple(x)
    if isinstance(x, list):
        return tuple(x)
    return x


@checker
def check_predicted_shapes(predicted_shapes) -> ExerciseResult:
    """predicted_shapes(B, T, V, new_tokens) -> {key: shape tuple or int} for the keys in SHAPE_KEYS."""
    cases = _shape_cases()
    for B, T, V, n in cases:
        got = call(predicted_shapes, B, T, V, n, label=f"B={B}, T={T}, V={V}, new_tokens={n}")
        if not isinstance(got, dict) or set(got) != set(SHAPE_KEYS):
            raise NotYet(_(SHAPE_NOT_DICT).format(keys=", ".join(SHAPE_KEYS)),
                         N_("keep the keys of the stub and fill in each value."))
        want = reference_shapes(B, T, V, n)
        for key in SHAPE_KEYS:
            value = _as_shape(got[key])
            if key == "final_cache_length":
                wrong = not isinstance(value, int) or isinstance(value, bool) or value != want[key]
            else:
                wrong = not isinstance(value, tuple) or tuple(value) != want[key]
            if wrong:
                raise NotYet(_(SHAPE_WRONG).format(key=key, B=B, T=T, V=V, n=n), SHAPE_HINTS[key])
    return ExerciseResult(True, _(SHAPE_PASSED).format(n=len(cases)))


EXERCISES = {
    "00.1": ("left_pad", check_left_pad),
    "00.2": ("active_parameters", check_active_parameters),
    "00.3": ("predicted_shapes", check_predicted_shapes),
}
