"""The pieces a learner can plug in: where each one lives, how the model calls it, what it must return.

Each piece has one slot (see plug.py): a function of mixtral_edu.modeling, or a method of
the model's modules. Names and signatures are those of the walkthrough's exercises, so a
function written in chapter NN plugs in as it is:

    greedy_step(model, input_ids, attention_mask, past_key_values)      01  generate's loop
    position_ids_from_mask(attention_mask, num_new)                     02  prepare_inputs_for_generation
    load_balancing_loss_func(gate_logits, num_experts, top_k, attention_mask)  03  the aux loss
    build_4d_mask(attention_mask, q_len, past_len, sliding_window, dtype)     04  the 4D mask
    rms_norm(hidden_states, weight, eps)                                05  MixtralRMSNorm.forward
    rotate_half(x); apply_rotary_pos_emb(q, k, cos, sin, position_ids)  06  rotary
    repeat_kv(hidden_states, n_rep); attention_weights(query_states, key_states, attention_mask)  06
    route(router_logits, top_k); dispatch(hidden_states, routing_weights, selected_experts, experts)  07
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..modeling.attention import MixtralAttention
from ..modeling.causal_lm import MixtralForCausalLM
from ..modeling.decoder import MixtralRMSNorm
from ..modeling.moe import MixtralSparseMoeBlock
from . import assembled

# User-facing strings (plain literals, one place).
NEEDS_TENSOR = "{got} where the model needs a tensor of shape {shape}, {dtype} ({meaning})"
WRONG_SHAPE = "a tensor of shape {got} where the model needs shape {shape} ({meaning})"
WRONG_DTYPE = "a tensor of dtype {got} where the model needs {dtype} ({meaning})"
NEEDS_PAIR = "{got} where the model needs a pair {pair}"
NEEDS_FLOAT = "a tensor of dtype {got} where the model needs a floating-point scalar ({meaning})"
IN_PAIR = "{which} of the pair: {problem}"
FIX_CAUSAL_LM = "Plug it into a MixtralForCausalLM (e.g. mixtral_edu.load_tiny()[0]), not its backbone."


# -- slots --------------------------------------------------------------------------------------

class FunctionSlot:
    """A function of mixtral_edu.modeling, rebound in every modeling module that holds it."""

    fix = ""

    def __init__(self, module: str, name: str, build: Callable):
        self.module, self.name, self.build = f"mixtral_edu.modeling.{module}", name, build
        self.where = f"{self.module}.{name}"

    def present(self, model) -> bool:
        return True

    def replace(self, rebinder, model, make: Callable) -> None:
        """Put make(None, current function) wherever the model's code finds the current function."""
        current = getattr(importlib.import_module(self.module), self.name)
        new = make(None, current)
        for name, module in list(sys.modules.items()):
            if name.startswith("mixtral_edu.modeling.") and vars(module).get(self.name) is current:
                rebinder.set(module, self.name, new)

    def install(self, rebinder, model, fns: Dict[str, Callable]) -> None:
        self.replace(rebinder, model, lambda owner, current: self.build(owner, current, fns))


class MethodSlot:
    """A method of the model's modules of one class, set on each instance (the class is untouched)."""

    def __init__(self, cls: type, name: str, build: Callable, fix: str = ""):
        self.cls, self.name, self.build, self.fix = cls, name, build, fix
        self.where = f"{cls.__name__}.{name}"

    def instances(self, model) -> List[Any]:
        return [m for m in model.modules() if isinstance(m, self.cls)]

    def present(self, model) -> bool:
        return bool(self.instances(model))

    def replace(self, rebinder, model, make: Callable) -> None:
        for owner in self.instances(model):
            rebinder.set(owner, self.name, make(owner, getattr(owner, self.name)))

    def install(self, rebinder, model, fns: Dict[str, Callable]) -> None:
        self.replace(rebinder, model, lambda owner, current: self.build(owner, current, fns))


GENERATE = MethodSlot(MixtralForCausalLM, "generate",
                      lambda model, current, fns: assembled.greedy_generate(model, fns["greedy_step"]), FIX_CAUSAL_LM)
