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

from .generation_config import GenerationConfig
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
        if not isinstance(top_p, (int, float)) or isinstance(top_p, bool):
            raise TypeError(f"top_p must be a number in (0, 1], got {top_p!r}; use top_p=None to switch it off.")
        top_p = float(top_p)
        if top_p == 0.0:
            raise ValueError("top_p must be in (0, 1], got 0. (Deliberately stricter than transformers, which "
                             "accepts 0 and then keeps only the best token: for that, use do_sample=False.)")
        if not 0.0 < top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}; use top_p=1.0 or None to switch it off.")
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


def as_id_list(ids) -> Optional[List[int]]:
    if ids is None:
        return None
    if isinstance(ids, torch.Tensor):
        ids = ids.tolist()
    return [int(i) for i in (ids if isinstance(ids, (list, tuple)) else [ids])]


def _check_input_ids(input_ids) -> torch.Tensor:
    """input_ids must be a (B, T) int64 tensor with T >= 1; say what is wrong and how to fix it."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.LongTensor of shape (batch, seq_len), got "
                        f"{type(input_ids).__name__}. Use tokenizer(texts, return_tensors='pt').input_ids, "
                        "or torch.tensor([ids]).")
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}; "
                         "for one prompt use input_ids[None].")
    if input_ids.dtype != torch.long:
        stricter = (" (Deliberately stricter than transformers, which accepts int32 ids and appends int64 "
                    "tokens to them.)" if not input_ids.is_floating_point() else "")
        raise TypeError(f"input_ids must hold int64 token ids (torch.long), got {input_ids.dtype}. "
                        f"Pass input_ids.long().{stricter}")
    if input_ids.shape[1] == 0:
        raise ValueError("input_ids is empty: give at least one prompt token (e.g. the bos token).")
    return input_ids


def _check_generation_mask(attention_mask, input_ids: torch.Tensor) -> None:
    """The mask must match the ids; warn about empty rows and right padding (both give garbage)."""
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a tensor of 0/1 like input_ids, got {type(attention_mask).__name__}.")
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask {tuple(attention_mask.shape)} must match input_ids "
                         f"{tuple(input_ids.shape)}.")
    empty = (attention_mask == 0).all(dim=-1)                                          # (B,)
    if bool(empty.any()):
        warnings.warn(f"attention_mask rows {empty.nonzero().flatten().tolist()} are all zeros: those prompts "
                      "have no real token, so what is generated for them means nothing. Drop those rows, or "
                      "give each at least one token with mask 1.", UserWarning)
    if input_ids.shape[0] > 1 and bool(((attention_mask[:, -1] == 0) & ~empty).any()):
        warnings.warn("Right padding detected: generation appends after the last column, so pad on the "
                      "left (tokenizer.padding_side = 'left').")


class _FromGenerationConfig:
    """The default of generate's arguments: "use the generation config's value"."""

    def __repr__(self) -> str:
        return "<from generation_config>"


FROM_CONFIG = _FromGenerationConfig()


