"""Hugging Face model directories: config.json + safetensors, single file or sharded.

Keys are transformers 4.41.2's (`model.layers.0.block_sparse_moe.experts.3.w1.weight`, ...),
so a directory written by transformers loads here and ours loads there. transformers 5.x
keeps each layer's experts fused (`mlp.experts.gate_up_proj` (E, 2I, C), `down_proj`
(E, C, I)); its save_pretrained writes the per-expert keys back, and a folder holding the
fused keys is converted on load (`fused_to_per_expert`), then loaded as strictly as any.
Weights are read with safetensors only: we never unpickle (no .bin files).
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, Optional, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import MixtralConfig

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model's parameters one to one."""


# transformers 5.x names: layers.{i}.mlp.gate.weight (E, C), .mlp.experts.gate_up_proj (E, 2I, C), .down_proj (E, C, I)
_FUSED = re.compile(r"^(.*layers\.\d+)\.mlp\.(gate\.weight|experts\.gate_up_proj|experts\.down_proj)$")
# 4.41.2 names: layers.{i}.block_sparse_moe.gate.weight, .experts.{e}.w1/w2/w3.weight
_PER_EXPERT = re.compile(r"^(.*layers\.\d+)\.block_sparse_moe\.(?:gate\.weight|experts\.(\d+)\.(w1|w2|w3)\.weight)$")


def has_fused_experts(tensors: Dict[str, torch.Tensor]) -> bool:
    """True when the keys are transformers 5.x's fused expert layout."""
    return any(_FUSED.match(k) for k in tensors)