PREPARE = MethodSlot(MixtralForCausalLM, "prepare_inputs_for_generation",
                     lambda model, current, fns: assembled.with_position_ids(current, fns["position_ids_from_mask"]),
                     FIX_CAUSAL_LM)
AUX_LOSS = FunctionSlot("moe", "load_balancing_loss_func", lambda _, current, fns: fns["load_balancing_loss_func"])
MASK = FunctionSlot("masks", "prepare_4d_causal_attention_mask",
                    lambda _, current, fns: assembled.with_mask(current, fns["build_4d_mask"]))
NORM = MethodSlot(MixtralRMSNorm, "forward",
                  lambda norm, current, fns: assembled.rms_norm_forward(norm, fns["rms_norm"]))
ROTATE = FunctionSlot("rotary", "rotate_half", lambda _, current, fns: fns["rotate_half"])
ROTARY = FunctionSlot("rotary", "apply_rotary_pos_emb", lambda _, current, fns: fns["apply_rotary_pos_emb"])
REPEAT = FunctionSlot("attention", "repeat_kv", lambda _, current, fns: fns["repeat_kv"])
ATTENTION = MethodSlot(MixtralAttention, "forward",
                       lambda attn, current, fns: assembled.attention_forward(attn, fns["attention_weights"]))
MOE = MethodSlot(MixtralSparseMoeBlock, "forward",
                 lambda block, current, fns: assembled.moe_forward(block, fns.get("route", assembled.route),
                                                                   fns.get("dispatch", assembled.dispatch)))


# -- output contracts: None when the output fits, else what is wrong ------------------------------

def _kind(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}, {x.dtype}"
    return "None" if x is None else f"a {type(x).__name__}"


def tensor_problem(out: Any, shape: Sequence[int], dtype: Optional[torch.dtype], meaning: str) -> Optional[str]:
    shape = tuple(int(s) for s in shape)
    if not isinstance(out, torch.Tensor):
        return NEEDS_TENSOR.format(got=_kind(out), shape=shape, dtype=dtype or "any dtype", meaning=meaning)
    if tuple(out.shape) != shape:
        return WRONG_SHAPE.format(got=tuple(out.shape), shape=shape, meaning=meaning)
    if dtype is not None and out.dtype != dtype:
        return WRONG_DTYPE.format(got=out.dtype, dtype=dtype, meaning=meaning)
    return None


def pair_problem(out: Any, pair: str, first: Callable, second: Callable) -> Optional[str]:
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return NEEDS_PAIR.format(got=_kind(out), pair=pair)
    for which, check, value in (("the first", first, out[0]), ("the second", second, out[1])):
        problem = check(value)
        if problem:
            return IN_PAIR.format(which=which, problem=problem)
    return None


def _greedy(args, out):
    ids = args[1]
    return pair_problem(out, "(next_tokens (B,), past_key_values)",
                        lambda t: tensor_problem(t, ids.shape[:1], torch.long, "one token id per row, B"),
                        lambda c: None)


def _positions(args, out):
    mask, num_new = args
    return tensor_problem(out, (mask.shape[0], num_new), torch.long, "B rows, one position per new token")


def _aux(args, out):
    problem = tensor_problem(out, (), None, "one number for the whole batch")
    if problem is None and not out.is_floating_point():
        problem = NEEDS_FLOAT.format(got=out.dtype, meaning="one number for the whole batch")
    return problem


def _mask(args, out):
    mask, q_len, past_len, _, dtype = args
    return tensor_problem(out, (mask.shape[0], 1, q_len, mask.shape[1]), dtype,
                          "(B, 1, T, S) additive, in the embeddings' dtype")


def _norm(args, out):
    x, weight, _ = args
    return tensor_problem(out, x.shape, torch.promote_types(weight.dtype, x.dtype),
                          "the input's shape; weight times the normalised input cast back to its dtype")


def _same_as_input(args, out):
    return tensor_problem(out, args[0].shape, args[0].dtype, "the input's shape and dtype")


