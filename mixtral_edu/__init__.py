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

__all__ = [
    "Cache", "DynamicCache", "MixtralConfig", "MixtralForCausalLM", "MixtralModel", "MixtralPreTrainedModel",
    "MoeCausalLMOutputWithPast", "MoeModelOutputWithPast", "generate",
]
__version__ = "0.1.0"
