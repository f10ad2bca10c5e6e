"""Hugging Face model directories: config.json + safetensors, single file or sharded.

Keys are transformers 4.41.2's (`model.layers.0.block_sparse_moe.experts.3.w1.weight`, ...),
so a directory written by transformers loads here and ours loads there. transformers 5.x
keeps each layer's experts fused (`mlp.experts.gate_up_proj` (E, 2I, C), `down_proj`
(E, C, I)); its save_pretrained writes the per-expert keys back, and a folder holding the
fused keys is converted on load (`fused_to_per_expert`), then loaded as strictly as any.
Weights are read with safetensors only: we never unpickle (no .bin files).

A save never loses the checkpoint it replaces. Whatever stops it (a bad argument, an
exception, a full disk, the process killed), the folder loads as the old checkpoint
or as the new one, never a mix:

1. everything that can fail in memory is checked first (max_shard_size, shared tensors);
2. every new file is written under a temporary name in the same folder
   (`.config.json.<id>.tmp`), flushed and fsynced; loads ignore such files;
3. commit: the list of renames is written to `.mixtral_edu_save.json` (temp name,
   fsync, rename, fsync the folder). From here on a load reads the new checkpoint:
   each new file either is in place or still under its temporary name;
4. the files are renamed into place (the index last), the previous save's stale
   weight files are removed, the folder is fsynced and the journal deleted.

The next save first finishes (or clears) what an interrupted one left. A reader that
does not know the journal (transformers) sees a whole checkpoint except after a crash
in the middle of step 4, until that next save. Other files in the folder are never touched.
One save at a time per folder: two processes saving into the same folder at once are not supported.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CONFIG_NAME, MixtralConfig, is_int
from .files import (SAVE_JOURNAL, WEIGHTS_INDEX_NAME, WEIGHTS_NAME, apply_journal, checkpoint_files, finish_interrupted_save,
                    fsync_dir, fsync_file, is_weight_file, read_json_object, remove_quietly, text_writer, tmp_name)
from .generation_config import GENERATION_CONFIG_NAME, load_generation_config

_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


# how often a load reads the folder again while another process's saves keep changing it
LOAD_ATTEMPTS = 50


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model's parameters one to one."""


class SharedTensorsError(RuntimeError):
    """Parameters share memory in a way a safetensors file cannot store."""


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


# -- checks made before anything is written ------------------------------------------------------

def parse_size(size: Union[int, str]) -> int:
    """max_shard_size in bytes: an int, or a string like '5GB', '500MB', '2GiB' (transformers' units)."""
    if is_int(size):
        if size <= 0:
            raise ValueError(f"max_shard_size must be a positive number of bytes, got {size}.")
        return int(size)
    if not isinstance(size, str):
        raise TypeError(f"max_shard_size must be an int (bytes) or a string like '5GB', got {size!r} "
                        f"({type(size).__name__}).")
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", size.upper())
    if not m or m.group(2) == "IB":
        raise ValueError(f"max_shard_size {size!r} is not a size: write a number and a unit, like '5GB', "
                         f"'500MB' or '2GiB' (units: {', '.join(u.replace('I', 'i') for u in _UNITS)}).")
    n = int(float(m.group(1)) * _UNITS[m.group(2)])
    if n <= 0:
        raise ValueError(f"max_shard_size must be more than 0 bytes, got {size!r}.")
    return n


def tied_weight_keys(model) -> List[str]:
    """The keys a save leaves out because they are the same tensor as another one (transformers' rule)."""
    return list(getattr(model, "_tied_weights_keys", None) or [])


