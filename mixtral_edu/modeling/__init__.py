"""Hugging Face's `modeling_mixtral.py` (transformers 4.41.2), one concept per file.

Read each file beside its transformers counterpart: same class, attribute and argument
names, same statement order inside each forward. This package imports nothing else
of `mixtral_edu`; everything else (observation, views, exercises) is built around it.

    config        MixtralConfig                     outputs      MoeModelOutputWithPast, ...
    cache         DynamicCache                      masks        2D -> 4D attention masks
    hook_points   HookPoint (identity with a name)  rotary       MixtralRotaryEmbedding
    attention     MixtralAttention, ...Sdpa...      moe          MixtralSparseMoeBlock, aux loss
    decoder       MixtralRMSNorm, MixtralDecoderLayer
    model         MixtralModel                      causal_lm    MixtralForCausalLM
    generation    generate, logits warpers          checkpoint   save_pretrained / from_pretrained
    generation_config  GenerationConfig (generate's defaults, generation_config.json)
"""
