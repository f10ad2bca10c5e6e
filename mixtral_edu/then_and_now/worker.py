"""The transformers 5.23 side of the bridge: a small worker that runs inside `.venv-tf5`.

`mixtral_edu.then_and_now.bridge` starts it as `python -I worker.py <private dir>` and keeps
it alive for a session. Protocol: one JSON request per line on stdin, one JSON answer per
line on stdout. Tensors travel both ways in safetensors files inside the private directory
(`{"__tensor__": name}` marks where one goes); everything else is JSON. Nothing is pickled.

This file imports only the standard library, torch, safetensors and (inside the ops)
transformers: nothing of mixtral_edu. Run isolated (`-I`), it could not if it tried. The
bridge imports `pack` and `unpack` from here, so both sides speak one format.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import sys
import time
import traceback
from typing import Any, Dict, Tuple

import torch
from safetensors.torch import load_file, save_file

TENSOR = "__tensor__"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


# -- the wire format (shared with the bridge) -------------------------------------------

def pack(obj: Any, tensors: Dict[str, torch.Tensor] | None = None) -> Tuple[Any, Dict[str, torch.Tensor]]:
    """(JSON-able copy of obj with each tensor replaced by {"__tensor__": key}, {key: tensor})."""
    tensors = {} if tensors is None else tensors
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # safetensors wants contiguous tensors that share no storage with each other
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {TENSOR: key}, tensors
    if isinstance(obj, dict):
        return {str(k): pack(v, tensors)[0] for k, v in obj.items()}, tensors
    if isinstance(obj, (list, tuple)):
        return [pack(v, tensors)[0] for v in obj], tensors
    if isinstance(obj, torch.Size):
        return list(obj), tensors
    if isinstance(obj, torch.dtype):
        return str(obj).replace("torch.", ""), tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj, tensors
    raise TypeError(f"cannot send a {type(obj).__name__} over the bridge "
                    "(tensors, numbers, strings, lists and dicts only)")


def unpack(obj: Any, tensors: Dict[str, torch.Tensor]) -> Any:
    """Inverse of pack: put the tensors back where their markers are.

    Each tensor is copied into fresh memory: read from a file it may start at any byte, and
    CPU matrix kernels round differently on unaligned data (4.8e-7 apart on the same linear).
    """
    if isinstance(obj, dict):
        if set(obj) == {TENSOR}:
            return tensors[obj[TENSOR]].clone()
        return {k: unpack(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unpack(v, tensors) for v in obj]
    return obj


# -- what the worker holds -------------------------------------------------------------

MODELS: Dict[str, Any] = {}


def _model(handle: str):
    if handle not in MODELS:
        raise KeyError(f"no model loaded under {handle!r}; loaded: {sorted(MODELS)}")
    return MODELS[handle]


def _resolve(dotted: str):
    """'transformers.masking_utils.sliding_window_overlay' -> the object (longest importable module first)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(f"no module in {dotted!r} can be imported")


def describe_cache(cache) -> Dict[str, Any] | None:
    """Class, per-layer classes and key shapes of a 5.23 cache (or None)."""
    if cache is None:
        return None
    layers = []
    for layer in getattr(cache, "layers", []):
        keys = getattr(layer, "keys", None)
        layers.append({
            "class": type(layer).__name__,
            "keys_shape": list(keys.shape) if isinstance(keys, torch.Tensor) else None,
            "cumulative_length": getattr(layer, "cumulative_length", None),
            "sliding_window": getattr(layer, "sliding_window", None),
            "is_sliding": bool(getattr(layer, "is_sliding", False)),
        })
    return {
        "class": type(cache).__name__,
        "mro": [c.__name__ for c in type(cache).__mro__],
        "seq_length": int(cache.get_seq_length()),
        "layers": layers,
        "has_to_legacy_cache": hasattr(cache, "to_legacy_cache"),
        "has_from_legacy_cache": hasattr(type(cache), "from_legacy_cache"),
        "is_tuple": isinstance(cache, tuple),
    }


def _summary(value) -> Any:
    """What a forward received: shapes for tensors, class names for objects."""
    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", "")}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return {"class": type(value).__name__}


# -- operations ------------------------------------------------------------------------

