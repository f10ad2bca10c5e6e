"""Exercises of notebook 01 (the generation loop).

    01.1 check_tokens_fed(tokens_fed)
        tokens_fed(prompt_length, new_tokens, use_cache) -> int, token positions fed to forward in one generate call
    01.2 check_append_step(append_step)
        append_step(input_ids (B, S), attention_mask (B, S), next_tokens (B,), unfinished (B,), eos_token_id,
                    pad_token_id) -> (input_ids (B, S + 1), attention_mask (B, S + 1), unfinished (B,))
    01.3 check_greedy_generate(greedy_generate, model=None)
        greedy_generate(model, input_ids (B, T0), attention_mask (B, T0), max_new_tokens) -> (B, T0 + new) ids

The references are `mixtral_edu.modeling.generation.generate` and live traces of it. Hints name the
mistake, never the expected values.
"""
from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from . import CASE, THE_RESULT, ExerciseResult, NotYet, call, checker, difference, name_the_mistake
from ..i18n import N_, _
from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.config import MixtralConfig

PAD, EOS = 3, 2

# -- the sentences a learner reads (one place, for translation) ------------------------------------
FED_CACHE_LAST = N_("count the steps again: one new token is chosen per step, but is every chosen token also fed to "
                  "the model? Look for the one that is appended to the output but never fed.")
FED_CACHE_LIKE_NONE = N_("with a cache, a decode step feeds only the one new token: the cache already holds the rest.")
FED_NONE_FLAT = N_("without a cache, every step feeds the whole sequence so far, and it grows by one token per step.")
FED_NONE_SHIFT = N_("your count is one step off: what exactly does step 0 feed without a cache, and does any step feed "
                  "the token it is about to choose?")
FED_NONE_LIKE_CACHE = N_("without a cache nothing is remembered: each step feeds the whole sequence again.")
FED_TYPE = N_("return a whole number (a Python int).")
FED_DEFAULT = N_("write out the tokens fed at steps 0, 1, 2 for a small case by hand, then find the pattern.")
FED_WRONG = N_("case prompt_length={T}, new_tokens={n}, use_cache={c}: {got!r} is not the number of tokens fed")
FED_PASSED = N_("tokens_fed matches a live trace of generate in all {n} cases.")

APP_NOT_TRIPLE = N_("return the three updated tensors as a tuple: (input_ids, attention_mask, unfinished).")
APP_NEW_ROW = N_("append along the sequence axis (dim=-1, a new column), not as a new row.")
APP_SHAPE = N_("each of input_ids and attention_mask gains exactly one column; unfinished stays (B,).")
APP_DTYPE = N_("keep the dtype of what you extend: build the new column with attention_mask.new_ones(...) (or pass "
             "dtype=...), and append next_tokens as token ids (torch.long).")
APP_UNFINISHED_DTYPE = N_("return unfinished as the kind of tensor it came in as, 1s and 0s of torch.long: the next "
                        "step computes 1 - unfinished, which a bool tensor refuses.")
APP_FINISHED_TOKEN = N_("a row that had already finished still got its chosen token: finished rows receive "
                      "pad_token_id instead (a 0/1 flag times a value selects it, without an if per row).")
APP_MASK_ZERO = N_("the new mask column must be all ones, for every row: generate appends a 1 even for a finished "
                 "row (its pads come after its eos, so they change nothing that matters).")
APP_NOT_UPDATED = N_("unfinished was not updated: a row that just emitted eos_token_id is finished (set it to 0).")
APP_FORGETS = N_("a finished row came back to life: once a row has emitted eos it stays finished, so combine the old "
               "flags with the new test (unfinished & ...).")
APP_PAD_ENDS = N_("a running row may choose the pad id as an ordinary token: only eos_token_id finishes a row, never "
                "the pad id.")
APP_EOS_BEFORE_PAD = N_("test for eos on the tokens you append (after finished rows were given pad_token_id), not on "
                      "the tokens the model chose.")
APP_DEFAULT = N_("three steps, in order: give finished rows the pad id, append the tokens and a column of ones to the "
               "mask, then mark the rows that just emitted eos as finished.")
APP_PASSED = N_("append_step agrees with generate's loop on all {n} cases.")