def _rotary(args, out):
    q, k = args[0], args[1]
    return pair_problem(out, "(q_embed, k_embed)",
                        lambda t: tensor_problem(t, q.shape, q.dtype, "the queries' shape (B, H, T, D)"),
                        lambda t: tensor_problem(t, k.shape, k.dtype, "the keys' shape (B, Hkv, T, D)"))


def _repeat(args, out):
    x, n_rep = args
    b, hkv, s, d = x.shape
    return tensor_problem(out, (b, hkv * n_rep, s, d), x.dtype, "(B, Hkv * n_rep, S, D)")


def _weights(args, out):
    q, k, _ = args
    return tensor_problem(out, (*q.shape[:3], k.shape[2]), q.dtype, "(B, H, T, S) in the queries' dtype")


def _route(args, out):
    logits, top_k = args
    n = logits.shape[0]
    return pair_problem(out, "(routing_weights (N, K), selected_experts (N, K))",
                        lambda t: tensor_problem(t, (n, top_k), logits.dtype, "(N, K) in the model's dtype"),
                        lambda t: tensor_problem(t, (n, top_k), torch.long, "(N, K) expert indices"))


def _dispatch(args, out):
    return tensor_problem(out, args[0].shape, args[0].dtype, "(N, C): one output row per token")


# -- the pieces ----------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Piece:
    """One function a learner writes: its name and arguments, its slot, its chapter, its contract."""

    name: str
    params: Tuple[str, ...]
    returns: str
    teaches: str
    chapter: str          # notebook stem, e.g. "06_attention"
    slot: Any
    contract: Callable[[tuple, Any], Optional[str]]

    @property
    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)}) -> {self.returns}"


PIECES: Dict[str, Piece] = {p.name: p for p in [
    Piece("greedy_step", ("model", "input_ids", "attention_mask", "past_key_values"),
          "(next_tokens (B,), past_key_values)", "one turn of the generation loop", "01_generation_loop",
          GENERATE, _greedy),
    Piece("position_ids_from_mask", ("attention_mask", "num_new"), "position_ids (B, num_new)",
          "position ids from the attention mask", "02_prepare_inputs", PREPARE, _positions),
    Piece("load_balancing_loss_func", ("gate_logits", "num_experts", "top_k", "attention_mask"),
          "aux_loss ()", "the load-balancing loss", "03_causal_lm_forward", AUX_LOSS, _aux),
    Piece("build_4d_mask", ("attention_mask", "q_len", "past_len", "sliding_window", "dtype"),
          "(B, 1, T, S) additive mask", "the 4D causal mask", "04_model_forward", MASK, _mask),
    Piece("rms_norm", ("hidden_states", "weight", "eps"), "(..., C)", "RMSNorm", "05_decoder_layer", NORM, _norm),
    Piece("rotate_half", ("x",), "(..., D)", "rotary position embedding", "06_attention", ROTATE, _same_as_input),
    Piece("apply_rotary_pos_emb", ("q", "k", "cos", "sin", "position_ids"), "(q_embed, k_embed)",
          "rotary position embedding", "06_attention", ROTARY, _rotary),
    Piece("repeat_kv", ("hidden_states", "n_rep"), "(B, Hkv * n_rep, S, D)", "grouped-query attention",
          "06_attention", REPEAT, _repeat),
    Piece("attention_weights", ("query_states", "key_states", "attention_mask"), "(B, H, T, S)",
          "scaled, masked softmax attention", "06_attention", ATTENTION, _weights),
    Piece("route", ("router_logits", "top_k"), "(routing_weights (N, K), selected_experts (N, K))",
          "routing", "07_moe", MOE, _route),
    Piece("dispatch", ("hidden_states", "routing_weights", "selected_experts", "experts"), "(N, C)",
          "dispatch to the experts", "07_moe", MOE, _dispatch),
]}


def piece_table() -> List[Tuple[str, str, str]]:
    """(chapter, signature, what it replaces in the model) for every piece, in chapter order."""
    return [(p.chapter, p.signature, p.slot.where) for p in PIECES.values()]
