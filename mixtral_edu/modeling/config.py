"""MixtralConfig: every size and switch of the model, with the field names of
transformers 4.41.2 (`transformers.MixtralConfig`), validated on creation.

Shape legend used in every module of this package (stated once, here):
    B  batch size                 T  new tokens in this call (query length)
    P  tokens already in the cache (past length)    S = P + T  key length
    C  hidden_size                H  num_attention_heads
    Hkv num_key_value_heads       G = H // Hkv  query heads per kv head
    D  head_dim = C // H          I  intermediate_size (one expert's width)
    E  num_local_experts          K  num_experts_per_tok (top-k)
    N = B * T  tokens, flattened  V  vocab_size          L  num_hidden_layers
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Optional

from .files import checkpoint_files, read_json_object, write_file_atomically

CONFIG_NAME = "config.json"
ATTN_IMPLEMENTATIONS = ("eager", "sdpa")

# Keys that transformers writes into config.json for bookkeeping. We read them
# without complaint and write the ones that let transformers load our files.
_HF_BOOKKEEPING = {
    "architectures", "model_type", "transformers_version", "torch_dtype", "_name_or_path",
    "return_dict", "output_attentions", "output_hidden_states", "use_return_dict",
    "_attn_implementation", "_attn_implementation_autoset", "dtype", "is_decoder",
    "head_dim", "layer_types", "rope_scaling", "rope_parameters",
}


def is_int(value: Any) -> bool:
    """A Python int that is not a bool (True is the int 1 in Python, but never a size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A Python int or float that is not a bool (what config.json can hold)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class MixtralConfig:
    """Hyper-parameters of a Mixtral model (defaults are Mixtral 8x7B's, as in transformers).

    Raises ValueError, naming the fields, when the sizes cannot form a model.
    """

    model_type = "mixtral"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 4096,
        intermediate_size: int = 14336,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: Optional[int] = 8,
        hidden_act: str = "silu",
        max_position_embeddings: int = 4096 * 32,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-5,
        use_cache: bool = True,
        pad_token_id: Optional[int] = None,
        bos_token_id: Optional[int] = 1,
        eos_token_id: Optional[int] = 2,
        tie_word_embeddings: bool = False,
        rope_theta: float = 1e6,
        sliding_window: Optional[int] = None,
        attention_dropout: float = 0.0,
        num_experts_per_tok: int = 2,
        num_local_experts: int = 8,
        output_router_logits: bool = False,
        router_aux_loss_coef: float = 0.001,
        router_jitter_noise: float = 0.0,
        attn_implementation: str = "eager",
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        use_return_dict: bool = True,
        **kwargs: Any,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        # Older configs leave this out: then every head has its own k/v (plain MHA).
        self.num_key_value_heads = num_attention_heads if num_key_value_heads is None else num_key_value_heads
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.tie_word_embeddings = tie_word_embeddings
        self.rope_theta = rope_theta
        self.sliding_window = sliding_window
        self.attention_dropout = attention_dropout
        self.num_experts_per_tok = num_experts_per_tok
        self.num_local_experts = num_local_experts
        self.output_router_logits = output_router_logits
        self.router_aux_loss_coef = router_aux_loss_coef
        self.router_jitter_noise = router_jitter_noise
        self.output_attentions = output_attentions
        self.output_hidden_states = output_hidden_states
        self.use_return_dict = kwargs.pop("return_dict", use_return_dict)
        self._attn_implementation = attn_implementation
        # where the config was loaded from (transformers' `config.name_or_path`); not a hyper-parameter
        self._name_or_path = str(kwargs.get("_name_or_path") or "")
        unknown = sorted(set(kwargs) - _HF_BOOKKEEPING)
        if unknown:
            raise ValueError(
                f"MixtralConfig got unknown field(s) {unknown}. Check the spelling against "
                "transformers' MixtralConfig (e.g. `num_local_experts`, not `num_experts`). "
                "(Deliberately stricter than transformers, which keeps unknown keys as attributes "
                "and so hides a typo.)"
            )
        self.validate()

    # -- checks ---------------------------------------------------------------
    # Types first: a string or a bool in a numeric field would otherwise pass a comparison
    # by accident (True is the int 1) or fail far away with "'<=' not supported".
    _POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                      "num_attention_heads", "num_key_value_heads", "num_local_experts",
                      "num_experts_per_tok", "max_position_embeddings")
    # (name, smallest allowed, is the smallest itself allowed, an example for the message)
    _NUMBERS = (("rms_norm_eps", 0.0, False, 1e-5), ("rope_theta", 0.0, False, 1e6),
                ("initializer_range", 0.0, True, 0.02), ("attention_dropout", 0.0, True, 0.0),
                ("router_aux_loss_coef", 0.0, True, 0.001), ("router_jitter_noise", 0.0, True, 0.0))
    _BOOLS = ("use_cache", "tie_word_embeddings", "output_router_logits", "output_attentions",
              "output_hidden_states", "use_return_dict")

    def validate(self) -> None:
        """Raise TypeError (wrong type) or ValueError (wrong value) naming the field and the fix."""
        for name in self._POSITIVE_INTS:
            value = getattr(self, name)
            if not is_int(value):
                raise TypeError(f"`{name}` must be a positive integer, got {value!r} ({type(value).__name__}). "
                                f"Write it as a number, e.g. {name}=8 (no quotes, not True/False).")
            if value <= 0:
                raise ValueError(f"`{name}` must be a positive integer, got {value}.")
        for name, low, low_ok, example in self._NUMBERS:
            value = getattr(self, name)
            if not is_number(value):
                raise TypeError(f"`{name}` must be a number, got {value!r} ({type(value).__name__}). "
                                f"Write it as a number with no quotes, e.g. {name}={example!r} (not a string or None).")
            if not math.isfinite(value) or value < low or (value == low and not low_ok):
                bound = f"> {low:g}" if not low_ok else f">= {low:g}"
                raise ValueError(f"`{name}` must be finite and {bound}, got {value!r}.")
        if self.attention_dropout >= 1:
            raise ValueError(f"`attention_dropout` is a probability in [0, 1), got {self.attention_dropout!r}.")
        for name in self._BOOLS:
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be True or False, got {value!r} ({type(value).__name__}). "
                                "(Deliberately stricter than transformers, which stores anything: a string "
                                "like 'false' would count as true.)")
        if self.sliding_window is not None and (not is_int(self.sliding_window) or self.sliding_window <= 0):
            raise (TypeError if not is_int(self.sliding_window) else ValueError)(
                f"`sliding_window` must be None or a positive integer (a number of tokens), got "
                f"{self.sliding_window!r} ({type(self.sliding_window).__name__}). Use e.g. sliding_window=4096, "
                "or None for no window (a bool is not a size).")
        if not isinstance(self.hidden_act, str) or self.hidden_act != "silu":
            raise ValueError(f"`hidden_act` {self.hidden_act!r} is not supported; Mixtral uses 'silu'.")
        if self._attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"`attn_implementation` must be one of {ATTN_IMPLEMENTATIONS}, got {self._attn_implementation!r}."
            )
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            ids = getattr(self, name)
            for i in ids if isinstance(ids, (list, tuple)) else [ids]:
                if i is not None and not is_int(i):
                    raise TypeError(f"`{name}` must be None, a token id (int) or a list of ids, got {ids!r}. "
                                    f"Write it as a number, e.g. {name}=2 (no quotes).")
                if i is not None and not 0 <= i < self.vocab_size:
                    raise ValueError(f"`{name}` ({i}) must lie in [0, vocab_size={self.vocab_size}).")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}): each head gets hidden_size // num_attention_heads dims."
            )
        if (self.hidden_size // self.num_attention_heads) % 2:
            raise ValueError(
                f"head dim = `hidden_size` // `num_attention_heads` = "
                f"{self.hidden_size // self.num_attention_heads} must be even for rotary embeddings."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be divisible by "
                f"`num_key_value_heads` ({self.num_key_value_heads}): query heads share kv heads in equal groups."
            )
        if self.num_experts_per_tok > self.num_local_experts:
            raise ValueError(
                f"`num_experts_per_tok` ({self.num_experts_per_tok}) cannot exceed "
                f"`num_local_experts` ({self.num_local_experts})."
            )

    # -- derived sizes --------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def name_or_path(self) -> str:
        """The folder this config was loaded from ("" if built in code), as in transformers."""
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: str) -> None:
        self._name_or_path = str(value)

    @property
    def attn_implementation(self) -> str:
        return self._attn_implementation

    @attn_implementation.setter
    def attn_implementation(self, value: str) -> None:
        if value not in ATTN_IMPLEMENTATIONS:
            raise ValueError(f"`attn_implementation` must be one of {ATTN_IMPLEMENTATIONS}, got {value!r}.")
        self._attn_implementation = value

    # -- (de)serialisation ----------------------------------------------------
    def to_dict(self) -> dict:
        """The config.json contents; transformers' MixtralConfig reads them as they are."""
        d = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        d["return_dict"] = d.pop("use_return_dict")
        d["attn_implementation"] = self._attn_implementation
        d.update(model_type=self.model_type, architectures=["MixtralForCausalLM"], torch_dtype="float32")
        return dict(sorted(d.items()))

    def to_json_file(self, path: str) -> None:
        """Write config.json atomically (temp file, fsync, rename): never half a file."""
        write_file_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict, **overrides: Any) -> "MixtralConfig":
        d = dict(d)
        d.update(overrides)
        if d.get("model_type", "mixtral") != "mixtral":
            raise ValueError(f"config.json has model_type {d['model_type']!r}; this package builds 'mixtral' models.")
        # transformers 5.x moves rope_theta into `rope_parameters` and may write head_dim.
        rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
        if "rope_theta" not in d and isinstance(rope, dict) and "rope_theta" in rope:
            d["rope_theta"] = rope["rope_theta"]
        if isinstance(rope, dict) and rope.get("rope_type", rope.get("type", "default")) != "default":
            raise ValueError(f"RoPE scaling {rope!r} is not supported; Mixtral uses plain RoPE.")
        head_dim = d.get("head_dim")
        if head_dim is not None and head_dim * d.get("num_attention_heads", 32) != d.get("hidden_size", 4096):
            raise ValueError(f"`head_dim` {head_dim} must equal hidden_size // num_attention_heads here.")
        # transformers does not save the attention kind; keep ours unless told.
        d.setdefault("attn_implementation", d.pop("_attn_implementation", None) or "eager")
        return cls(**d)

    @classmethod
    def from_json_file(cls, path: str, **overrides: Any) -> "MixtralConfig":
        return cls.from_dict(read_json_object(path), **overrides)

    @classmethod
    def from_pretrained(cls, directory: str, **overrides: Any) -> "MixtralConfig":
        path = checkpoint_files(directory).get(CONFIG_NAME)
        if path is None:
            raise FileNotFoundError(
                f"No {CONFIG_NAME} in {directory!r}. Pass a model directory written by "
                "`save_pretrained` (ours or transformers')."
            )
        config = cls.from_dict(read_json_object(path, os.path.join(directory, CONFIG_NAME)), **overrides)
        config._name_or_path = str(directory)
        return config

    def save_pretrained(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.to_json_file(os.path.join(directory, CONFIG_NAME))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MixtralConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()
                           if k not in ("architectures", "model_type", "torch_dtype"))
        return f"MixtralConfig({fields})"