GEN_NOT_TENSOR = N_("return the sequences as one (B, T0 + new) LongTensor, prompt included, as generate does.")
GEN_TOO_LONG = N_("your result is longer than generate's: what does your loop do once every row has finished? "
                "(generate's result can be shorter than T0 + max_new_tokens.)")
GEN_TOO_SHORT = N_("your result is shorter than generate's: when does your loop stop, and when does generate?")
# 01.3 is "find the bug": its hints point at the place, as questions, and never spell out the fix.
GEN_POSITION0 = N_("the first new token already differs in some rows (the later ones follow from it): which "
                 "position's logits choose it in your loop, and which position has read the whole prompt?")
GEN_STOPS_EARLY = N_("your loop stopped while some rows were still running: what does your stop condition test, and "
                   "when does generate stop?")
GEN_FORGETS = N_("a row that had emitted eos came back to life after one pad: what does your update of `unfinished` "
               "do with a row that finished at an earlier step?")
GEN_SECOND = N_("There is a second bug as well.")
GEN_NO_PAD = N_("a finished row kept getting real tokens: what should a row receive at each step after it "
              "emitted eos?")
GEN_POSITIONS = N_("the left-padded rows drift: which position ids does the model get when you feed it yourself? "
                 "prepare_inputs_for_generation builds them from the attention mask.")
GEN_NO_CACHE = N_("the tokens are right, but every decode step fed the whole sequence again: what does your loop hand "
                "from one forward to the next?")
GEN_NOT_A_MODEL = N_("check_greedy_generate(model=...) takes a mixtral_edu MixtralForCausalLM, got a {kind}.")
GEN_NOT_A_MODEL_HINT = N_("pass the model from `mixtral_edu.load_tiny()`, or leave model out to check on small random models.")
GEN_MASK = N_("the model refused the attention mask: after you append a token, does the mask still cover every "
            "column of input_ids?")
GEN_DEFAULT = N_("compare your loop with generate, step by step: which tokens are fed, which logits choose, how "
               "finished rows are handled, when to stop.")
GEN_WRONG = CASE
APP_NOT_TRIPLE_CASE = N_("case {label}: returned {kind}, expected three tensors")
GEN_DECODE_FED = N_("a decode step fed more than one token per row")
THE_SEQUENCES = N_("the sequences")
GEN_PASSED = N_("greedy_generate agrees with model.generate on all {n} cases.")


# -- a small random model for the checks -----------------------------------------------------------

@functools.lru_cache(maxsize=4)
def toy_model(eos_token_id: int = EOS) -> MixtralForCausalLM:
    """A small random Mixtral (seeded). initializer_range 0.2 makes its choices decisive, so a wrong position
    or a wrong cache changes the argmax instead of hiding below rounding."""
    config = MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                           num_experts_per_tok=2, max_position_embeddings=128, rope_theta=10000.0,
                           initializer_range=0.2, pad_token_id=PAD, bos_token_id=1, eos_token_id=eos_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return MixtralForCausalLM(config).eval()


# -- 01.1 tokens fed ----------------------------------------------------------------------------------

def reference_tokens_fed(prompt_length: int, new_tokens: int, use_cache: bool) -> int:
    """Token positions fed to forward by one generate call (B = 1, no eos), read off a live trace."""
    from ..observe.tracer import trace
    model = toy_model()
    ids = torch.arange(4, 4 + prompt_length)[None]
    with torch.no_grad(), trace(model, depth=1) as tr:
        model.generate(ids, max_new_tokens=new_tokens, eos_token_id=None, use_cache=use_cache)
    return sum(int(step.input_ids.shape[1]) for step in tr.steps)


def _fed_mistakes(T: int, n: int, use_cache: bool):
    if use_cache:
        return [(FED_CACHE_LAST, T + n), (FED_CACHE_LIKE_NONE, sum(T + i for i in range(n))),
                (FED_CACHE_LIKE_NONE, T * n), (FED_CACHE_LAST, T + n - 2)]
    return [(FED_NONE_FLAT, T * n), (FED_NONE_SHIFT, sum(T + i for i in range(1, n + 1))),
            (FED_NONE_LIKE_CACHE, T + n - 1), (FED_NONE_SHIFT, sum(T + i for i in range(n - 1)))]


