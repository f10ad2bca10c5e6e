"""Reference solutions of notebook 01 (the generation loop). Try the exercises first: the checks give hints."""
import torch


def tokens_fed(prompt_length, new_tokens, use_cache):
    """With a cache: the prompt once, then 1 token for each of the new_tokens - 1 later steps (the last chosen
    token is never fed). Without: step i feeds prompt_length + i tokens, i = 0 .. new_tokens - 1."""
    if use_cache:
        return prompt_length + new_tokens - 1
    return sum(prompt_length + i for i in range(new_tokens))


def append_step(input_ids, attention_mask, next_tokens, unfinished, eos_token_id, pad_token_id):
    """Finished rows get the pad id; one column each; a row that emits eos now is finished for good."""
    next_tokens = next_tokens * unfinished + pad_token_id * (1 - unfinished)
    input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
    attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
    unfinished = unfinished & (next_tokens != eos_token_id).long()
    return input_ids, attention_mask, unfinished


def greedy_generate(model, input_ids, attention_mask, max_new_tokens):
    """The given loop with its two bugs fixed: the LAST position's logits choose the token, and the loop stops
    only when EVERY row has finished (max, not min), as generate does."""
    eos, pad = model.config.eos_token_id, model.config.pad_token_id
    past_key_values = None
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.long)
    for _ in range(max_new_tokens):
        inputs = model.prepare_inputs_for_generation(input_ids, past_key_values=past_key_values,
                                                     attention_mask=attention_mask, use_cache=True)
        with torch.no_grad():
            out = model(**inputs)
        next_tokens = out.logits[:, -1, :].argmax(-1)                       # fixed: the last position
        next_tokens = next_tokens * unfinished + pad * (1 - unfinished)
        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
        past_key_values = out.past_key_values
        unfinished = unfinished & (next_tokens != eos).long()                # a finished row stays finished
        if unfinished.max() == 0:                                            # fixed: every row has finished
            break
    return input_ids
