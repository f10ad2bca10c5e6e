"""mixtral_edu: Hugging Face's Mixtral generation call chain, rebuilt readable and proven equal.

    generate -> prepare_inputs_for_generation -> MixtralForCausalLM.forward
      -> MixtralModel.forward -> MixtralDecoderLayer x L (self_attn + block_sparse_moe)
      -> norm -> lm_head -> logits, past_key_values -> next token
"""
from .modeling.cache import Cache, DynamicCache
from .modeling.causal_lm import MixtralForCausalLM
from .modeling.config import MixtralConfig
from .modeling.generation import generate
from .modeling.generation_config import GenerationConfig
from .modeling.model import MixtralModel, MixtralPreTrainedModel
from .modeling.outputs import MoeCausalLMOutputWithPast, MoeModelOutputWithPast
from .observe.capture import ActivationCache, disable_expert, hooks, run_with_cache
from .tiny.pretrained import load_tiny
from .full_size import presets
from .full_size.sizes import parameter_count
from .observe.tracer import Trace, trace
from .build.plug import plug_in
from .build.diff import trace_diff
from .i18n import get_language, set_language

__all__ = [
    "Cache", "DynamicCache", "MixtralConfig", "MixtralForCausalLM", "MixtralModel", "MixtralPreTrainedModel",
    "MoeCausalLMOutputWithPast", "MoeModelOutputWithPast", "generate", "GenerationConfig",
    "ActivationCache", "Trace", "disable_expert", "hooks", "run_with_cache", "trace",
    "load_tiny", "parameter_count", "presets", "plug_in", "trace_diff", "get_language", "set_language",
]
__version__ = "0.1.0"