def op_hello() -> Dict[str, Any]:
    import safetensors
    import transformers
    return {"python": sys.version.split()[0], "executable": sys.executable, "pid": os.getpid(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "safetensors": safetensors.__version__, "transformers_dir": os.path.dirname(transformers.__file__)}


def op_load(handle: str, folder: str, dtype: str = "float32", attn_implementation: str | None = None,
            experts_implementation: str | None = None, config_overrides: Dict[str, Any] | None = None):
    """from_pretrained(folder); keep the model under handle; say what was loaded and how."""
    from transformers import AutoConfig, MixtralForCausalLM
    kwargs: Dict[str, Any] = {"dtype": DTYPES[dtype], "output_loading_info": True}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if experts_implementation is not None:
        kwargs["experts_implementation"] = experts_implementation
    if config_overrides:
        config = AutoConfig.from_pretrained(folder)
        for k, v in config_overrides.items():
            setattr(config, k, v)
        kwargs["config"] = config
    model, info = MixtralForCausalLM.from_pretrained(folder, **kwargs)
    model.eval()
    MODELS[handle] = model
    mlp = model.model.layers[0].mlp
    return {
        "loading_info": {k: sorted(map(str, v)) for k, v in info.items()},
        "parameters": {n: list(p.shape) for n, p in model.named_parameters()},
        "dtype": str(model.dtype).replace("torch.", ""),
        "attn_implementation": model.config._attn_implementation,
        "experts_implementation": model.config._experts_implementation,
        "sliding_window": model.config.sliding_window,
        "classes": {"mlp": type(mlp).__name__, "gate": type(mlp.gate).__name__,
                    "experts": type(mlp.experts).__name__,
                    "self_attn": type(model.model.layers[0].self_attn).__name__},
    }


def op_unload(handle: str):
    MODELS.pop(handle, None)
    return {"loaded": sorted(MODELS)}


def op_save(handle: str, folder: str):
    """save_pretrained(folder); list what it wrote."""
    model = _model(handle)
    model.save_pretrained(folder)
    return {"files": sorted(os.listdir(folder))}


def op_state(handle: str, names: list):
    """Named parameters (or buffers) of a loaded model, as tensors."""
    state = _model(handle).state_dict()
    return {n: state[n] for n in names}


def _attach_mask_probe(model, masks: list):
    """Record the attention_mask that layer 0's attention receives, per forward."""
    def probe(module, args, kwargs):
        masks.append(kwargs.get("attention_mask"))
    return model.model.layers[0].self_attn.register_forward_pre_hook(probe, with_kwargs=True)


def op_forward(handle: str, input_ids, attention_mask=None, position_ids=None, labels=None,
               output_router_logits: bool = False, output_hidden_states: bool = False,
               logits_to_keep: int = 0, use_cache: bool = True, record_mask: bool = False):
    """One forward of MixtralForCausalLM, with what it returns and the cache it built."""
    model = _model(handle)
    masks: list = []
    probe = _attach_mask_probe(model, masks) if record_mask else None
    try:
        with torch.no_grad():
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        labels=labels, output_router_logits=output_router_logits,
                        output_hidden_states=output_hidden_states, logits_to_keep=logits_to_keep,
                        use_cache=use_cache)
    finally:
        if probe is not None:
            probe.remove()
    return {
        "logits": out.logits,
        "loss": out.loss,
        "aux_loss": out.aux_loss,
        "router_logits": list(out.router_logits) if out.router_logits is not None else None,
        "hidden_states": list(out.hidden_states) if out.hidden_states is not None else None,
        "cache": describe_cache(out.past_key_values),
        "mask": masks[0] if masks else None,
        "mask_kind": (type(masks[0]).__name__ if masks and masks[0] is not None else "None") if record_mask else None,
    }


def op_generate(handle: str, input_ids, attention_mask=None, max_new_tokens: int = 8, do_sample: bool = False,
                record_masks: bool = False, **generate_kwargs):
    """model.generate with its per-step logits, plus what each forward of the loop received and returned."""
    model = _model(handle)
    calls: list = []
    masks: list = []

    def before(module, args, kwargs):
        calls.append({"inputs": {k: _summary(v) for k, v in kwargs.items()},
                      "position_ids": kwargs.get("position_ids"),
                      "logits_to_keep": kwargs.get("logits_to_keep")})

    def after(module, args, kwargs, output):
        calls[-1]["logits"] = _summary(output.logits)
        calls[-1]["cache"] = describe_cache(output.past_key_values)

    hooks = [model.register_forward_pre_hook(before, with_kwargs=True),
             model.register_forward_hook(after, with_kwargs=True)]
    if record_masks:
        hooks.append(_attach_mask_probe(model, masks))
    try:
        with torch.no_grad():
            out = model.generate(input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                 do_sample=do_sample, return_dict_in_generate=True, output_logits=True,
                                 **generate_kwargs)
    finally:
        for h in hooks:
            h.remove()
    return {"sequences": out.sequences, "logits": list(out.logits), "calls": calls,
            "cache": describe_cache(out.past_key_values), "masks": masks if record_masks else None}


