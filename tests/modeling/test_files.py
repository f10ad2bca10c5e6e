"""modeling/files.write_bytes_atomically: the one writer behind the tokenizer files, training.json, the model
card, exported figures, catalogs and notebook timings. A write that fails or is killed leaves the old file."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mixtral_edu.modeling import files
from mixtral_edu.modeling.files import write_bytes_atomically, write_file_atomically

ROOT = Path(__file__).resolve().parents[2]
OLD, NEW = b"old contents\n" * 1000, b"new contents\n" * 5000


def test_a_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(OLD)
    write_bytes_atomically(str(path), NEW)
    assert path.read_bytes() == NEW
    write_file_atomically(str(path), "文字\n")
    assert path.read_text(encoding="utf-8") == "文字\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]      # no temporary file left


@pytest.mark.parametrize("fail_at", ["write", "fsync", "replace"])
def test_a_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "f.json"
    path.write_bytes(OLD)

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device (injected)")
    if fail_at == "write":
        monkeypatch.setattr(files, "bytes_writer", lambda data: boom)
    else:
        monkeypatch.setattr(files.os, fail_at, boom)
    with pytest.raises(OSError, match="injected"):
        write_bytes_atomically(str(path), NEW)
    monkeypatch.undo()
    assert path.read_bytes() == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.json"]


CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from mixtral_edu.modeling import files
def killed(fd):                       # the data is written, not yet durable nor renamed: die here
    os.kill(os.getpid(), signal.SIGKILL)
files.os.fsync = killed
files.write_bytes_atomically({path!r}, b"new contents\\n" * 5000)
"""


def test_a_write_killed_midway_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.json"
    path.write_bytes(OLD)
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(path))],
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == OLD
    # what the killed write left is a temporary name, which a load never reads
    left = [p.name for p in tmp_path.iterdir() if p.name != "f.json"]
    assert all(name.startswith(".f.json.") and name.endswith(".tmp") for name in left), left
    write_bytes_atomically(str(path), NEW)                                 # the next write just works
    assert path.read_bytes() == NEW


def test_tokenizer_files_are_written_through_it(tmp_path, monkeypatch):
    from mixtral_edu.tiny import tokenizer as tok_mod
    tok = tok_mod.train_tokenizer(["12+34=46", "the cat sat ."] * 20, vocab_size=300)
    tok_mod.save_tokenizer(tok, str(tmp_path))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device (injected)")
    monkeypatch.setattr(files.os, "replace", boom)
    with pytest.raises(OSError, match="injected"):
        tok_mod.save_tokenizer(tok_mod.train_tokenizer(["other text entirely"] * 20, vocab_size=280), str(tmp_path))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
