"""Nothing lost: save_pretrained under injected faults, and the checkpoint details transformers gets right.

The faults run in a subprocess (tests/checkpoint_faults.py), inside a private mount namespace
when one can be made (for the full-disk tmpfs). Each fault hits a save of NEW over a complete
save of OLD; the folder must then load as OLD or NEW with exactly that model's config,
generation config and logits. CI runs a sample of the crash points;
MIXTRAL_EDU_FAULTS=full runs every one of them.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest
import torch
import transformers
from safetensors import safe_open

import mixtral_edu
from mixtral_edu.modeling import checkpoint as ckpt

from pairs import make_pair, random_ids

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
IDS = random_ids(2, 6, seed=40)


def _logits(model, ids=IDS):
    with torch.no_grad():
        return model(ids).logits


def _namespace_prefix():
    """unshare in front of the child, so it may mount a tmpfs of its own; [] when that is impossible."""
    if shutil.which("unshare") is None:
        return []
    prefix = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix.insert(1, "--map-root-user")
    ok = subprocess.run(prefix + ["true"], capture_output=True).returncode == 0
    return prefix if ok else []


@pytest.fixture(scope="module")
def fault_report():
    # tmpfs when there is one: a process death leaves the page cache as it was, so fsync has nothing
    # to add there, and the many small saves stay fast
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    work = tempfile.mkdtemp(prefix="mixtral_edu_faults_", dir=base)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(HERE, "checkpoint_faults.py"), "kills,fsize,disk,errors,readers", work]
    try:
        proc = subprocess.run(_namespace_prefix() + cmd, env=env, capture_output=True, text=True, timeout=900)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    faults = sum(report[m]["faults"] for m in ("kills", "fsize", "disk", "errors"))
    lost = sum(report[m]["lost"] for m in ("kills", "fsize", "disk", "errors", "readers"))
    print(f"\ncheckpoint faults injected: {faults}, checkpoints lost: {lost}; "
          + json.dumps({m: {k: v for k, v in report[m].items() if k != "notes"} for m in report if m != "budget"}))
    return report


def test_sigkill_during_single_file_and_sharded_saves_loses_nothing(fault_report):
    kills = fault_report["kills"]
    assert kills["crash_points"] + kills["random_kills"] >= 50
    assert kills["lost"] == 0, kills["notes"]
    assert kills["outcomes"].get("old", 0) > 0 and kills["outcomes"].get("new", 0) > 0  # both sides of the commit


def test_file_size_limit_loses_nothing(fault_report):
    r = fault_report["fsize"]
    assert r["fsize_faults"] > 0
    assert r["lost"] == 0, r["notes"]


def test_full_disk_loses_nothing(fault_report):
    r = fault_report["disk"]
    if r["disk_full"] == "tmpfs":
        assert r["disk_full_faults"] > 0
    else:  # no mount namespace on this machine: the file-size limit above stands in for a full disk
        print("full disk:", r["disk_full"])
    assert r["lost"] == 0, r["notes"]


def test_exceptions_and_refused_saves_lose_nothing(fault_report):
    r = fault_report["errors"]
    assert r["exceptions_raised"] > 0 and r["refused_saves"] == 5
    assert r["lost"] == 0, r["notes"]


def test_a_reader_in_another_process_sees_old_or_new(fault_report):
    r = fault_report["readers"]
    assert r["saves_meanwhile"] > 10 and sum(r["reads"].values()) > 5
    assert r["lost"] == 0, r["notes"]


# -- what a save writes --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pair():
    return make_pair(seed=11)


def test_single_file_over_sharded_removes_the_stale_shards_and_keeps_user_files(pair, tmp_path):
    ours, _ = pair
    d = tmp_path / "m"
    ours.save_pretrained(str(d), max_shard_size="20KB")
    assert len([n for n in os.listdir(d) if n.startswith("model-")]) > 5
    (d / "notes.txt").write_text("mine")
    (d / "tokenizer.json").write_text("{}")
    ours.save_pretrained(str(d))
    assert sorted(os.listdir(d)) == ["config.json", "generation_config.json", "model.safetensors", "notes.txt",
                                     "tokenizer.json"]
    ours.save_pretrained(str(d), max_shard_size="40KB")   # and back: the single file goes
    assert "model.safetensors" not in os.listdir(d) and "notes.txt" in os.listdir(d)
    assert torch.equal(_logits(mixtral_edu.MixtralForCausalLM.from_pretrained(str(d))), _logits(ours))


def test_failed_save_keeps_the_old_checkpoint_in_process(pair, tmp_path, monkeypatch):
    ours, _ = pair
    d = str(tmp_path)
    ours.save_pretrained(d)
    before = sorted(os.listdir(d))
    with pytest.raises(ValueError, match="5 megabytes"):
        ours.save_pretrained(d, max_shard_size="5 megabytes")

    def half_then_fail(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"\0" * 100)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ckpt, "save_file", half_then_fail)
    with pytest.raises(OSError) as info:
        ours.save_pretrained(d, max_shard_size="30KB")
    assert "previous checkpoint" in "".join(getattr(info.value, "__notes__", ["previous checkpoint"]))
    assert sorted(os.listdir(d)) == before                           # no temp file left behind
    assert torch.equal(_logits(mixtral_edu.MixtralForCausalLM.from_pretrained(d)), _logits(ours))


def test_tied_weights_save_as_transformers_and_hand_tied_ones_are_refused(tmp_path):
    ours, theirs = make_pair(seed=12, tie_word_embeddings=True)
    ours.save_pretrained(str(tmp_path / "ours"))
    theirs.save_pretrained(str(tmp_path / "theirs"), safe_serialization=True)
    for name in ("ours", "theirs"):
        with safe_open(str(tmp_path / name / "model.safetensors"), framework="pt") as f:
            assert "lm_head.weight" not in f.keys() and "model.embed_tokens.weight" in f.keys()
    by_hand, _ = make_pair(seed=13)
    by_hand.save_pretrained(str(tmp_path / "hand"))
    by_hand.lm_head.weight = by_hand.model.embed_tokens.weight
    with pytest.raises(ckpt.SharedTensorsError, match="tie_word_embeddings"):
        by_hand.save_pretrained(str(tmp_path / "hand"))
    by_hand.config.tie_word_embeddings = True                          # the fix the message names
    by_hand.save_pretrained(str(tmp_path / "hand"))
    back = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "hand"))
    assert back.lm_head.weight is back.model.embed_tokens.weight
    assert torch.equal(_logits(back), _logits(by_hand))


def test_config_json_records_the_real_dtype_and_auto_reads_it(pair, tmp_path):
    ours, theirs = pair
    bf16 = mixtral_edu.MixtralForCausalLM(ours.config).to(torch.bfloat16)
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in ours.state_dict().items()})
    bf16.save_pretrained(str(tmp_path / "ours"))
    theirs.to(torch.bfloat16).save_pretrained(str(tmp_path / "theirs"), safe_serialization=True)
    theirs.to(torch.float32)
    for name in ("ours", "theirs"):
        with open(tmp_path / name / "config.json") as f:
            assert json.load(f)["torch_dtype"] == "bfloat16", name
    for dtype in ("auto", "bfloat16", "torch.bfloat16", torch.bfloat16):
        loaded = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "ours"), torch_dtype=dtype)
        assert loaded.dtype == torch.bfloat16, dtype
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "ours"), torch_dtype="auto")
    assert hf.dtype == torch.bfloat16
    assert mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "ours")).dtype == torch.float32
    with pytest.raises(ValueError, match="torch_dtype"):
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "ours"), torch_dtype="float33")


def test_loaded_model_knows_its_folder_like_transformers(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(str(tmp_path))
    back = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path))
    assert back.name_or_path == back.config._name_or_path == hf.name_or_path == hf.config._name_or_path == str(tmp_path)
    assert ours.name_or_path == ""
    assert back.config == ours.config                                  # the path is not a hyper-parameter


def test_invalid_config_json_names_the_file(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"vocab_size": 97,, }')
    with pytest.raises(ValueError) as info:
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path))
    assert str(tmp_path / "config.json") in str(info.value) and "line 1" in str(info.value)