def op_mask(handle: str, batch_size: int, q_len: int, past_len: int = 0, attention_mask=None,
            attn_implementation: str = "eager", sliding_window: int | None = -1):
    """The mask 5.23's masking_utils builds for a (B, T) call after P cached tokens.

    sliding_window=-1 keeps the model's; None or a number overrides it. Returns the mask as
    built (None, bool or additive float), the boolean 'visible' view, and the key offset and
    length the cache reports (a sliding layer that stopped growing covers fewer than P + T keys).
    """
    from transformers import DynamicCache
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
    model = _model(handle)
    config = copy.deepcopy(model.config)
    config._attn_implementation = attn_implementation
    if sliding_window != -1:
        config.sliding_window = sliding_window
    kv_heads, head_dim = config.num_key_value_heads, config.hidden_size // config.num_attention_heads
    cache = DynamicCache(config=config)
    if past_len:
        for layer_idx in range(config.num_hidden_layers):
            zeros = torch.zeros(batch_size, kv_heads, past_len, head_dim)
            cache.update(zeros, zeros.clone(), layer_idx)
    embeds = torch.zeros(batch_size, q_len, config.hidden_size, dtype=model.dtype)
    position_ids = torch.arange(past_len, past_len + q_len)[None]
    build = create_causal_mask if config.sliding_window is None else create_sliding_window_causal_mask
    mask = build(config=config, inputs_embeds=embeds, attention_mask=attention_mask, past_key_values=cache,
                 position_ids=position_ids)
    kv_length, kv_offset = cache.layers[0].get_mask_sizes(q_len) if past_len else (q_len, 0)
    visible = None
    if isinstance(mask, torch.Tensor):
        visible = mask if mask.dtype == torch.bool else mask == 0
    return {"mask": mask, "visible": visible, "builder": build.__name__, "kv_length": int(kv_length),
            "kv_offset": int(kv_offset), "cache": describe_cache(cache)}


def op_moe(handle: str, layer: int, hidden_states, implementations: list):
    """Layer `layer`'s MoE block on hidden_states (N, C) under each experts implementation.

    Returns the router's three outputs and, per implementation, the block's output or the
    error that implementation raised here (some need a GPU).
    """
    model = _model(handle)
    block = model.model.layers[layer].mlp
    before = model.config._experts_implementation
    results: Dict[str, Any] = {}
    with torch.no_grad():
        router_logits, router_scores, router_indices = block.gate(hidden_states)
        for impl in implementations:
            try:
                model.set_experts_implementation(impl)
                out = block.experts(hidden_states, router_indices, router_scores)
                results[impl] = {"output": out, "used": model.config._experts_implementation}
            except Exception as exc:  # an implementation that needs hardware or packages we lack: say so
                results[impl] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            finally:
                model.set_experts_implementation(before)
        block_out = block(hidden_states[None])  # (1, N, C): the block returns hidden states only
    return {"router_logits": router_logits, "router_scores": router_scores, "router_indices": router_indices,
            "block_output": block_out[0], "block_returns": type(block_out).__name__,
            "experts": results, "default": before}


def op_sliding_layer(sliding_window: int, updates: list):
    """Feed (key, value) pairs in turn to one DynamicSlidingWindowLayer; what each update returned and kept."""
    from transformers.cache_utils import DynamicSlidingWindowLayer
    layer = DynamicSlidingWindowLayer(sliding_window=sliding_window)
    steps = []
    for key, value in updates:
        attend_k, attend_v = layer.update(key, value)
        steps.append({"attend_k": attend_k, "attend_v": attend_v, "keep_k": layer.keys, "keep_v": layer.values,
                      "seq_length": layer.get_seq_length()})
    return steps


def op_aux_loss(gate_logits: list, num_experts: int, top_k: int, attention_mask=None):
    """5.23's load_balancing_loss_func on the given router logits (one (N, E) tensor per layer)."""
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    return {"aux_loss": load_balancing_loss_func(tuple(gate_logits), num_experts, top_k, attention_mask)}


def op_recorders(handle: str, input_ids):
    """How router logits reach the output in 5.23: hooks installed by the output recorders."""
    model = _model(handle)
    gate = model.model.layers[0].mlp.gate
    seen: list = []
    mine = gate.register_forward_hook(lambda m, a, out: seen.append(out[0]))
    hooks_before = len(gate._forward_hooks) - 1
    try:
        with torch.no_grad():
            out = model(input_ids, output_router_logits=True, use_cache=False)
    finally:
        mine.remove()
    return {
        "can_record_outputs": {k: repr(v) for k, v in type(model)._can_record_outputs.items()},
        "gate_hooks_before": hooks_before, "gate_hooks_after": len(gate._forward_hooks),
        "router_logits_layer0": out.router_logits[0], "gate_output0_layer0": seen[0],
        "n_router_logits": len(out.router_logits),
    }


