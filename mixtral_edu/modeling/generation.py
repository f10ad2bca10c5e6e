"""The generation loop: prefill once, then decode one token per step, reusing the cache.

    while some row is unfinished:
        inputs  = model.prepare_inputs_for_generation(sequence so far, cache, mask)
        outputs = model(**inputs)                  # logits (B, T, V) + the grown cache
        scores  = warpers(outputs.logits[:, -1])   # temperature -> top-k -> top-p
        token   = argmax(scores) or a draw from softmax(scores)
        append token (pad for finished rows); mask grows by a column of ones

This is the loop of transformers 4.41.2's `GenerationMixin._sample` for one
sequence per prompt (no beams), with the same defaults and the same order of
random draws, so a seeded sampling run picks the same tokens.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

import torch

from .outputs import ModelOutput


class TemperatureLogitsWarper:
    """scores / temperature: < 1 sharpens the distribution, > 1 flattens it."""

    def __init__(self, temperature: float):
        if not isinstance(temperature, (int, float)) or temperature <= 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}; "
                             "for greedy decoding use do_sample=False instead of temperature=0.")
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return scores / self.temperature


class TopKLogitsWarper:
    """Keep the k highest scores (ties with the k-th included); the rest become -inf."""

    def __init__(self, top_k: int, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}; use top_k=None to switch it off.")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.top_k, scores.size(-1))
        kth_best = torch.topk(scores, k)[0][..., -1, None]            # (B, 1)
        return scores.masked_fill(scores < kth_best, self.filter_value)


class TopPLogitsWarper:
    """Nucleus sampling: keep the smallest set of best tokens whose probability reaches top_p."""

    def __init__(self, top_p: float, filter_value: float = -float("inf"), min_tokens_to_keep: int = 1):
        top_p = float(top_p)
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sorted_logits, sorted_indices = torch.sort(scores, descending=False)   # worst first
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # drop the worst tokens while their total mass stays within 1 - top_p
        remove_sorted = cumulative <= (1 - self.top_p)
        remove_sorted[..., -self.min_tokens_to_keep:] = False                 # always keep the best
        remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)       # back to vocabulary order
        return scores.masked_fill(remove, self.filter_value)


def get_logits_warpers(temperature: Optional[float] = 1.0, top_k: Optional[int] = 50,
                       top_p: Optional[float] = 1.0) -> List:
    """The sampling warpers transformers builds, in its order; neutral settings add none."""
    warpers: List = []
    if temperature is not None and temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p))
    return warpers


@dataclass
class GenerateDecoderOnlyOutput(ModelOutput):
    """generate(..., return_dict_in_generate=True): sequences (B, S_total) and per-step extras."""

    sequences: Optional[torch.LongTensor] = None
    scores: Optional[Tuple[torch.FloatTensor, ...]] = None   # after warpers, one (B, V) per step
    logits: Optional[Tuple[torch.FloatTensor, ...]] = None   # raw last-position logits, one (B, V) per step
    attentions: Optional[Tuple] = None
    hidden_states: Optional[Tuple] = None
    past_key_values: Optional[Tuple] = None


def prepare_attention_mask_for_generation(input_ids: torch.Tensor, pad_token_id: Optional[int],
                                          eos_token_id: Optional[Sequence[int]]) -> torch.Tensor:
    """No mask given: infer padding from pad tokens, unless pad is also an eos id (then ambiguous)."""
    if pad_token_id is None or not bool((input_ids == pad_token_id).any()):
        return torch.ones_like(input_ids)
    if eos_token_id is not None and pad_token_id in eos_token_id:
        return torch.ones_like(input_ids)
    return input_ids.ne(pad_token_id).long()


def _as_id_list(ids) -> Optional[List[int]]:
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


@torch.no_grad()
def generate(
    model,
    input_ids: torch.LongTensor,
    attention_mask: Optional[torch.Tensor] = None,
    max_new_tokens: Optional[int] = None,
    max_length: Optional[int] = None,
    do_sample: bool = False,
    temperature: Optional[float] = 1.0,
    top_k: Optional[int] = 50,
    top_p: Optional[float] = 1.0,
    eos_token_id: Union[int, Sequence[int], None] = "config",
    pad_token_id: Union[int, None] = "config",
    use_cache: bool = True,
    output_router_logits: bool = False,
    return_dict_in_generate: bool = False,
    output_scores: bool = False,
    output_logits: bool = False,
) -> Union[torch.LongTensor, GenerateDecoderOnlyOutput]:
    """Continue each row of input_ids (B, T0); returns (B, T0 + new) ids, prompt included.

    max_new_tokens wins over max_length (which counts the prompt; default 20 as in
    transformers). eos_token_id / pad_token_id default to the model config's; a
    row that emitted eos is filled with pad_token_id (eos when there is none).
    For batches, left-pad the prompts and pass their attention_mask.
    """
    config = model.config
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.long:
        raise ValueError("input_ids must be a (batch, seq_len) LongTensor, e.g. tokenizer(..., "
                         "return_tensors='pt').input_ids.")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give at least one prompt token (e.g. the bos token).")
    eos_ids = _as_id_list(config.eos_token_id if eos_token_id == "config" else eos_token_id)
    pad_id = config.pad_token_id if pad_token_id == "config" else pad_token_id
    if pad_id is None and eos_ids:
        pad_id = eos_ids[0]  # transformers does the same, with a warning

    prompt_len = input_ids.shape[1]
    if max_new_tokens is not None:
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}.")
        max_length = prompt_len + max_new_tokens
    elif max_length is None:
        max_length = 20
    if max_length <= prompt_len:
        warnings.warn(f"The prompt has {prompt_len} tokens and max_length is {max_length}: nothing to generate. "
                      "Use max_new_tokens to count only new tokens.")

    if attention_mask is None:
        attention_mask = prepare_attention_mask_for_generation(input_ids, pad_id, eos_ids)
    elif attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                         f"{tuple(input_ids.shape)}.")
    elif input_ids.shape[0] > 1 and bool((attention_mask[:, -1] == 0).any()):
        warnings.warn("Right padding detected: generation appends after the last column, so pad on the "
                      "left (tokenizer.padding_side = 'left').")

    warpers = get_logits_warpers(temperature, top_k, top_p) if do_sample else []
    batch_size = input_ids.shape[0]
    unfinished = torch.ones(batch_size, dtype=torch.long, device=input_ids.device)
    model_kwargs = {"attention_mask": attention_mask, "use_cache": use_cache, "past_key_values": None,
                    "output_router_logits": output_router_logits}
    scores_seen: Tuple = ()
    logits_seen: Tuple = ()

    while input_ids.shape[1] < max_length:
        model_inputs = model.prepare_inputs_for_generation(input_ids, **model_kwargs)
        outputs = model(**model_inputs, return_dict=True)
        next_token_logits = outputs.logits[:, -1, :]                          # (B, V)
        next_token_scores = next_token_logits
        for warper in warpers:
            next_token_scores = warper(input_ids, next_token_scores)
        if output_scores:
            scores_seen += (next_token_scores,)
        if output_logits:
            logits_seen += (next_token_logits,)

        if do_sample:
            probs = torch.softmax(next_token_scores, dim=-1)
            next_tokens = torch.multinomial(probs, num_samples=1).squeeze(1)  # (B,)
        else:
            next_tokens = torch.argmax(next_token_scores, dim=-1)            # (B,)
        if eos_ids:
            # rows that already finished keep receiving pad
            next_tokens = next_tokens * unfinished + pad_id * (1 - unfinished)
        next_tokens = model.hook_next_tokens(next_tokens)                     # (B,) identity unless hooked

        input_ids = torch.cat([input_ids, next_tokens[:, None]], dim=-1)
        model_kwargs["past_key_values"] = outputs.past_key_values if use_cache else None
        model_kwargs["attention_mask"] = torch.cat(
            [model_kwargs["attention_mask"], model_kwargs["attention_mask"].new_ones((batch_size, 1))], dim=-1)
        if eos_ids:
            unfinished = unfinished & ~torch.isin(next_tokens, torch.tensor(eos_ids, device=next_tokens.device))
            if unfinished.max() == 0:
                break

    if return_dict_in_generate:
        return GenerateDecoderOnlyOutput(
            sequences=input_ids,
            scores=scores_seen if output_scores else None,
            logits=logits_seen if output_logits else None,
            past_key_values=model_kwargs["past_key_values"],
        )
    return input_ids