@torch.no_grad()
def generate(
    model,
    input_ids: torch.LongTensor,
    attention_mask: Optional[torch.Tensor] = None,
    generation_config: Optional[GenerationConfig] = None,
    max_new_tokens: Optional[int] = FROM_CONFIG,
    max_length: Optional[int] = FROM_CONFIG,
    do_sample: bool = FROM_CONFIG,
    temperature: Optional[float] = FROM_CONFIG,
    top_k: Optional[int] = FROM_CONFIG,
    top_p: Optional[float] = FROM_CONFIG,
    eos_token_id: Union[int, Sequence[int], None] = FROM_CONFIG,
    pad_token_id: Union[int, None] = FROM_CONFIG,
    use_cache: bool = FROM_CONFIG,
    output_router_logits: bool = False,
    return_dict_in_generate: bool = FROM_CONFIG,
    output_scores: bool = FROM_CONFIG,
    output_logits: bool = FROM_CONFIG,
) -> Union[torch.LongTensor, GenerateDecoderOnlyOutput]:
    """Continue each row of input_ids (B, T0); returns (B, T0 + new) ids, prompt included.

    Every argument left out takes its value from `generation_config` (default:
    `model.generation_config`, read from the folder's generation_config.json), whose own
    defaults are transformers': max_length 20 (prompt included), greedy, top_k 50.
    max_new_tokens wins over max_length. A row that emitted eos is filled with
    pad_token_id (eos when there is none). For batches, left-pad the prompts and pass
    their attention_mask.
    """
    config = model.config
    if generation_config is None:
        generation_config = getattr(model, "generation_config", None) or GenerationConfig.from_model_config(config)
    elif not isinstance(generation_config, GenerationConfig):
        raise TypeError(f"generation_config must be a mixtral_edu GenerationConfig, got "
                        f"{type(generation_config).__module__}.{type(generation_config).__name__}. Build one with "
                        "mixtral_edu.GenerationConfig(max_new_tokens=..., ...), "
                        "or pass the fields as arguments.")
    given = {k: v for k, v in dict(
        max_new_tokens=max_new_tokens, max_length=max_length, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, eos_token_id=eos_token_id, pad_token_id=pad_token_id, use_cache=use_cache,
        return_dict_in_generate=return_dict_in_generate, output_scores=output_scores,
        output_logits=output_logits).items() if v is not FROM_CONFIG}
    gen = generation_config.copy()
    gen.update(**given)  # arguments win, as in transformers' generation_config.update(**kwargs)
    unsupported = gen.not_implemented()
    if unsupported:
        raise ValueError(f"The generation config sets {unsupported}, which this generate does not implement "
                         "(greedy search and sampling only). Switch them off, e.g. "
                         f"model.generation_config.extra.pop({next(iter(unsupported))!r}).")
    input_ids = _check_input_ids(input_ids)
    eos_ids = as_id_list(gen.eos_token_id)
    pad_id = gen.pad_token_id
    if pad_id is None and eos_ids:
        pad_id = eos_ids[0]  # transformers does the same, with a warning

    prompt_len = input_ids.shape[1]
    # transformers' rule: the default counts only when max_length was not passed
    has_default_max_length = given.get("max_length") is None and gen.max_length is not None
    max_length = prompt_len + gen.max_new_tokens if gen.max_new_tokens is not None else gen.max_length
    if max_length is None:
        raise ValueError("max_length and max_new_tokens are both None: generation would never stop at a length. "
                         "Pass max_new_tokens=N.")
    if has_default_max_length and gen.max_new_tokens is None and gen.max_length == 20:
        warnings.warn("Using the model-agnostic default `max_length` (=20), which counts the prompt. Pass "
                      "max_new_tokens=N to count only new tokens (or set model.generation_config.max_new_tokens).",
                      UserWarning)
    if prompt_len >= max_length:
        raise ValueError(f"The prompt has {prompt_len} tokens and max_length is {max_length} (max_new_tokens="
                         f"{gen.max_new_tokens}): nothing would be generated. Pass max_new_tokens >= 1 (new tokens "
                         "only) or a max_length larger than the prompt.")

    if attention_mask is None:
        attention_mask = prepare_attention_mask_for_generation(input_ids, pad_id, eos_ids)
    else:
        _check_generation_mask(attention_mask, input_ids)
    do_sample, use_cache = gen.do_sample, gen.use_cache
    output_scores, output_logits = gen.output_scores, bool(gen.output_logits)
    return_dict_in_generate = gen.return_dict_in_generate
    warned_position = False

    warpers = get_logits_warpers(gen.temperature, gen.top_k, gen.top_p) if do_sample else []
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
        if not warned_position and max_length > input_ids.shape[1] >= config.max_position_embeddings:
            warned_position = True  # transformers warns here too (MaxLengthCriteria)
            warnings.warn(f"This generation goes on past max_position_embeddings={config.max_position_embeddings}, "
                          "the longest sequence the model was built for: its outputs may degrade from here on. "
                          "Use a shorter prompt or fewer max_new_tokens.", UserWarning)

    if return_dict_in_generate:
        return GenerateDecoderOnlyOutput(
            sequences=input_ids,
            scores=scores_seen if output_scores else None,
            logits=logits_seen if output_logits else None,
            past_key_values=model_kwargs["past_key_values"],
        )
    return input_ids
