"""Hugging Face model directories: config.json + safetensors, single file or sharded.

Keys are transformers 4.41.2's (`model.layers.0.block_sparse_moe.experts.3.w1.weight`, ...),
so a directory written by transformers loads here and ours loads there.
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
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import CONFIG_NAME, MixtralConfig, is_int, read_json_object
from .generation_config import GENERATION_CONFIG_NAME, load_generation_config

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SAVE_JOURNAL = ".mixtral_edu_save.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_TMP_RE = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64}


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors do not match the model's parameters one to one."""


class SharedTensorsError(RuntimeError):
    """Parameters share memory in a way a safetensors file cannot store."""


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


# -- durable writes ------------------------------------------------------------------------------

def fsync_dir(directory: str) -> None:
    """Make the folder's entries (new names, renames, removals) durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open a folder; its renames are durable on their own
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _text_writer(text: str) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    return write


def _tensors_writer(tensors: Dict[str, torch.Tensor]) -> Callable[[str], None]:
    def write(path: str) -> None:
        save_file(tensors, path, metadata={"format": "pt"})  # transformers refuses files without "format"
        _fsync_file(path)
    return write


def write_file_atomically(path: str, text: str) -> None:
    """Write a small text file: temp name in the same folder, fsync, rename over `path`, fsync the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, _tmp_name(os.path.basename(path), secrets.token_hex(4)))
    try:
        _text_writer(text)(tmp)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    fsync_dir(directory)


def _tmp_name(final: str, token: str) -> str:
    return f".{final}.{token}.tmp"


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _is_weight_file(name: str) -> bool:
    return name in (WEIGHTS_NAME, WEIGHTS_INDEX_NAME) or bool(_SHARD_RE.fullmatch(name))


# -- the journal: reading through, finishing and clearing an interrupted save ---------------------

def _read_journal(directory: str) -> Optional[dict]:
    path = os.path.join(directory, SAVE_JOURNAL)
    if not os.path.isfile(path):
        return None
    journal = read_json_object(path)  # always whole: it was written under a temp name, then renamed
    renames, remove = journal.get("renames"), journal.get("remove")
    ok = (isinstance(renames, list) and isinstance(remove, list)
          and all(isinstance(pair, list) and len(pair) == 2 for pair in renames)
          and all(isinstance(n, str) and os.path.basename(n) == n for n in sum(renames, []) + remove))
    if not ok:  # only file names of this folder, in the shape save_pretrained writes
        raise ValueError(f"{path} is not a save journal of mixtral_edu; remove it if you wrote it yourself.")
    return journal


def checkpoint_files(directory: str) -> Dict[str, str]:
    """{file name: path to read} for a load: the folder's files, as the last committed save left them.

    Temporary files of a save that never committed are ignored; if a committed save was
    cut short while renaming, its new files are read from their temporary names and the
    stale files it was about to remove are left out.
    """
    if not os.path.isdir(directory):
        return {}
    files = {n: os.path.join(directory, n) for n in os.listdir(directory)
             if n != SAVE_JOURNAL and not _TMP_RE.fullmatch(n)}
    journal = _read_journal(directory)
    if journal is not None:
        for name in journal["remove"]:
            files.pop(name, None)
        for name, tmp in journal["renames"]:
            if os.path.exists(os.path.join(directory, tmp)):
                files[name] = os.path.join(directory, tmp)
    return files