def fused_to_per_expert(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """5.x fused experts -> 4.41.2 keys: gate_up_proj[e] = [w1; w3], down_proj[e] = w2. Other keys pass."""
    out: Dict[str, torch.Tensor] = {}
    for key, t in tensors.items():
        m = _FUSED.match(key)
        if m is None:
            out[key] = t
            continue
        layer, what = m.groups()
        moe = f"{layer}.block_sparse_moe"
        if what == "gate.weight":
            out[f"{moe}.gate.weight"] = t
        elif what == "experts.gate_up_proj":
            if t.dim() != 3 or t.shape[1] % 2:
                raise CheckpointMismatchError(f"{key} has shape {tuple(t.shape)}; expected (E, 2I, C).")
            w1, w3 = t.chunk(2, dim=1)                  # (E, 2I, C) -> (E, I, C) twice: gate rows, then up rows
            for e in range(t.shape[0]):
                out[f"{moe}.experts.{e}.w1.weight"] = w1[e].contiguous()   # (I, C)
                out[f"{moe}.experts.{e}.w3.weight"] = w3[e].contiguous()   # (I, C)
        else:
            if t.dim() != 3:
                raise CheckpointMismatchError(f"{key} has shape {tuple(t.shape)}; expected (E, C, I).")
            for e in range(t.shape[0]):
                out[f"{moe}.experts.{e}.w2.weight"] = t[e].contiguous()    # (E, C, I) -> (C, I)
    return out


def per_expert_to_fused(tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """4.41.2 per-expert keys -> 5.x fused ones (what 5.x does at load time). Other keys pass."""
    out: Dict[str, torch.Tensor] = {}
    experts: Dict[str, Dict[str, Dict[int, torch.Tensor]]] = {}
    for key, t in tensors.items():
        m = _PER_EXPERT.match(key)
        if m is None:
            out[key] = t
        elif m.group(2) is None:
            out[f"{m.group(1)}.mlp.gate.weight"] = t
        else:
            experts.setdefault(m.group(1), {}).setdefault(m.group(3), {})[int(m.group(2))] = t
    for layer, parts in experts.items():
        n = len(parts.get("w1", {}))
        if any(sorted(parts.get(w, {})) != list(range(n)) for w in ("w1", "w2", "w3")):
            raise CheckpointMismatchError(f"{layer}: experts 0..E-1 need w1, w2 and w3 each; got "
                                          f"{ {w: sorted(v) for w, v in parts.items()} }.")
        w1, w2, w3 = (torch.stack([parts[w][e] for e in range(n)]) for w in ("w1", "w2", "w3"))
        out[f"{layer}.mlp.experts.gate_up_proj"] = torch.cat([w1, w3], dim=1)  # (E, I, C) x 2 -> (E, 2I, C)
        out[f"{layer}.mlp.experts.down_proj"] = w2                             # (E, C, I)
    return out


def _parse_size(size: Union[int, str]) -> int:
    if isinstance(size, int):
        return size
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?B)\s*", size.upper())
    if not m:
        raise ValueError(f"max_shard_size {size!r} is not a size like '5MB' or 5000000.")
    return int(float(m.group(1)) * {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9}[m.group(2)])


def _tensors_to_save(model) -> Dict[str, torch.Tensor]:
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # one storage, saved once as the embedding (transformers does too)
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_pretrained(model, directory: str, max_shard_size: Optional[Union[int, str]] = None) -> None:
    """Write config.json and the weights; shard into files of at most max_shard_size bytes if given."""
    os.makedirs(directory, exist_ok=True)
    model.config.save_pretrained(directory)
    tensors = _tensors_to_save(model)
    metadata = {"format": "pt"}
    for stale in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME):
        if os.path.exists(os.path.join(directory, stale)):
            os.remove(os.path.join(directory, stale))
    if max_shard_size is None:
        save_file(tensors, os.path.join(directory, WEIGHTS_NAME), metadata=metadata)
        return
    limit = _parse_size(max_shard_size)
    shards, current, current_size = [], {}, 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        if current and current_size + n > limit:
            shards.append(current)
            current, current_size = {}, 0
        current[key] = t
        current_size += n
    shards.append(current)
    weight_map = {}
    for i, shard in enumerate(shards, start=1):
        name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(directory, name), metadata=metadata)
        weight_map.update({k: name for k in shard})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(directory, WEIGHTS_INDEX_NAME), "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def read_safetensors(directory: str) -> Dict[str, torch.Tensor]:
    """All tensors of a model directory, from model.safetensors or its shards."""
    single = os.path.join(directory, WEIGHTS_NAME)
    index = os.path.join(directory, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        files = [single]
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        files = [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
        missing = [p for p in files if not os.path.isfile(p)]
        if missing:
            raise FileNotFoundError(f"The index lists shard(s) that are not in {directory!r}: "
                                    f"{[os.path.basename(p) for p in missing]}.")
    else:
        pickles = [n for n in os.listdir(directory) if n.endswith((".bin", ".pt", ".pth", ".ckpt"))] \
            if os.path.isdir(directory) else []
        hint = (f" It holds {pickles}: those are pickle files, which we never load because unpickling "
                "can run arbitrary code. Convert them to safetensors first.") if pickles else ""
        raise FileNotFoundError(f"No {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} in {directory!r}.{hint}")
    tensors: Dict[str, torch.Tensor] = {}
    for path in files:
        with safe_open(path, framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    return tensors


def load_state_dict_strict(model, tensors: Dict[str, torch.Tensor]) -> None:
    """Copy tensors into the model; on any mismatch list missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in expected if k not in tensors and not (tied and k == "lm_head.weight")]
    unexpected = [k for k in tensors if k not in expected]
    wrong_shape = [f"{k}: checkpoint {tuple(tensors[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong_shape:
        parts = []
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrongly shaped", wrong_shape)):
            if items:
                shown = items[:20] + ([f"... and {len(items) - 20} more"] if len(items) > 20 else [])
                parts.append(f"{len(items)} {title} key(s):\n  " + "\n  ".join(shown))
        raise CheckpointMismatchError(
            "The checkpoint does not fit this model (is config.json the one saved with these weights?).\n"
            + "\n".join(parts))
    with torch.no_grad():
        for k, t in expected.items():
            if k in tensors:
                t.copy_(tensors[k])


def load_pretrained(cls, directory: str, torch_dtype: Optional[torch.dtype] = None, **config_overrides):
    """Build `cls` from directory/config.json and load its safetensors weights strictly."""
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory!r} is not a directory. Pass the folder holding config.json "
                                "and model.safetensors (we load from disk only, never from a hub).")
    config = MixtralConfig.from_pretrained(directory, **config_overrides)
    tensors = read_safetensors(directory)
    if has_fused_experts(tensors):
        tensors = fused_to_per_expert(tensors)  # a transformers 5.x state dict saved as it is
    # a bare MixtralModel saved by transformers has no "model." prefix; the causal LM needs it
    from .causal_lm import MixtralForCausalLM
    if cls is MixtralForCausalLM and not any(k.startswith("model.") for k in tensors):
        tensors = {f"model.{k}": v for k, v in tensors.items()}
    elif cls is not MixtralForCausalLM and all(k.startswith(("model.", "lm_head.")) for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model = cls(config)
    load_state_dict_strict(model, tensors)
    if torch_dtype is not None:
        model = model.to(torch_dtype)
    return model.eval()
