"""The files of a model folder, written so that a save never loses the checkpoint it replaces.

Atomic writes (temporary name in the same folder, fsync, rename, fsync the folder), the save
journal that commits a save, and what a load reads (`checkpoint_files`). The protocol itself
is described in `checkpoint`; this module knows files, not models, so `config`,
`generation_config` and `checkpoint` can all use it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from typing import Callable, Dict, Optional

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
SAVE_JOURNAL = ".mixtral_edu_save.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_TMP_RE = re.compile(r"\..+\.[0-9a-f]{8}\.tmp")


def read_json_object(path: str, shown_name: Optional[str] = None) -> dict:
    """The JSON object in `path`; a file that is not one raises ValueError naming the file and the spot."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    name = shown_name or path
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{name} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}. "
                         "Fix the file by hand, or write it again with save_pretrained.") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} must hold a JSON object {{...}}, got a {type(data).__name__}.")
    return data


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


def fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def bytes_writer(data: bytes) -> Callable[[str], None]:
    def write(path: str) -> None:
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return write


def text_writer(text: str) -> Callable[[str], None]:
    return bytes_writer(text.encode("utf-8"))


def write_bytes_atomically(path: str, data: bytes) -> None:
    """Write a file whole or not at all: temp name in the same folder, fsync, rename over `path`, fsync the folder."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, tmp_name(os.path.basename(path), secrets.token_hex(4)))
    try:
        bytes_writer(data)(tmp)
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
    fsync_dir(directory)


def write_file_atomically(path: str, text: str) -> None:
    """write_bytes_atomically for text (UTF-8)."""
    write_bytes_atomically(path, text.encode("utf-8"))


def tmp_name(final: str, token: str) -> str:
    return f".{final}.{token}.tmp"


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def is_weight_file(name: str) -> bool:
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


def apply_journal(directory: str, journal: dict) -> None:
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
        apply_journal(directory, journal)
    leftovers = [n for n in os.listdir(directory) if _TMP_RE.fullmatch(n)]
    for name in leftovers:
        remove_quietly(os.path.join(directory, name))
    if leftovers:
        fsync_dir(directory)
