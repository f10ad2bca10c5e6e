"""MixtralForCausalLM: the backbone plus a language-model head, a loss, and generation.

forward: MixtralModel -> lm_head (C -> V) -> logits; with labels, the shifted
cross-entropy plus `router_aux_loss_coef` times the load-balancing loss.
"""
from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import nn

from .cache import Cache
from .config import MixtralConfig
from .generation_config import GenerationConfig
from .hook_points import HookPoint, name_hook_points
from .model import MixtralModel, MixtralPreTrainedModel
from .moe import load_balancing_loss_func
from .outputs import MoeCausalLMOutputWithPast


class MixtralForCausalLM(MixtralPreTrainedModel):
    """model (MixtralModel) and lm_head (V, C)."""

    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config: MixtralConfig):
        super().__init__(config)
        self.model = MixtralModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.router_aux_loss_coef = config.router_aux_loss_coef
        self.num_experts = config.num_local_experts
        self.num_experts_per_tok = config.num_experts_per_tok
        self.hook_logits = HookPoint("(B, T, V) logits, fp32")
        # fired by generate() once per step: lets a trace or a hook see (or force) the chosen ids
        self.hook_next_tokens = HookPoint("(B,) ids appended this generation step (pad for finished rows)")
        # generate()'s defaults; from_pretrained replaces it with the folder's generation_config.json
        self.generation_config = GenerationConfig.from_model_config(config)
        self.post_init()

    def post_init(self) -> None:
        if not self.lm_head.weight.is_meta:
            self.lm_head.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
        self.tie_weights()
        name_hook_points(self)

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def set_decoder(self, decoder):
        self.model = decoder

    def get_decoder(self):
        return self.model

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        past_key_values: Optional[Union[Cache, Tuple, List]] = None,
        inputs_embeds: Optional[torch.FloatTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        use_cache: Optional[bool] = None,
        output_attentions: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        output_router_logits: Optional[bool] = None,
        return_dict: Optional[bool] = None,
    ) -> Union[Tuple, MoeCausalLMOutputWithPast]:
        """Arguments as MixtralModel.forward, plus labels (B, T) (-100 = ignore).

        Returns loss, aux_loss, logits (B, T, V) fp32, past_key_values, hidden_states,
        attentions, router_logits; as a tuple of the non-None ones in that order
        when return_dict=False.
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_router_logits = (output_router_logits if output_router_logits is not None
                                else self.config.output_router_logits)
        output_hidden_states = (output_hidden_states if output_hidden_states is not None
                                else self.config.output_hidden_states)
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict

        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            output_router_logits=output_router_logits,
            return_dict=return_dict,
        )
        hidden_states = outputs[0]                                   # (B, T, C)
        logits = self.lm_head(hidden_states)                         # (B, T, V) in the model dtype
        logits = logits.float()                                      # then fp32
        logits = self.hook_logits(logits)

        loss = None
        if labels is not None:
            if labels.shape != logits.shape[:2]:
                raise ValueError(f"labels must have the shape of input_ids {tuple(logits.shape[:2])}, "
                                 f"got {tuple(labels.shape)}; they are shifted inside, do not shift them yourself.")
            # position t predicts token t + 1: drop the last logit and the first label
            shift_logits = logits[..., :-1, :].contiguous()          # (B, T-1, V)
            shift_labels = labels[..., 1:].contiguous()              # (B, T-1)
            loss_fct = nn.CrossEntropyLoss()
            shift_logits = shift_logits.view(-1, self.config.vocab_size)  # (B*(T-1), V)
            shift_labels = shift_labels.view(-1)                     # (B*(T-1),)
            shift_labels = shift_labels.to(shift_logits.device)
            loss = loss_fct(shift_logits, shift_labels)

        aux_loss = None
        if output_router_logits:
            aux_mask = attention_mask
            if aux_mask is not None and aux_mask.dim() == 2 and aux_mask.shape[1] > logits.shape[1]:
                # With a cache the 2D mask also covers past tokens, but router logits exist only for
                # this call's T tokens: keep the mask's last T columns. (transformers 4.41.2 crashes
                # here instead, huggingface/transformers#30731; generate(output_router_logits=True) needs this.)
                aux_mask = aux_mask[:, -logits.shape[1]:]
            aux_loss = load_balancing_loss_func(
                outputs.router_logits if return_dict else outputs[-1],
                self.num_experts, self.num_experts_per_tok, aux_mask)
            if labels is not None:
                loss += self.router_aux_loss_coef * aux_loss.to(loss.device)

        if not return_dict:
            output = (logits,) + tuple(outputs[1:])
            if output_router_logits:
                output = (aux_loss,) + output
            return (loss,) + output if loss is not None else output

        return MoeCausalLMOutputWithPast(
            loss=loss,
            aux_loss=aux_loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            router_logits=outputs.router_logits,
        )

    def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                      inputs_embeds=None, output_router_logits=False, **kwargs) -> dict:
        """Cut this step's inputs out of the whole sequence so far.

        input_ids (B, S_total): prompt + generated tokens. With a cache, only the
        tokens it does not hold yet are fed; position ids come from the attention
        mask so left padding does not shift positions.
        """
        if past_key_values is not None:
            if isinstance(past_key_values, Cache):
                cache_length = past_key_values.get_seq_length()
                past_length = past_key_values.seen_tokens
                max_cache_length = past_key_values.get_max_length()
            else:  # legacy tuple: layer 0's keys are (B, Hkv, P, D)
                cache_length = past_length = past_key_values[0][0].shape[2]
                max_cache_length = None

            if attention_mask is not None and attention_mask.shape[1] > input_ids.shape[1]:
                # some inputs live only in the cache (e.g. they came as inputs_embeds): keep the unseen tail
                input_ids = input_ids[:, -(attention_mask.shape[1] - past_length):]
            elif past_length < input_ids.shape[1]:
                # input_ids holds the whole sequence: drop what the cache already covers
                input_ids = input_ids[:, past_length:]
            # otherwise input_ids already holds only new tokens

            if (max_cache_length is not None and attention_mask is not None
                    and cache_length + input_ids.shape[1] > max_cache_length):
                # a bounded cache is about to evict: the mask keeps only what it can still see
                attention_mask = attention_mask[:, -max_cache_length:]

        position_ids = kwargs.get("position_ids", None)
        if attention_mask is not None and position_ids is None:
            # count real tokens: the first non-pad token of each row gets position 0
            position_ids = attention_mask.long().cumsum(-1) - 1                   # (B, S)
            position_ids.masked_fill_(attention_mask == 0, 1)                      # pads: any valid index
            if past_key_values:
                position_ids = position_ids[:, -input_ids.shape[1]:]               # (B, T) this step's only

        if inputs_embeds is not None and past_key_values is None:
            model_inputs = {"inputs_embeds": inputs_embeds}  # embeddings only on the first step
        else:
            model_inputs = {"input_ids": input_ids}
        model_inputs.update({
            "position_ids": position_ids,
            "past_key_values": past_key_values,
            "use_cache": kwargs.get("use_cache"),
            "attention_mask": attention_mask,
            "output_router_logits": output_router_logits,
        })
        return model_inputs

    @torch.no_grad()
    def generate(self, input_ids=None, attention_mask=None, **kwargs):
        """Autoregressive generation; see `mixtral_edu.modeling.generation.generate` for the arguments."""
        from .generation import generate
        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)