def op_registries():
    """The interfaces 5.23 dispatches through, and where generation's input preparation lives."""
    from transformers import GenerationMixin, MixtralForCausalLM
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS, _can_use_grouped_mm
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    import transformers.models.mixtral.modeling_mixtral as mm
    classes = [n for n, v in vars(mm).items() if inspect.isclass(v) and v.__module__ == mm.__name__]
    return {
        "attention_functions": sorted(ALL_ATTENTION_FUNCTIONS.valid_keys()),
        "experts_functions": sorted(ALL_EXPERTS_FUNCTIONS.keys()),
        # would grouped_mm call torch's own grouped matmul on this CPU (else a per-expert fallback loop)?
        "grouped_mm_native_on_cpu": _can_use_grouped_mm(torch.zeros(4, 8), torch.zeros(2, 8, 8),
                                                        torch.tensor([2, 4], dtype=torch.int32)),
        "torch_has_grouped_mm": hasattr(torch.nn.functional, "grouped_mm"),
        "mask_functions": sorted(ALL_MASK_ATTENTION_FUNCTIONS.valid_keys()),
        "mixtral_classes": classes,
        "prepare_inputs_for_generation": MixtralForCausalLM.prepare_inputs_for_generation.__qualname__,
        "mixtral_defines": sorted(n for n in vars(MixtralForCausalLM) if not n.startswith("__")),
        "generation_has_initial_cache_position": hasattr(GenerationMixin, "_get_initial_cache_position"),
        "forward_parameters": list(inspect.signature(MixtralForCausalLM.forward).parameters),
        "model_forward_parameters": list(inspect.signature(mm.MixtralModel.forward).parameters),
    }


def op_conversion_rules(model_type: str = "mixtral"):
    """The load-time rules 5.23 applies to a checkpoint of this model type (and reverts on save)."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    rules = []
    for rule in get_checkpoint_conversion_mapping(model_type):
        ops = [type(o).__name__ + (f"(dim={o.dim})" if hasattr(o, "dim") else "")
               for o in getattr(rule, "operations", [])]
        rules.append({"rule": repr(rule), "operations": ops})
    return rules


def op_source(names: list):
    """inspect.getsource of each dotted name, read from the installed 5.23 (never copied anywhere)."""
    import transformers
    root = os.path.dirname(transformers.__file__)
    found = {}
    for name in names:
        obj = _resolve(name)
        target = inspect.unwrap(obj) if callable(obj) else obj
        path = inspect.getsourcefile(target) or ""
        lines, start = inspect.getsourcelines(target)
        found[name] = {"source": "".join(lines), "file": os.path.relpath(path, os.path.dirname(root)),
                       "line": start}
    return found


OPS = {name[3:]: fn for name, fn in globals().items() if name.startswith("op_")}


# -- the loop --------------------------------------------------------------------------

def serve(private_dir: str) -> None:
    """Answer requests until stdin closes or a 'shutdown' request arrives."""
    out = sys.stdout
    sys.stdout = sys.stderr  # whatever transformers prints must not corrupt the protocol
    torch.set_num_threads(1)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        rid = request.get("id")
        if request.get("op") == "shutdown":
            out.write(json.dumps({"id": rid, "ok": True, "result": None, "tensors": None}) + "\n")
            out.flush()
            return
        t0 = time.perf_counter()
        try:
            tensors = load_file(request["tensors"]) if request.get("tensors") else {}
            args = unpack(request.get("args", {}), tensors)
            if request["op"] not in OPS:
                raise KeyError(f"unknown operation {request['op']!r}; known: {sorted(OPS)}")
            result, out_tensors = pack(OPS[request["op"]](**args))
            path = None
            if out_tensors:
                path = os.path.join(private_dir, f"answer-{rid}.safetensors")
                save_file(out_tensors, path + ".tmp")
                os.replace(path + ".tmp", path)
            answer = {"id": rid, "ok": True, "result": result, "tensors": path,
                      "seconds": time.perf_counter() - t0}
        except Exception as exc:
            answer = {"id": rid, "ok": False, "error": type(exc).__name__, "message": str(exc),
                      "traceback": traceback.format_exc()}
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not os.path.isdir(sys.argv[1]):
        sys.exit("usage: python -I worker.py <private directory for tensor files>")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        serve(sys.argv[1])
    finally:  # stdin closed or shutdown asked: the private directory goes with us (the bridge removes it too)
        import shutil
        shutil.rmtree(sys.argv[1], ignore_errors=True)