def tensors_to_save(model) -> Dict[str, torch.Tensor]:
    """The state dict as it is written, with shared tensors handled as transformers 4.41.2 does.

    Parameters that share memory: a name listed in the model's `_tied_weights_keys`
    (`lm_head.weight`) is left out when it is the very same tensor as another, and
    `config.tie_word_embeddings` ties it back on load. Views of one buffer that do not
    overlap are saved as copies. Anything else raises SharedTensorsError, before
    anything is written.
    """
    state = model.state_dict()
    by_storage: Dict[tuple, List[str]] = defaultdict(list)
    for name, t in state.items():
        if t.device.type != "meta":
            by_storage[(t.device, t.untyped_storage().data_ptr())].append(name)
    tied = tied_weight_keys(model)
    for names in (sorted(n) for n in by_storage.values() if len(n) > 1):
        spans = {n: (state[n].data_ptr(), state[n].data_ptr() + state[n].numel() * state[n].element_size())
                 for n in names}
        overlapping = [n for n in names if any(m != n and spans[m][0] < spans[n][1] and spans[n][0] < spans[m][1]
                                               for m in names)]
        for n in set(names) - set(overlapping):
            state[n] = state[n].clone()  # a separate slice of a shared buffer: store it on its own
        if not overlapping:
            continue
        same = len({(spans[n], state[n].shape) for n in overlapping}) == 1
        droppable = [n for n in overlapping if n in tied]
        kept = [n for n in overlapping if n not in droppable]
        if same and droppable and kept and getattr(model.config, "tie_word_embeddings", False):
            for n in droppable:
                del state[n]          # saved once, under the other name; the config ties it back on load
            continue
        if same and droppable and kept:
            raise SharedTensorsError(
                f"{droppable + kept} are one tensor (tied by hand), but config.tie_word_embeddings is False, so "
                "a load would not tie them back and the saved checkpoint would lose one of them. Fix: set "
                "model.config.tie_word_embeddings = True (then it is saved once, as transformers does), or untie "
                "them: model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.clone()). (Deliberately "
                "stricter than transformers, which saves it without lm_head.weight and reloads a random one.)")
        raise SharedTensorsError(
            f"{overlapping} share memory, and a safetensors file cannot store shared tensors. Give each its own "
            "copy before saving, e.g. module.weight = torch.nn.Parameter(module.weight.clone()).")
    if getattr(model.config, "tie_word_embeddings", False) and "lm_head.weight" in state \
            and "model.embed_tokens.weight" in state:
        raise ValueError("config.tie_word_embeddings is True, but lm_head.weight and model.embed_tokens.weight "
                         "are different tensors, so a load would give both the same values. Call "
                         "model.tie_weights() first, or set model.config.tie_word_embeddings = False.")
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def parameter_dtype(model) -> torch.dtype:
    """The dtype config.json records: the first floating-point parameter's (as transformers)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _split(tensors: Dict[str, torch.Tensor], limit: Optional[int]) -> Tuple[Dict[str, dict], Optional[dict]]:
    """({file name: tensors}, index or None): one file, or shards of at most `limit` bytes in key order.

    A tensor larger than the limit gets a shard of its own (transformers does the same).
    """
    if limit is None:
        return {WEIGHTS_NAME: tensors}, None
    shards: List[dict] = [{}]
    size = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > limit:
            shards.append({})
            size = 0
        shards[-1][key] = t
        size += n
    names = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total},
             "weight_map": {k: name for name, shard in zip(names, shards) for k in shard}}
    return dict(zip(names, shards)), index


# -- durable writes of tensors ---------------------------------------------------------------

def _tensors_writer(tensors: Dict[str, torch.Tensor]) -> Callable[[str], None]:
    def write(path: str) -> None:
        save_file(tensors, path, metadata={"format": "pt"})  # transformers refuses files without "format"
        fsync_file(path)
    return write


# -- saving ----------------------------------------------------------------------------------------

def save_pretrained(model, directory: str, max_shard_size: Optional[Union[int, str]] = None) -> None:
    """Write config.json, generation_config.json and the weights (shards of at most max_shard_size
    bytes if given), replacing an earlier save in `directory` atomically (see the module docstring)."""
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a path (str), got {type(directory).__name__}.")
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise NotADirectoryError(f"{directory!r} is a file; save_pretrained needs a folder path "
                                 "(it is created if missing).")
    tensors = tensors_to_save(model)
    shards, index = _split(tensors, limit)
    config = model.config.to_dict()
    config["torch_dtype"] = str(parameter_dtype(model)).replace("torch.", "")  # the real dtype, as transformers
    files: Dict[str, Callable[[str], None]] = {}
    if getattr(model, "generation_config", None) is not None:
        files[GENERATION_CONFIG_NAME] = text_writer(model.generation_config.to_json_string())
    files[CONFIG_NAME] = text_writer(json.dumps(config, indent=2) + "\n")
    files.update({name: _tensors_writer(shard) for name, shard in shards.items()})
    if index is not None:  # the index last: it is what points a sharded load at the shards
        files[WEIGHTS_INDEX_NAME] = text_writer(json.dumps(index, indent=2, sort_keys=True) + "\n")

    if not os.path.isdir(directory):
        os.makedirs(directory)
        fsync_dir(os.path.dirname(os.path.abspath(directory)))
    finish_interrupted_save(directory)
    token = secrets.token_hex(4)
    renames = [[name, tmp_name(name, token)] for name in files]
    stale = sorted(n for n in os.listdir(directory) if is_weight_file(n) and n not in files)
    journal_tmp = os.path.join(directory, tmp_name(SAVE_JOURNAL, token))
    committed = False
    try:
        for name, tmp in renames:                                         # step 2
            files[name](os.path.join(directory, tmp))
        fsync_dir(directory)
        text_writer(json.dumps({"renames": renames, "remove": stale}))(journal_tmp)
        os.replace(journal_tmp, os.path.join(directory, SAVE_JOURNAL))   # step 3: the commit
        committed = True
        fsync_dir(directory)
    except BaseException as err:
        if not committed:  # the old checkpoint was never touched: just drop what was written
            for path in [os.path.join(directory, tmp) for _, tmp in renames] + [journal_tmp]:
                remove_quietly(path)
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(f"save_pretrained: {directory!r} " + (
                "already reads as the new checkpoint; the next save tidies it up." if committed else
                "was left as it was: the previous checkpoint in it still loads."))
        raise
    apply_journal(directory, {"renames": renames, "remove": stale})     # step 4


# -- loading ---------------------------------------------------------------------------------------

def read_safetensors(directory: str, files: Optional[Dict[str, str]] = None) -> Dict[str, torch.Tensor]:
    """All tensors of a model directory, from model.safetensors or its shards."""
    files = checkpoint_files(directory) if files is None else files
    if WEIGHTS_NAME in files:
        paths = [files[WEIGHTS_NAME]]
    elif WEIGHTS_INDEX_NAME in files:
        index = read_json_object(files[WEIGHTS_INDEX_NAME], os.path.join(directory, WEIGHTS_INDEX_NAME))
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{os.path.join(directory, WEIGHTS_INDEX_NAME)} has no \"weight_map\" object; "
                             "save the model again.")
        names = sorted(set(weight_map.values()))
        missing = [n for n in names if n not in files]
        if missing:
            raise FileNotFoundError(f"The index lists shard(s) that are not in {directory!r}: {missing}.")
        paths = [files[n] for n in names]
    else:
        pickles = [n for n in files if n.endswith((".bin", ".pt", ".pth", ".ckpt"))]
        hint = (f" It holds {pickles}: those are pickle files, which we never load because unpickling "
                "can run arbitrary code. Convert them to safetensors first.") if pickles else ""
        raise FileNotFoundError(f"No {WEIGHTS_NAME} or {WEIGHTS_INDEX_NAME} in {directory!r}.{hint}")
    tensors: Dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            opened = safe_open(path, framework="pt")
        except Exception:
            if not os.path.exists(path):  # renamed away by a save in another process: the caller reads again
                raise FileNotFoundError(f"{path} went away while the checkpoint was read.") from None
            raise
        with opened as f:
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


def resolve_dtype(torch_dtype, config_dict: dict, tensors: Dict[str, torch.Tensor]) -> Optional[torch.dtype]:
    """from_pretrained's torch_dtype: None, a torch.dtype, "auto" (config.json's torch_dtype, else the
    weights' own) or a dtype name such as "bfloat16" / "torch.bfloat16"."""
    if torch_dtype is None or (isinstance(torch_dtype, torch.dtype) and torch_dtype.is_floating_point):
        return torch_dtype
    if torch_dtype == "auto":
        named = config_dict.get("torch_dtype")
        if isinstance(named, str) and named in _DTYPES:
            return _DTYPES[named]
        return next((t.dtype for t in tensors.values() if t.is_floating_point()), None)
    if isinstance(torch_dtype, str) and torch_dtype.replace("torch.", "") in _DTYPES:
        return _DTYPES[torch_dtype.replace("torch.", "")]
    raise ValueError(f"torch_dtype must be a floating-point torch.dtype, 'auto' or one of {sorted(_DTYPES)}, got "
                     f"{torch_dtype!r}. "
                     "e.g. from_pretrained(path, torch_dtype=torch.bfloat16) or torch_dtype='auto' (config.json's).")


