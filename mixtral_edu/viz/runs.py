"""What a view feeds the model and reads back: prompts to ids, a traced generate, the step to draw.

Shared by every view (static figures and live explorers alike); no widgets here.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ..observe.records import StepRecord
from ..observe.tracer import Trace, trace

Source = Union[Trace, StepRecord]


# -- reading traces -------------------------------------------------------------------------------

def pick_step(source: Source, step: int = 0) -> StepRecord:
    """The StepRecord to draw: `source` itself, or `source.steps[step]` of a Trace."""
    if isinstance(source, StepRecord):
        return source
    if isinstance(source, Trace):
        if not source.steps:
            raise ValueError("The trace recorded no step: run the model (or generate) inside `with trace(model):`.")
        if not -len(source.steps) <= step < len(source.steps):
            raise IndexError(f"step {step} does not exist: the trace holds {len(source.steps)} step(s).")
        return source.steps[step]
    raise TypeError(f"Expected a mixtral_edu Trace or StepRecord, got {type(source).__name__}.")


def check_trace(source: Any, view: str) -> None:
    """A view's first argument must be a Trace that recorded at least one step."""
    if not isinstance(source, Trace):
        raise TypeError(f"{view}() draws a mixtral_edu Trace, got {type(source).__name__}. Record one with "
                        f"`with mixtral_edu.trace(model) as tr: model.generate(...)`, then {view}(tr).")
    if not source.steps:
        raise ValueError(f"{view}(): the trace recorded no step. Run the model (or generate) inside "
                         "`with mixtral_edu.trace(model) as tr:`, then draw tr.")


def check_index(view: str, name: str, value: Any, n: int, what: str) -> int:
    """`value` as a position among n (negative counts from the end, as in Python); else IndexError."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{view}({name}=...) must be an int, got {value!r} ({type(value).__name__}).")
    if not -n <= value < n:
        raise IndexError(f"{view}({name}={value}): {name} must be in 0..{n - 1} (or -{n}..-1 from the end): "
                         f"the trace holds {n} {what}.")
    return value % n


def check_member(view: str, name: str, value: Any, valid: Sequence[int], fix: str) -> None:
    """`value` must be one of `valid` (e.g. the traced layers); else IndexError naming them and the fix."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{view}({name}=...) must be an int, got {value!r} ({type(value).__name__}).")
    if value not in valid:
        raise IndexError(f"{view}({name}={value}): the trace has {name} {list(valid)} only. {fix}")


def batch_size_of(trace: Trace) -> int:
    """B of a traced run: the first recorded step's input_ids (or its 2D mask)."""
    for rec in trace.steps:
        for x in (rec.input_ids, rec.attention_mask):
            if x is not None:
                return x.shape[0]
    return 1


def sequence_ids(trace: Trace, step: int) -> Optional[torch.Tensor]:
    """(B, S) ids of every key at `step`: the slices fed at steps 0..step, side by side.

    Each generation step feeds only the tokens the cache lacks, so these slices
    laid end to end are the sequence the cache holds plus this step's new ones.
    None if a step fed embeddings instead of ids.
    """
    if step < 0:
        step += len(trace.steps)  # -1: the last step, as pick_step reads it
    parts = [s.input_ids for s in trace.steps[: step + 1]]
    if any(p is None for p in parts):
        return None
    if trace.steps[0].past_length:
        return None  # the first traced step already had a cache: its keys' ids are unknown
    return torch.cat(parts, dim=1)


def config_of(source: Source, config=None):
    """The model config: given, or the traced model's."""
    if config is not None:
        return config
    if isinstance(source, Trace):
        return source.model.config
    raise ValueError("Pass config=model.config when drawing a StepRecord (it does not know its model).")


def encode(tokenizer, text: str) -> List[int]:
    """Token ids of `text` for a transformers tokenizer or a raw `tokenizers.Tokenizer`."""
    out = tokenizer.encode(text)
    return list(out.ids) if hasattr(out, "ids") else list(out)


def encode_batch(tokenizer, texts: Sequence[str], pad_id: int = 3) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) (B, T) for several texts, left-padded (as generation needs)."""
    if callable(tokenizer) and hasattr(tokenizer, "padding_side"):  # a transformers tokenizer
        side, tokenizer.padding_side = tokenizer.padding_side, "left"
        try:
            batch = tokenizer(list(texts), padding=True, return_tensors="pt")
        finally:
            tokenizer.padding_side = side
        return batch["input_ids"], batch["attention_mask"]
    rows = [encode(tokenizer, t) for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
    return ids, mask


def pad_id_of(model, tokenizer=None) -> int:
    for candidate in (getattr(tokenizer, "pad_token_id", None), model.config.pad_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def left_pad(ids: Sequence[int], pads: Sequence[int], pad_id: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), both (B, len(ids)): row b is pads[b] pads, then ids[pads[b]:].

    So every row ends with the same tokens and the rows with pads are shorter
    prompts, as in a left-padded batch.
    """
    n = len(ids)
    if any(not 0 <= p < n for p in pads):
        raise ValueError(f"each row needs at least one real token: pads must lie in [0, {n - 1}], got {list(pads)}.")
    rows = [[pad_id] * p + list(ids[p:]) for p in pads]
    masks = [[0] * p + [1] * (n - p) for p in pads]
    return torch.tensor(rows, dtype=torch.long), torch.tensor(masks, dtype=torch.long)


@contextlib.contextmanager
def config_values(model, **fields: Any) -> Iterator[None]:
    """Set config fields (e.g. sliding_window) for the block; put the old values back after."""
    config = model.config
    saved = {k: getattr(config, k) for k in fields}
    try:
        for k, v in fields.items():
            setattr(config, k, v)
        config.validate()
        yield
    finally:
        for k, v in saved.items():
            setattr(config, k, v)


def traced_generate(model, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                    **generate_kwargs: Any) -> Tuple[Trace, Any]:
    """Run model.generate inside a trace; returns (trace, generate's output)."""
    with torch.no_grad(), trace(model) as tr:
        out = model.generate(input_ids, attention_mask=attention_mask, **generate_kwargs)
    return tr, out