def _apply_journal(directory: str, journal: dict) -> None:
    """Step 4: rename every new file into place, remove stale ones, drop the journal. Idempotent."""
    for name, tmp in journal["renames"]:
        src = os.path.join(directory, tmp)
        if os.path.exists(src):
            os.replace(src, os.path.join(directory, name))
    fsync_dir(directory)
    for name in journal["remove"]:
        try:
            os.remove(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    os.remove(os.path.join(directory, SAVE_JOURNAL))
    fsync_dir(directory)


def finish_interrupted_save(directory: str) -> None:
    """Complete a committed save that was cut short, and delete temp files of uncommitted ones."""
    journal = _read_journal(directory)
    if journal is not None:
        _apply_journal(directory, journal)
    leftovers = [n for n in os.listdir(directory) if _TMP_RE.fullmatch(n)]
    for name in leftovers:
        _remove_quietly(os.path.join(directory, name))
    if leftovers:
        fsync_dir(directory)


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
        files[GENERATION_CONFIG_NAME] = _text_writer(model.generation_config.to_json_string())
    files[CONFIG_NAME] = _text_writer(json.dumps(config, indent=2) + "\n")
    files.update({name: _tensors_writer(shard) for name, shard in shards.items()})
    if index is not None:  # the index last: it is what points a sharded load at the shards
        files[WEIGHTS_INDEX_NAME] = _text_writer(json.dumps(index, indent=2, sort_keys=True) + "\n")

    if not os.path.isdir(directory):
        os.makedirs(directory)
        fsync_dir(os.path.dirname(os.path.abspath(directory)))
    finish_interrupted_save(directory)
    token = secrets.token_hex(4)
    renames = [[name, _tmp_name(name, token)] for name in files]
    stale = sorted(n for n in os.listdir(directory) if _is_weight_file(n) and n not in files)
    journal_tmp = os.path.join(directory, _tmp_name(SAVE_JOURNAL, token))
    committed = False
    try:
        for name, tmp in renames:                                         # step 2
            files[name](os.path.join(directory, tmp))
        fsync_dir(directory)
        _text_writer(json.dumps({"renames": renames, "remove": stale}))(journal_tmp)
        os.replace(journal_tmp, os.path.join(directory, SAVE_JOURNAL))   # step 3: the commit
        committed = True
        fsync_dir(directory)
    except BaseException as err:
        if not committed:  # the old checkpoint was never touched: just drop what was written
            for path in [os.path.join(directory, tmp) for _, tmp in renames] + [journal_tmp]:
                _remove_quietly(path)
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note(f"save_pretrained: {directory!r} " + (
                "already reads as the new checkpoint; the next save tidies it up." if committed else
                "was left as it was: the previous checkpoint in it still loads."))
        raise
    _apply_journal(directory, {"renames": renames, "remove": stale})     # step 4


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


def _fingerprint(files: Dict[str, str]) -> dict:
    """What identifies each file a load reads; it changes when a save replaces one."""
    out = {}
    for name, path in files.items():
        if name in (CONFIG_NAME, GENERATION_CONFIG_NAME) or _is_weight_file(name):
            st = os.stat(path)
            out[name] = (path, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def load_pretrained(cls, directory: str, torch_dtype=None, **config_overrides):
    """Build `cls` from directory/config.json and load its safetensors weights strictly."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"from_pretrained needs a folder path (str), got {type(directory).__name__}.")
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory!r} is not a directory. Pass the folder holding config.json "
                                "and model.safetensors (we load from disk only, never from a hub).")
    resolve_dtype(torch_dtype, {}, {})  # a bad torch_dtype fails before any file is read
    for attempt in range(5):  # a save running in another process may swap files while we read: read again
        files = checkpoint_files(directory)
        if CONFIG_NAME not in files:
            raise FileNotFoundError(f"No {CONFIG_NAME} in {directory!r}. Pass a model directory written by "
                                    "`save_pretrained` (ours or transformers').")
        try:
            before = _fingerprint(files)
            config_dict = read_json_object(files[CONFIG_NAME], os.path.join(directory, CONFIG_NAME))
            config = MixtralConfig.from_dict(config_dict, **config_overrides)
            tensors = read_safetensors(directory, files)
            generation_config = load_generation_config(
                files.get(GENERATION_CONFIG_NAME), config, os.path.join(directory, GENERATION_CONFIG_NAME))
            if _fingerprint(checkpoint_files(directory)) == before:
                break
        except FileNotFoundError:  # a file went away under us (renamed into place): read again
            if attempt == 4:
                raise
    else:
        raise RuntimeError(f"The files in {directory!r} kept changing while they were read (another process "
                           "saving there?). Load again once it is done.")
    config._name_or_path = directory
    # a bare MixtralModel saved by transformers has no "model." prefix; the causal LM needs it
    from .causal_lm import MixtralForCausalLM
    if cls is MixtralForCausalLM and not any(k.startswith("model.") for k in tensors):
        tensors = {f"model.{k}": v for k, v in tensors.items()}
    elif cls is not MixtralForCausalLM and all(k.startswith(("model.", "lm_head.")) for k in tensors):
        tensors = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model = cls(config)
    load_state_dict_strict(model, tensors)
    dtype = resolve_dtype(torch_dtype, config_dict, tensors)
    if dtype is not None:
        model = model.to(dtype)
    if isinstance(model, MixtralForCausalLM):
        model.generation_config = generation_config
    return model.eval()
