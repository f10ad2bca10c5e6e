"""mixtral_edu: Hugging Face's Mixtral generation call chain, rebuilt readable and proven equal.

    generate -> prepare_inputs_for_generation -> MixtralForCausalLM.forward
      -> MixtralModel.forward -> MixtralDecoderLayer x L (self_attn + block_sparse_moe)
      -> norm -> lm_head -> logits, past_key_values -> next token
"""
from .cache import Cache, DynamicCache
from .causal_lm import MixtralForCausalLM
from .config import MixtralConfig
from .generation import generate
from .model import MixtralModel, MixtralPreTrainedModel
from .outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from . import hooks  # callable: `with mixtral_edu.hooks(model, {name: fn}):` (see capture.hooks)
from .capture import ActivationCache, disable_expert, run_with_cache
from .pretrained import load_tiny
from . import presets
from .sizes import parameter_count
from .trace import Trace, trace  # `mixtral_edu.trace` is the function; the module: `from mixtral_edu.trace import ...`

__all__ = [
    "Cache", "DynamicCache", "MixtralConfig", "MixtralForCausalLM", "MixtralModel", "MixtralPreTrainedModel",
    "MoeCausalLMOutputWithPast", "MoeModelOutputWithPast", "generate",
    "ActivationCache", "Trace", "disable_expert", "hooks", "run_with_cache", "trace",
    "load_tiny", "parameter_count", "presets",
]
__version__ = "0.1.0"
