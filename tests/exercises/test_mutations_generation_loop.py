"""Plausible wrong answers to notebook 01's exercises: each gets NOT YET with a hint naming the mistake."""

import torch

from exercise_harness import Mutant, mutation_tests
from mixtral_edu.exercises import generation_loop as ex
from mixtral_edu.tiny.pretrained import load_tiny

TINY, _ = load_tiny()


# -- 01.1 -------------------------------------------------------------------------------------------
def fed(cache, no_cache):
    def tokens_fed(prompt_length, new_tokens, use_cache):
        return cache(prompt_length, new_tokens) if use_cache else no_cache(prompt_length, new_tokens)
    return tokens_fed


RIGHT_CACHE = lambda T, n: T + n - 1                      # noqa: E731
RIGHT_NONE = lambda T, n: sum(T + i for i in range(n))    # noqa: E731


# -- 01.2 -------------------------------------------------------------------------------------------
def append(pad_finished=True, ones=True, update=True, remember=True, pad_ends=False, eos_on_chosen=False,
           dim=-1, mask_dtype=None, flags_bool=False):
    def append_step(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
        chosen = next_tokens
        if pad_finished:
            next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
        B = input_ids.shape[0]
        if dim == 0:
            input_ids = torch.cat([input_ids, next_tokens[None, :input_ids.shape[1]].expand(1, -1)
                                   if next_tokens.numel() >= input_ids.shape[1] else
                                   torch.nn.functional.pad(next_tokens, (0, input_ids.shape[1] - B))[None]], dim=0)
        else:
            input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        column = attention_mask.new_ones((B, 1)) if ones else unfinished[:, None].to(attention_mask.dtype)
        if mask_dtype is not None:
            column = column.to(mask_dtype)
            attention_mask = attention_mask.to(mask_dtype)
        attention_mask = torch.cat([attention_mask, column], dim=-1)
        tested = chosen if eos_on_chosen else next_tokens
        if update:
            now = (tested != eos_token_id).long()
            if pad_ends:
                now = now & (tested != pad_token_id).long()
            unfinished = unfinished & now if remember else now
        return input_ids, attention_mask, (unfinished.bool() if flags_bool else unfinished)
    return append_step


# -- 01.3 -------------------------------------------------------------------------------------------
def loop(position=-1, remember=True, pad=True, prepare=True, carry=True, extend_mask=True, stop=True, new_only=False,
         stop_at_first=False):
    def greedy_generate(model, input_ids, attention_mask, max_new_tokens):
        eos, pad_id = model.config.eos_token_id, model.config.pad_token_id
        prompt_len = input_ids.shape[1]
        past, unfinished = None, torch.ones(input_ids.shape[0], dtype=torch.long)
        for _ in range(max_new_tokens):
            with torch.no_grad():
                if prepare:
                    out = model(**model.prepare_inputs_for_generation(
                        input_ids, past_key_values=past, attention_mask=attention_mask, use_cache=True))
                else:
                    fed = input_ids if past is None else input_ids[:, -1:]
                    out = model(fed, attention_mask=attention_mask, past_key_values=past, use_cache=True)
            tokens = out.logits[:, position, :].argmax(-1)
            if pad:
                tokens = tokens * unfinished + pad_id * (1 - unfinished)
            input_ids = torch.cat([input_ids, tokens[:, None]], dim=-1)
            if extend_mask:
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], -1)
            past = out.past_key_values if carry else None
            unfinished = unfinished & (tokens != eos).long() if remember else (tokens != eos).long()
            if stop and (unfinished.min() if stop_at_first else unfinished.max()) == 0:
                break
        return input_ids[:, prompt_len:] if new_only else input_ids
    return greedy_generate


TINY_KW = {"model": TINY}

