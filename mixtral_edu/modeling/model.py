"""MixtralModel: the backbone. Token ids in, final-normed hidden states out.

embed_tokens -> (positions, cache, 4D mask prepared once) -> L decoder layers -> norm.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .cache import Cache, DynamicCache
from .config import MixtralConfig
from .decoder import MixtralDecoderLayer, MixtralRMSNorm
from .hook_points import HookPoint, run_torch_hooks, name_hook_points
from .masks import prepare_4d_causal_attention_mask, prepare_4d_causal_attention_mask_for_sdpa
from .outputs import MoeModelOutputWithPast


def check_position_ids(position_ids: torch.Tensor, kv_seq_len: int) -> None:
    """Given position ids must index the rotary tables, which cover the S = P + T keys.

    Checked once per call here, not in every layer: reading a tensor's values is a device sync.
    """
    if position_ids.device.type == "meta" or position_ids.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(position_ids))
    if low < 0 or high >= kv_seq_len:
        raise ValueError(
            f"position_ids lie in [{low}, {high}], but the keys (cache + new tokens) cover positions "
            f"0 .. {kv_seq_len - 1}. Position ids count from 0 at the first non-pad token: build them "
            "with attention_mask.long().cumsum(-1) - 1, or leave them out.")


class MixtralPreTrainedModel(nn.Module):
    """What both models share: the config, weight init, hook points, loading and saving."""

    config_class = MixtralConfig
    base_model_prefix = "model"

    def __init__(self, config: MixtralConfig):
        super().__init__()
        if not isinstance(config, MixtralConfig):
            raise TypeError(f"Expected a mixtral_edu.MixtralConfig, got {type(config).__name__}. "
                            "Build one with MixtralConfig(...) or MixtralConfig.from_pretrained(dir).")
        self.config = config

    def post_init(self) -> None:
        """Initialise weights as transformers does and name the hook points."""
        self.apply(self._init_weights)
        self.tie_weights()
        name_hook_points(self)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if getattr(module, "weight", None) is not None and module.weight.is_meta:
            return  # a meta-device model has shapes only: nothing to fill
        if isinstance(module, nn.Linear):
            module.weight.data.normal_(mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            module.weight.data.normal_(mean=0.0, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()

    def tie_weights(self) -> None:
        pass

    # -- hook points ------------------------------------------------------------
    def hook_points(self) -> dict:
        """{name: HookPoint} for every hook point in the model."""
        return {n: m for n, m in self.named_modules() if isinstance(m, HookPoint)}

    def hook_names(self) -> dict:
        """{name: documented shape} of every hook point, in call order."""
        return {n: m.doc for n, m in self.hook_points().items()}

    def reset_hooks(self) -> None:
        """Take every hook fn off every hook point (PyTorch hooks stay: their handles remove them)."""
        for point in self.hook_points().values():
            point.fns[:] = [fn for fn in point.fns if fn is run_torch_hooks]

    # -- gradient checkpointing -----------------------------------------------------
    def gradient_checkpointing_enable(self) -> None:
        for m in self.modules():
            if isinstance(m, MixtralModel):
                m.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for m in self.modules():
            if isinstance(m, MixtralModel):
                m.gradient_checkpointing = False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- checkpoints -------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str, torch_dtype: Union[torch.dtype, str, None] = None, **config_overrides):
        """Load a Hugging Face model directory (config.json + safetensors), strictly.

        torch_dtype: a torch.dtype, "auto" (config.json's torch_dtype) or a name like "bfloat16".
        The model remembers the folder (`name_or_path`) and its generation_config.json.
        """
        from .checkpoint import load_pretrained
        return load_pretrained(cls, directory, torch_dtype=torch_dtype, **config_overrides)

    @property
    def name_or_path(self) -> str:
        """The folder the model was loaded from ("" if built in code), as in transformers."""
        return self.config.name_or_path

    def save_pretrained(self, directory: str, max_shard_size: Optional[Union[int, str]] = None) -> None:
        """Write config.json, generation_config.json and model.safetensors (or shards plus an index),
        replacing an earlier save atomically: a failed save leaves the old checkpoint loadable."""
        from .checkpoint import save_pretrained
        save_pretrained(self, directory, max_shard_size=max_shard_size)


class MixtralModel(MixtralPreTrainedModel):
    """embed_tokens (V, C), layers (L decoder layers), norm (C,)."""

    def __init__(self, config: MixtralConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList([MixtralDecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self._attn_implementation = config._attn_implementation
        self.norm = MixtralRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.gradient_checkpointing = False
        self.hook_embed = HookPoint("(B, T, C) token embeddings")
        self.hook_mask = HookPoint("(B, 1, T, S) additive 4D attention mask (absent when None)")
        self.hook_final_norm = HookPoint("(B, T, C) hidden states after the final RMSNorm")
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Union[Cache, Tuple, List]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        output_router_logits: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> Union[Tuple, MoeModelOutputWithPast]:
        """input_ids (B, T) or inputs_embeds (B, T, C); attention_mask (B, S); position_ids (B, T).

        Returns last_hidden_state (B, T, C), past_key_values, hidden_states (L+1 of them),
        attentions (L), router_logits (L of (N, E)); as a tuple of the non-None ones
        in that order when return_dict=False.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_router_logits = (output_router_logits if output_router_logits is not None
                                else self.config.output_router_logits)
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        use_cache = use_cache if use_cache is not None else self.config.use_cache
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        # retrieve input_ids and inputs_embeds; the checks of this call's inputs happen here, once
        if input_ids is not None and inputs_embeds is not None:
            raise ValueError("Pass either input_ids or inputs_embeds, not both.")
        elif input_ids is not None:
            if input_ids.dim() != 2:
                raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}; "
                                 "for one sequence use input_ids[None].")
            batch_size, seq_length = input_ids.shape
            if input_ids.device.type != "meta" and input_ids.numel() and (
                    int(input_ids.min()) < 0 or int(input_ids.max()) >= self.vocab_size):
                raise ValueError(f"input_ids must lie in [0, vocab_size={self.vocab_size}); got values in "
                                 f"[{int(input_ids.min())}, {int(input_ids.max())}]. Was the text encoded "
                                 "with this model's tokenizer?")
        elif inputs_embeds is not None:
            batch_size, seq_length, _ = inputs_embeds.shape
        else:
            raise ValueError("Pass input_ids (B, T) or inputs_embeds (B, T, C).")

        past_key_values_length = 0

        if self.gradient_checkpointing and self.training:
            if use_cache:
                # checkpointing recomputes activations in backward; a cache would keep them: pick one
                warnings.warn("use_cache=True is incompatible with gradient checkpointing; using use_cache=False.")
                use_cache = False

        use_legacy_cache = False
        if use_cache:
            use_legacy_cache = not isinstance(past_key_values, Cache)
            if use_legacy_cache:
                past_key_values = DynamicCache.from_legacy_cache(past_key_values)
            past_key_values_length = past_key_values.get_usable_length(seq_length)
        elif past_key_values is not None:
            raise ValueError("past_key_values was given with use_cache=False; pass use_cache=True to use a cache.")

        if position_ids is None:
            device = input_ids.device if input_ids is not None else inputs_embeds.device
            # no positions given: this call's tokens follow the cache, one batch row for all
            position_ids = torch.arange(past_key_values_length, seq_length + past_key_values_length,
                                        dtype=torch.long, device=device)                    # (T,)
            position_ids = position_ids.unsqueeze(0).view(-1, seq_length)                   # (1, T)
        else:
            position_ids = position_ids.view(-1, seq_length).long()                          # (B, T)
            check_position_ids(position_ids, past_key_values_length + seq_length)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)                                     # (B, T, C)
        inputs_embeds = self.hook_embed(inputs_embeds)

        if self._attn_implementation == "sdpa" and not output_attentions:
            # None where SDPA's own is_causal gives the same answer, else the same 4D mask as eager
            attention_mask = prepare_4d_causal_attention_mask_for_sdpa(
                attention_mask, (batch_size, seq_length), inputs_embeds, past_key_values_length,
                sliding_window=self.config.sliding_window)
        else:
            # (B, S) 1/0 -> (B, 1, T, S) additive: 0 where visible, dtype min where hidden
            attention_mask = prepare_4d_causal_attention_mask(
                attention_mask, (batch_size, seq_length), inputs_embeds, past_key_values_length,
                sliding_window=self.config.sliding_window)
        if attention_mask is not None:
            attention_mask = self.hook_mask(attention_mask)                                  # (B, 1, T, S)

        hidden_states = inputs_embeds
        all_hidden_states = () if output_hidden_states else None
        all_self_attns = () if output_attentions else None
        all_router_logits = () if output_router_logits else None
        next_decoder_cache = None

        for decoder_layer in self.layers:
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if self.gradient_checkpointing and self.training:
                layer_outputs = checkpoint(decoder_layer.__call__, hidden_states, attention_mask, position_ids,
                                           past_key_values, output_attentions, output_router_logits, use_cache,
                                           use_reentrant=False)
            else:
                layer_outputs = decoder_layer(
                    hidden_states,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    past_key_value=past_key_values,
                    output_attentions=output_attentions,
                    output_router_logits=output_router_logits,
                    use_cache=use_cache,
                )
            hidden_states = layer_outputs[0]
            if use_cache:
                next_decoder_cache = layer_outputs[2 if output_attentions else 1]
            if output_attentions:
                all_self_attns += (layer_outputs[1],)
            if output_router_logits:
                all_router_logits += (layer_outputs[-1],)

        hidden_states = self.hook_final_norm(self.norm(hidden_states))
        if output_hidden_states:
            all_hidden_states += (hidden_states,)

        next_cache = None
        if use_cache:
            # hand back the form we were given: a tuple in, a tuple out
            next_cache = next_decoder_cache.to_legacy_cache() if use_legacy_cache else next_decoder_cache

        if not return_dict:
            return tuple(v for v in (hidden_states, next_cache, all_hidden_states, all_self_attns, all_router_logits)
                         if v is not None)
        return MoeModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=next_cache,
            hidden_states=all_hidden_states,
            attentions=all_self_attns,
            router_logits=all_router_logits,
        )
