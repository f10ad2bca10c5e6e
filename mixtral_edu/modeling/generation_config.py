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

from .config import is_int, is_number
from .files import read_json_object

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


# what an error message offers as an example of a right value
_EXAMPLES = {"max_length": 64, "max_new_tokens": 32, "do_sample": True, "temperature": 0.7, "top_k": 50,
             "top_p": 0.9, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}


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
        """Raise TypeError (wrong type) or ValueError (out of range) naming the field and the fix."""
        def ids(v):
            return v if isinstance(v, (list, tuple)) else [v]
        flag = (lambda v: isinstance(v, bool), lambda v: True, "True or False")
        checks = {  # name: (right type?, in range?, what is valid)
            "max_length": (lambda v: v is None or is_int(v), lambda v: v is None or v > 0,
                           "a positive integer (prompt included) or None"),
            "max_new_tokens": (lambda v: v is None or is_int(v), lambda v: v is None or v >= 0,
                               "an integer >= 0 (new tokens only) or None"),
            "do_sample": flag, "use_cache": flag, "output_scores": flag, "return_dict_in_generate": flag,
            "output_logits": (lambda v: v is None or isinstance(v, bool), lambda v: True, "True, False or None"),
            "temperature": (lambda v: v is None or is_number(v), lambda v: True, "a number > 0 or None"),
            "top_k": (lambda v: v is None or is_int(v), lambda v: True, "an integer > 0 (0 or None: off)"),
            "top_p": (lambda v: v is None or is_number(v), lambda v: v is None or 0 <= v <= 1,
                      "a number in (0, 1] or None"),
            "bos_token_id": (lambda v: v is None or is_int(v), lambda v: v is None or v >= 0,
                             "None or a token id >= 0"),
            "eos_token_id": (lambda v: v is None or all(is_int(i) for i in ids(v)),
                             lambda v: v is None or all(i >= 0 for i in ids(v)),
                             "None, a token id >= 0 or a list of them"),
            "pad_token_id": (lambda v: v is None or is_int(v), lambda v: v is None or v >= 0,
                             "None or a token id >= 0"),
        }
        if is_number(self.top_p) and self.top_p > 1:
            raise ValueError(f"{where}: `top_p` must be in (0, 1], got {self.top_p}; use top_p=1.0 or None to switch "
                             "it off. (Deliberately stricter than transformers, which ignores a top_p above 1.)")
        for name, (type_ok, range_ok, valid) in checks.items():
            value = getattr(self, name)
            if not type_ok(value) or not range_ok(value):
                error = TypeError if not type_ok(value) else ValueError
                raise error(f"{where}: `{name}` must be {valid}, got {value!r} ({type(value).__name__}). "
                            f"Pass e.g. {name}={_EXAMPLES.get(name, DEFAULTS[name])!r}.")

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
