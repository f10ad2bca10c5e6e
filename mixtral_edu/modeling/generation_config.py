"""GenerationConfig: the defaults `generate` uses, stored beside the weights as generation_config.json.

transformers 4.41.2 keeps generation settings apart from the model's config: a model
loaded from a folder carries `model.generation_config` (from generation_config.json,
or built from config.json's token ids when there is none), and `generate` starts from
it; every argument passed to `generate` overrides the matching field. Here are the
fields our generate reads, with transformers' defaults; the other transformers
fields (beam search, penalties, ...) are kept as they were read and refused by
`generate` when they would change the result.
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any, Dict, Optional

from .config import is_int, is_number, read_json_object

GENERATION_CONFIG_NAME = "generation_config.json"

# transformers.GenerationConfig()'s defaults for the fields our generate implements
DEFAULTS: Dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "use_cache": True,
    "output_scores": False,
    "output_logits": None,
    "return_dict_in_generate": False,
}

# transformers fields our generate does not implement, with the value that leaves them off
NOT_IMPLEMENTED: Dict[str, Any] = {
    "num_beams": 1, "num_beam_groups": 1, "num_return_sequences": 1, "penalty_alpha": None,
    "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "length_penalty": 1.0,
    "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0, "min_length": 0, "min_new_tokens": None,
    "typical_p": 1.0, "min_p": None, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "diversity_penalty": 0.0,
    "bad_words_ids": None, "force_words_ids": None, "suppress_tokens": None, "begin_suppress_tokens": None,
    "forced_bos_token_id": None, "forced_eos_token_id": None, "sequence_bias": None, "guidance_scale": None,
    "renormalize_logits": False, "exponential_decay_length_penalty": None, "max_time": None,
    "stop_strings": None, "cache_implementation": None, "watermarking_config": None,
    "prompt_lookup_num_tokens": None, "low_memory": None, "constraints": None, "forced_decoder_ids": None,
}


class GenerationConfig:
    """generate()'s defaults (transformers' field names and default values).

    Fields not listed in DEFAULTS are kept in `extra` (written back when saved); one
    of NOT_IMPLEMENTED set to another value than its default makes generate refuse.
    """

    def __init__(self, **kwargs: Any):
        for name, value in DEFAULTS.items():
            setattr(self, name, kwargs.pop(name, value))
        self._from_model_config = bool(kwargs.pop("_from_model_config", False))
        kwargs.pop("transformers_version", None)
        self.extra: Dict[str, Any] = kwargs
        self.validate()

    def validate(self, where: str = "generation_config") -> None:
        """Raise TypeError / ValueError naming the field, its valid values and the fix."""
        def ids_ok(v):
            items = v if isinstance(v, (list, tuple)) else [v]
            return v is None or all(is_int(i) and i >= 0 for i in items)
        checks = (
            ("max_length", self.max_length is None or (is_int(self.max_length) and self.max_length > 0),
             "a positive integer (prompt included) or None"),
            ("max_new_tokens", self.max_new_tokens is None or (is_int(self.max_new_tokens)
                                                               and self.max_new_tokens >= 0),
             "an integer >= 0 or None"),
            ("do_sample", isinstance(self.do_sample, bool), "True or False"),
            ("use_cache", isinstance(self.use_cache, bool), "True or False"),
            ("output_scores", isinstance(self.output_scores, bool), "True or False"),
            ("output_logits", self.output_logits is None or isinstance(self.output_logits, bool),
             "True, False or None"),
            ("return_dict_in_generate", isinstance(self.return_dict_in_generate, bool), "True or False"),
            ("temperature", self.temperature is None or is_number(self.temperature), "a number > 0 or None"),
            ("top_k", self.top_k is None or is_int(self.top_k), "an integer >= 0 (0 or None: off)"),
            ("top_p", self.top_p is None or is_number(self.top_p), "a number in (0, 1] or None"),
            ("bos_token_id", ids_ok(self.bos_token_id), "None or a token id >= 0"),
            ("eos_token_id", ids_ok(self.eos_token_id), "None, a token id >= 0 or a list of them"),
            ("pad_token_id", self.pad_token_id is None or (is_int(self.pad_token_id) and self.pad_token_id >= 0),
             "None or a token id >= 0"),
        )
        for name, ok, valid in checks:
            if not ok:
                value = getattr(self, name)
                raise TypeError(f"{where}: `{name}` must be {valid}, got {value!r} ({type(value).__name__}). "
                                f"Pass e.g. generate(..., {name}={DEFAULTS[name]!r}) or fix the field.")

    # -- building ---------------------------------------------------------------------
    @classmethod
    def from_model_config(cls, config) -> "GenerationConfig":
        """What transformers builds when a folder has no generation_config.json: the config's token ids."""
        return cls(bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id,
                   pad_token_id=config.pad_token_id, use_cache=config.use_cache, _from_model_config=True)

    @classmethod
    def from_dict(cls, d: Dict[str, Any], where: str = "generation_config") -> "GenerationConfig":
        d = dict(d)
        try:
            return cls(**d)
        except TypeError as err:
            raise TypeError(str(err).replace("generation_config:", where + ":", 1)) from None

    def update(self, **kwargs: Any) -> None:
        """Set the given fields (generate's arguments); an unknown name raises TypeError."""
        for name, value in kwargs.items():
            if name not in DEFAULTS:
                raise TypeError(f"GenerationConfig has no field {name!r}; fields: {sorted(DEFAULTS)}.")
            setattr(self, name, value)
        self.validate("generate()")

    def copy(self) -> "GenerationConfig":
        return copy.deepcopy(self)

    def not_implemented(self) -> Dict[str, Any]:
        """{field: value} of the transformers fields set here that our generate does not implement."""
        return {k: v for k, v in self.extra.items() if k in NOT_IMPLEMENTED and v != NOT_IMPLEMENTED[k]}

    # -- (de)serialisation -----------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Only what differs from transformers' defaults, as transformers writes it."""
        d = {k: getattr(self, k) for k in DEFAULTS if getattr(self, k) != DEFAULTS[k]}
        d.update(self.extra)
        if self._from_model_config:
            d["_from_model_config"] = True
        return dict(sorted(d.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GenerationConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"GenerationConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def load_generation_config(path: Optional[str], config, shown_name: str) -> GenerationConfig:
    """From the generation_config.json at `path`, or from the model config when path is None."""
    if path is None or not os.path.isfile(path):
        return GenerationConfig.from_model_config(config)
    return GenerationConfig.from_dict(read_json_object(path, shown_name), where=shown_name)