def _read_by_load(files: Dict[str, str]) -> Dict[str, str]:
    return {n: p for n, p in files.items() if n in (CONFIG_NAME, GENERATION_CONFIG_NAME) or is_weight_file(n)}


def _fingerprint(files: Dict[str, str]) -> dict:
    """What identifies each file a load reads, now; it changes when a save replaces one."""
    return {name: _identity(path, os.stat(path)) for name, path in _read_by_load(files).items()}


def _identity(path: str, st: os.stat_result) -> tuple:
    return path, st.st_ino, st.st_size, st.st_mtime_ns


@contextmanager
def _pinned(files: Dict[str, str]) -> Iterator[dict]:
    """Hold the files a load reads open; yield their fingerprint.

    While a file is open its inode number cannot be given to a new file, so "same inode, size and
    mtime after the read" means "the same file": a save that deleted it and wrote a look-alike of the
    same size within one clock tick cannot pass for it.
    """
    fds: List[int] = []
    try:
        out = {}
        for name, path in _read_by_load(files).items():
            fds.append(os.open(path, os.O_RDONLY))
            out[name] = _identity(path, os.fstat(fds[-1]))
        yield out
    finally:
        for fd in fds:
            os.close(fd)


def load_pretrained(cls, directory: str, torch_dtype=None, **config_overrides):
    """Build `cls` from directory/config.json and load its safetensors weights strictly."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"from_pretrained needs a folder path (str), got {type(directory).__name__}.")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory!r} is not a directory. Pass the folder holding config.json "
                                "and model.safetensors (we load from disk only, never from a hub).")
    resolve_dtype(torch_dtype, {}, {})  # a bad torch_dtype fails before any file is read
    for attempt in range(LOAD_ATTEMPTS):  # a save running in another process may swap files while we read
        try:  # the listing too: the journal it reads may be removed by a save finishing meanwhile
            files = checkpoint_files(directory)
            if CONFIG_NAME not in files:
                raise FileNotFoundError(f"No {CONFIG_NAME} in {directory!r}. Pass a model directory written by "
                                        "`save_pretrained` (ours or transformers').")
            with _pinned(files) as before:
                config_dict = read_json_object(files[CONFIG_NAME], os.path.join(directory, CONFIG_NAME))
                config = MixtralConfig.from_dict(config_dict, **config_overrides)
                tensors = read_safetensors(directory, files)
                generation_config = load_generation_config(
                    files.get(GENERATION_CONFIG_NAME), config, os.path.join(directory, GENERATION_CONFIG_NAME))
                if _fingerprint(checkpoint_files(directory)) == before:
                    break
        except FileNotFoundError:  # a file went away under us (renamed into place): read again
            if attempt == LOAD_ATTEMPTS - 1:
                raise
    else:
        raise RuntimeError(f"The files in {directory!r} kept changing while they were read (another process "
                           "saving there?). Load again once it is done.")
    config._name_or_path = directory
    if has_fused_experts(tensors):
        tensors = fused_to_per_expert(tensors)  # a transformers 5.x state dict saved as it is
    model = cls(config)
    # As transformers decides it: a model that holds its backbone under `base_model_prefix`
    # (MixtralForCausalLM.model) loads a bare backbone's keys with "model." put in front; the
    # backbone itself loads a causal LM's "model." keys without it (and leaves its lm_head out).
    prefix = cls.base_model_prefix + "."
    expects_prefix = hasattr(model, cls.base_model_prefix)
    if expects_prefix and not any(k.startswith(prefix) for k in tensors):
        tensors = {prefix + k: v for k, v in tensors.items()}
    elif not expects_prefix and any(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    load_state_dict_strict(model, tensors)
    dtype = resolve_dtype(torch_dtype, config_dict, tensors)
    if dtype is not None:
        model = model.to(dtype)
    if hasattr(model, "generation_config"):  # the causal LM: generate() takes its defaults from it
        model.generation_config = generation_config
    return model.eval()