MUTANTS = [
    Mutant("01.1", "with a cache, the last token fed too", fed(lambda T, n: T + n, RIGHT_NONE), ["never fed"]),
    Mutant("01.1", "with a cache, the prompt counted once too few", fed(lambda T, n: T + n - 2, RIGHT_NONE),
           ["never fed"]),
    Mutant("01.1", "with a cache, everything refed", fed(lambda T, n: sum(T + i for i in range(n)), RIGHT_NONE),
           ["only the one new token"]),
    Mutant("01.1", "without a cache, the prompt each time", fed(RIGHT_CACHE, lambda T, n: T * n), ["grows by one"]),
    Mutant("01.1", "without a cache, shifted by one", fed(RIGHT_CACHE, lambda T, n: sum(T + i for i in range(1, n + 1))),
           ["one step off"]),
    Mutant("01.1", "no difference with or without", fed(RIGHT_CACHE, RIGHT_CACHE), ["nothing is remembered"]),
    Mutant("01.1", "a float", fed(lambda T, n: float(T + n - 1), RIGHT_NONE), ["whole number"]),
    Mutant("01.2", "finished rows keep their token", append(pad_finished=False), ["finished rows receive"]),
    Mutant("01.2", "mask column 0 for finished rows", append(ones=False), ["all ones"]),
    Mutant("01.2", "unfinished not updated", append(update=False), ["not updated"]),
    Mutant("01.2", "finished rows come back", append(remember=False), ["came back to life"]),
    Mutant("01.2", "the pad id finishes a row", append(pad_ends=True), ["ordinary token"]),
    Mutant("01.2", "a float mask", append(mask_dtype=torch.float32), ["dtype", "new_ones"]),
    Mutant("01.2", "appended as a new row", append(dim=0), ["new column"]),
    Mutant("01.2", "unfinished returned as bool", append(flags_bool=True), ["torch.long", "1 - unfinished"]),
    Mutant("01.3", "the untouched stub: both bugs (no row finishes in the first random case)",
           loop(position=0, stop_at_first=True), ["which position"]),
    Mutant("01.3", "the untouched stub on the tiny model", loop(position=0, stop_at_first=True),
           ["which position", "second bug"], TINY_KW),
    Mutant("01.3", "position 0 on the tiny model", loop(position=0), ["which position"], TINY_KW),
    Mutant("01.3", "position 0", loop(position=0), ["which position"]),
    Mutant("01.3", "stops when the first row finishes", loop(stop_at_first=True), ["stop condition"]),
    Mutant("01.3", "stops when the first row finishes, tiny model", loop(stop_at_first=True), ["stop condition"],
           TINY_KW),
    Mutant("01.3", "finished rows come back", loop(remember=False), ["came back to life", "earlier step"]),
    Mutant("01.3", "finished rows come back, tiny model", loop(remember=False), ["came back to life"], TINY_KW),
    Mutant("01.3", "finished rows not padded", loop(pad=False), ["after it emitted eos"]),
    Mutant("01.3", "positions ignore the left padding", loop(prepare=False), ["attention mask"]),
    Mutant("01.3", "the cache is not carried", loop(carry=False), ["fed the whole sequence"]),
    Mutant("01.3", "the mask is not extended", loop(extend_mask=False), ["refused the attention mask"]),
    Mutant("01.3", "no stop when all rows finished", loop(stop=False), ["once every row has finished"]),
    Mutant("01.3", "only the new tokens returned", loop(new_only=True), ["prompt included"]),
]

test_mutant, test_five_mutants_each = mutation_tests(ex, MUTANTS)


def test_the_generate_cases_discriminate():
    """The cases really tell the mistakes apart: position 0 differs from the last position in the tiny model's
    prefill; in one case all rows finish early, in others some rows finish before others or none does; in
    bfloat16, positions that ignore the left padding change the tokens."""
    cases = {label: rest for label, *rest in ex._generate_cases(TINY)}
    assert len(cases) == 6

    def new_tokens(label):
        model, ids, mask, n = cases[label]
        return model, model.generate(ids, attention_mask=mask, max_new_tokens=n)[:, ids.shape[1]:], n

    def finished_at(model, out):
        eos = model.config.eos_token_id
        return [int((row == eos).nonzero()[0]) if bool((row == eos).any()) else None for row in out]

    model, ids, mask, _ = cases["the tiny model: an addition, a sentence, a record"]
    with torch.no_grad():
        logits = model(ids, attention_mask=mask).logits
    assert bool((logits[:, 0].argmax(-1) != logits[:, -1].argmax(-1)).all())
    model, out, n = new_tokens("the tiny model: two additions, both finish early")
    assert all(f is not None for f in finished_at(model, out)) and out.shape[1] < n
    model, out, _ = new_tokens("a random model, 3 left-padded prompts, no row finishes")
    assert finished_at(model, out) == [None, None, None]
    model, out, _ = new_tokens("a random model where rows finish at different steps")
    assert finished_at(model, out)[0] == 1 and len(set(finished_at(model, out))) > 1
    model, ids, mask, n = cases["a random model where rows finish at different steps"]
    assert ex._loop(model, ids, mask, n, stops_early=True).shape[1] < ex._loop(model, ids, mask, n).shape[1]
    model, out, n = new_tokens("a random model, one row that finishes at step 1")
    assert finished_at(model, out) == [1] and out.shape[1] == 2 < n
    model, ids, mask, n = cases["a random model in bfloat16, 3 left-padded prompts"]
    assert not torch.equal(ex._loop(model, ids, mask, n), ex._loop(model, ids, mask, n, plain_positions=True))