@checker
def check_tokens_fed(tokens_fed) -> ExerciseResult:
    """tokens_fed(prompt_length, new_tokens, use_cache) -> int."""
    cases = [(5, 4, True), (5, 4, False), (3, 1, True), (3, 1, False), (7, 6, True), (7, 6, False), (1, 9, False)]
    for T, n, c in cases:
        got = call(tokens_fed, T, n, c, label=f"prompt_length={T}, new_tokens={n}, use_cache={c}")
        if isinstance(got, bool) or not isinstance(got, int):
            raise NotYet(_(FED_WRONG).format(T=T, n=n, c=c, got=got), FED_TYPE)
        if got != reference_tokens_fed(T, n, c):
            raise NotYet(_(FED_WRONG).format(T=T, n=n, c=c, got=got),
                         name_the_mistake(got, _fed_mistakes(T, n, c), default=FED_DEFAULT))
    return ExerciseResult(True, _(FED_PASSED).format(n=len(cases)))


# -- 01.2 the bookkeeping after the token is chosen ---------------------------------------------------

def reference_append_step(input_ids: torch.Tensor, attention_mask: torch.Tensor, next_tokens: torch.Tensor,
                          unfinished: torch.Tensor, eos_token_id: int, pad_token_id: int):
    """What generate does after choosing next_tokens (see mixtral_edu.modeling.generation.generate)."""
    next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)       # finished rows get pad
    input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)              # (B, S + 1)
    attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
    unfinished = unfinished & (next_tokens != eos_token_id).long()                # eos just emitted: done
    return input_ids, attention_mask, unfinished


def _append_cases():
    ids = torch.tensor([[PAD, 1, 20, 21], [1, 30, 31, 32], [1, 40, 41, EOS]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    return [
        (N_("all rows still running"), ids[:2], mask[:2], torch.tensor([25, 35]), torch.tensor([1, 1])),
        (N_("row 1 emits eos now"), ids[:2], mask[:2], torch.tensor([25, EOS]), torch.tensor([1, 1])),
        (N_("row 2 finished earlier: whatever it 'chose' becomes pad"), ids, mask,
         torch.tensor([26, 36, 46]), torch.tensor([1, 1, 0])),
        (N_("row 2 finished earlier and 'chose' eos again"), ids, mask, torch.tensor([26, 36, EOS]),
         torch.tensor([1, 1, 0])),
        (N_("a running row chooses the pad id as an ordinary token"), ids[:2], mask[:2], torch.tensor([PAD, 35]),
         torch.tensor([1, 1])),
        (N_("every row done after this step"), ids, mask, torch.tensor([EOS, EOS, 9]), torch.tensor([1, 1, 0])),
    ]


def _append_mistakes(ids, mask, tokens, unfinished):
    B = ids.shape[0]
    ones = mask.new_ones((B, 1))
    padded = tokens * unfinished + PAD * (1 - unfinished)
    good_ids = torch.cat([ids, padded[:, None]], dim=-1)
    good_mask = torch.cat([mask, ones], dim=-1)
    right = unfinished & (padded != EOS).long()
    return [
        (APP_FINISHED_TOKEN, (torch.cat([ids, tokens[:, None]], -1), good_mask, unfinished & (tokens != EOS).long())),
        (APP_FINISHED_TOKEN, (torch.cat([ids, tokens[:, None]], -1), good_mask, right)),
        (APP_MASK_ZERO, (good_ids, torch.cat([mask, unfinished[:, None].to(mask.dtype)], -1), right)),
        (APP_NOT_UPDATED, (good_ids, good_mask, unfinished)),
        (APP_FORGETS, (good_ids, good_mask, (padded != EOS).long())),
        (APP_FORGETS, (good_ids, good_mask, (tokens != EOS).long())),
        (APP_PAD_ENDS, (good_ids, good_mask, unfinished & (padded != EOS).long() & (padded != PAD).long())),
        (APP_EOS_BEFORE_PAD, (good_ids, good_mask, unfinished & (tokens != EOS).long())),
    ]


@checker
def check_append_step(append_step) -> ExerciseResult:
    """append_step(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id)
    -> (input_ids (B, S + 1), attention_mask (B, S + 1), unfinished (B,))."""
    cases = _append_cases()
    for label, ids, mask, tokens, unfinished in cases:
        want = reference_append_step(ids, mask, tokens, unfinished, EOS, PAD)
        got = call(append_step, ids.clone(), mask.clone(), tokens.clone(), unfinished.clone(), EOS, PAD,
                   label=label)
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise NotYet(_(APP_NOT_TRIPLE_CASE).format(label=_(label), kind=type(got).__name__), APP_NOT_TRIPLE)
        for i, name in enumerate(("input_ids", "attention_mask", "unfinished")):
            problem = difference(got[i], want[i], what=name)
            if problem is None:
                continue
            if problem.kind == "shape":
                g = got[i]
                hint = APP_NEW_ROW if name != "unfinished" and g.shape[0] == want[i].shape[0] + 1 else APP_SHAPE
            elif problem.kind == "dtype":
                hint = APP_UNFINISHED_DTYPE if name == "unfinished" else APP_DTYPE
            else:
                got_long = tuple(x.long() if isinstance(x, torch.Tensor) else x for x in got)
                hint = name_the_mistake(got_long, _append_mistakes(ids, mask, tokens, unfinished),
                                        default=APP_DEFAULT)
            raise NotYet(_(CASE).format(label=_(label), problem=problem), hint)
    return ExerciseResult(True, _(APP_PASSED).format(n=len(cases)))


# -- 01.3 the loop, greedy ----------------------------------------------------------------------------

@torch.no_grad()
def _loop(model, input_ids, attention_mask, max_new_tokens, position0=False, forgets=False, no_pad=False,
          plain_positions=False, no_break=False, stops_early=False):
    """generate's greedy loop, optionally with one of the known mistakes (for naming them)."""
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    past, unfinished = None, torch.ones(input_ids.shape[0], dtype=torch.long)
    for step in range(max_new_tokens):
        if plain_positions:
            fed = input_ids if past is None else input_ids[:, -1:]
            out = model(fed, attention_mask=attention_mask, past_key_values=past, use_cache=True)
        else:
            out = model(**model.prepare_inputs_for_generation(input_ids, past_key_values=past,
                                                              attention_mask=attention_mask, use_cache=True))
        tokens = out.logits[:, 0 if position0 else -1, :].argmax(-1)
        if not no_pad:
            tokens = tokens * unfinished + pad * (1 - unfinished)
        input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        past = out.past_key_values
        unfinished = (tokens != eos).long() if forgets else unfinished & (tokens != eos).long()
        if (unfinished.min() if stops_early else unfinished.max()) == 0 and not no_break:
            break
    return input_ids


def _loop_mistakes(model, ids, mask, n):
    run = functools.partial(_loop, model, ids, mask, n)
    return [(GEN_POSITION0, lambda: run(position0=True)), (GEN_STOPS_EARLY, lambda: run(stops_early=True)),
            (_(GEN_POSITION0) + " " + _(GEN_SECOND), lambda: run(position0=True, stops_early=True)),
            (GEN_FORGETS, lambda: run(forgets=True)),
            (_(GEN_POSITION0) + " " + _(GEN_SECOND), lambda: run(position0=True, forgets=True)),
            (GEN_NO_PAD, lambda: run(no_pad=True)), (GEN_POSITIONS, lambda: run(plain_positions=True)),
            (GEN_TOO_LONG, lambda: run(no_break=True))]


def _padded_prompts(seed: int, pads=(0, 2, 4), length: int = 7) -> Tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (len(pads), length), generator=g)
    mask = torch.ones_like(ids)
    for b, p in enumerate(pads):
        ids[b, :p], mask[b, :p] = PAD, 0
    return ids, mask


@functools.lru_cache(maxsize=1)
def _early_token() -> int:
    """The token the toy model emits in row 0 at step 1 of the prompts of seed 11: made its eos, row 0 finishes
    there while the other rows go on (tests/exercises/test_mutations_generation_loop.py checks it)."""
    ids, mask = _padded_prompts(11)
    return int(_loop(toy_model(63), ids, mask, 8, no_break=True)[0, 8])


@functools.lru_cache(maxsize=1)
def _toy_bf16() -> MixtralForCausalLM:
    import copy
    return copy.deepcopy(toy_model(63)).to(torch.bfloat16)


def _generate_cases(model: Optional[MixtralForCausalLM]):
    """(label, model, ids, mask, max_new_tokens). With the tiny model: real prompts first; then small random models."""
    cases = []
    if model is not None and getattr(model.config, "vocab_size", 0) > 300:
        from ..tiny.pretrained import TINY_DIR
        from ..tiny.tokenizer import load_tokenizer
        tok = load_tokenizer(TINY_DIR)
        for label, prompts, n in ((N_("the tiny model: an addition, a sentence, a record"), ["37+48=", "the small cat",
                                                                                        "{id:"], 12),
                                  (N_("the tiny model: two additions, both finish early"), ["37+48=", "5+61="], 8)):
            batch = tok(prompts, return_tensors="pt", padding=True)
            cases.append((label, model, batch.input_ids, batch.attention_mask, n))
    ids, mask = _padded_prompts(11)
    early = toy_model(_early_token())
    cases += [
        (N_("a random model, 3 left-padded prompts, no row finishes"), toy_model(63), ids, mask, 5),
        (N_("a random model where rows finish at different steps"), early, ids, mask, 8),
        (N_("a random model, one row that finishes at step 1"), early, ids[:1], mask[:1], 6),
        (N_("a random model in bfloat16, 3 left-padded prompts"), _toy_bf16(), *_padded_prompts(0), 8),
    ]
    return cases


@checker
def check_greedy_generate(greedy_generate, model: Optional[MixtralForCausalLM] = None) -> ExerciseResult:
    """greedy_generate(model, input_ids, attention_mask, max_new_tokens) -> (B, T0 + new) ids, like generate."""
    from ..observe.tracer import trace
    if model is not None and not isinstance(model, MixtralForCausalLM):
        raise NotYet(_(GEN_NOT_A_MODEL).format(kind=type(model).__name__), GEN_NOT_A_MODEL_HINT)
    cases = _generate_cases(model)
    for label, m, ids, mask, n in cases:
        want = m.generate(ids, attention_mask=mask, max_new_tokens=n)
        try:
            with trace(m, depth=1) as tr:
                got = call(greedy_generate, m, ids.clone(), mask.clone(), n, label=label)
        except NotYet as stop:
            if "mask" in stop.problem.lower():      # the model refused a mask shorter than the sequence
                stop.hint = GEN_MASK
            raise
        if not isinstance(got, torch.Tensor) or got.dim() != 2 or got.shape[0] != want.shape[0]:
            raise NotYet(_(GEN_WRONG).format(label=_(label), problem=difference(got, want, what=THE_RESULT)),
                         GEN_NOT_TENSOR)
        problem = difference(got, want, what=THE_SEQUENCES)
        if problem is not None:
            if problem.kind == "shape":
                hint = GEN_TOO_LONG if got.shape[1] > want.shape[1] else GEN_TOO_SHORT
                if got.shape[1] <= n:
                    hint = GEN_NOT_TENSOR
                hint = name_the_mistake(got, _loop_mistakes(m, ids, mask, n)[:-1], default=hint)
            elif problem.kind == "dtype":
                hint = GEN_NOT_TENSOR
            else:
                hint = name_the_mistake(got, _loop_mistakes(m, ids, mask, n), default=GEN_DEFAULT)
            raise NotYet(_(GEN_WRONG).format(label=_(label), problem=problem), hint)
        fed = [node.args.get("input_ids", {}).get("shape") for node in tr.find("MixtralForCausalLM.forward")]
        if any(shape is not None and shape[1] != 1 for shape in fed[1:]):
            raise NotYet(_(GEN_WRONG).format(label=_(label), problem=_(GEN_DECODE_FED)),
                         GEN_NO_CACHE)
    return ExerciseResult(True, _(GEN_PASSED).format(n=len(cases)))


EXERCISES = {
    "01.1": ("tokens_fed", check_tokens_fed),
    "01.2": ("append_step", check_append_step),
    "01.3": ("greedy_generate", check_greedy_generate),
}
