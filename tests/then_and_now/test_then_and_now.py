"""mixtral_edu (transformers 4.41.2's rules) against transformers 5.23.0, run live in .venv-tf5.

One worker serves the whole module (its start-up, ~2-5 s, is paid once). Where the two
versions mean the same thing, logits agree within 1e-5 and greedy tokens are identical; where
they do not (a sliding window that binds), the difference sits exactly at the W / W + 1 boundary.
"""
from __future__ import annotations

import ast
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import mixtral_edu
from mixtral_edu.exercises.then_and_now import _update_cases, reference_sliding_layer_update
from mixtral_edu.modeling.checkpoint import CheckpointMismatchError, per_expert_to_fused
from mixtral_edu.modeling.masks import causal_visibility, prepare_4d_causal_attention_mask
from mixtral_edu.then_and_now import Tf5Bridge, Tf5EnvironmentMissing, Tf5WorkerError, bridge as bridge_module
from mixtral_edu.then_and_now.compare import (RANDOM_CONFIGS, cells_that_differ, first_position_over, gap_by_position,
                                              keep_routing_weights_fp32, random_ids, random_model,
                                              scale_scores_by_multiplying)
from mixtral_edu.tiny.pretrained import TINY_DIR, load_tiny

ATOL = 1e-5


@pytest.fixture(scope="module")
def tf5():
    with Tf5Bridge() as b:
        yield b


@pytest.fixture(scope="module")
def tiny():
    return load_tiny()


def padded_batch(vocab: int, batch: int = 3, length: int = 16, seed: int = 0):
    """(input_ids, attention_mask): row b starts with 2b pad tokens (pad id 0)."""
    ids = random_ids(batch, length, vocab, seed)
    mask = torch.ones(batch, length, dtype=torch.long)
    for b in range(batch):
        ids[b, :2 * b] = 0
        mask[b, :2 * b] = 0
    return ids, mask


def real(t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Rows of a (B, T, ...) tensor at the real (unpadded) positions: padded queries differ by design."""
    return t[mask.bool()]


# -- the environment and the worker -----------------------------------------------------------------

def test_missing_environment_names_the_command(tmp_path, monkeypatch):
    missing = tmp_path / ".venv-tf5" / "bin" / "python"
    with pytest.raises(Tf5EnvironmentMissing) as err:
        Tf5Bridge(python=missing)
    text = str(err.value)
    assert str(missing) in text and "bash scripts/setup.sh" in text
    assert "python3 -m venv .venv-tf5" in text and "requirements-tf5.txt" in text
    monkeypatch.setenv(bridge_module.PYTHON_ENV_VAR, str(missing))
    with pytest.raises(Tf5EnvironmentMissing):
        bridge_module.tf5_python()


def test_an_environment_without_523_is_refused_with_the_command(tmp_path):
    """The suite's own .venv (transformers 4.41.2), or an interpreter that dies at once, is refused."""
    import sys
    with pytest.raises(Tf5EnvironmentMissing) as err:
        Tf5Bridge(python=sys.executable).start()
    assert "has transformers 4.41.2" in str(err.value) and "bash scripts/setup.sh" in str(err.value)
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(Tf5EnvironmentMissing) as err:
        Tf5Bridge(python=broken).start()
    assert "No module named 'torch'" in str(err.value) and "exit code 1" in str(err.value)
    assert "bash scripts/setup.sh" in str(err.value)


def test_worker_imports_nothing_of_ours():
    tree = ast.parse(open(bridge_module.WORKER, encoding="utf-8").read())
    roots = {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots |= {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert "mixtral_edu" not in roots and "" not in roots  # no relative imports either
    assert roots <= {"__future__", "copy", "importlib", "inspect", "json", "os", "shutil", "sys", "time", "traceback",
                     "typing", "torch", "safetensors", "transformers"}, roots


def test_worker_runs_523_isolated_and_stays_one_process(tf5):
    hello = tf5.hello()
    assert hello["transformers"] == "5.23.0" and hello["torch"].startswith("2.13.0")
    assert hello["executable"].startswith(str(bridge_module.VENV))
    pid = tf5.pid
    with pytest.raises(Tf5WorkerError) as err:
        tf5.call("no_such_op")
    assert "unknown operation" in str(err.value)
    with pytest.raises(Tf5WorkerError):
        tf5.load("x", "/no/such/folder")
    assert tf5.pid == pid and tf5.hello()["pid"] == pid  # errors come back; the worker lives on


# -- the shipped tiny model ------------------------------------------------------------------------

def test_tiny_model_logits_and_greedy_generation(tf5, tiny):
    model, tok = tiny
    info = tf5.load("tiny", TINY_DIR)
    assert info["loading_info"] == {"missing_keys": [], "unexpected_keys": [], "mismatched_keys": [],
                                    "error_msgs": []}
    batch = tok(["12+34=", "the small cat", "name: ada ; age:"], return_tensors="pt", padding=True)
    ids, mask = batch.input_ids, batch.attention_mask
    assert ids.shape[1] < model.config.sliding_window  # the window does not bind here
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        ours_gen = model.generate(ids, attention_mask=mask, max_new_tokens=12)
    theirs = tf5.forward("tiny", ids, attention_mask=mask)
    torch.testing.assert_close(real(theirs["logits"], mask), real(ours.logits, mask), atol=ATOL, rtol=0)
    gen = tf5.generate("tiny", ids, attention_mask=mask, max_new_tokens=12)
    assert torch.equal(gen["sequences"], ours_gen)
    # eager attention on both sides (and 5.23's eager experts loop): 5.23 multiplies the scores by
    # D ** -0.5 where 4.41.2 divides by sqrt(D), a last-bit difference that reaches ~1e-5 on logits
    # of size ~24. Scaling ours 5.23's way (a hook; nothing else changes) makes them bit-identical.
    ours_eager, _ = load_tiny(attn_implementation="eager")
    tf5.load("tiny_eager", TINY_DIR, attn_implementation="eager", experts_implementation="eager")
    eager = real(tf5.forward("tiny_eager", ids, attention_mask=mask, use_cache=False)["logits"], mask)
    with torch.no_grad():
        want = real(ours_eager(ids, attention_mask=mask, use_cache=False).logits, mask)
        with mixtral_edu.hooks(ours_eager, scale_scores_by_multiplying()):
            rescaled = real(ours_eager(ids, attention_mask=mask, use_cache=False).logits, mask)
    assert 0 < (eager - want).abs().max() < 2e-5
    assert torch.equal(rescaled, eager)
    for handle in ("tiny", "tiny_eager"):
        tf5.unload(handle)


# -- random configs --------------------------------------------------------------------------------

AGREEING = [name for name in RANDOM_CONFIGS if name != "window_binds"]


@pytest.mark.parametrize("name", AGREEING)
def test_random_configs_agree(tf5, name, tmp_path):
    ours = random_model(name, seed=1)
    cfg = ours.config
    ours.save_pretrained(tmp_path)
    ids, mask = padded_batch(cfg.vocab_size)
    with torch.no_grad():
        out = ours(ids, attention_mask=mask, output_router_logits=True)
        ours_gen = ours.generate(ids, attention_mask=mask, max_new_tokens=10)
    assert cfg.sliding_window is None or ours_gen.shape[1] <= cfg.sliding_window
    for attn in ("eager", "sdpa"):
        info = tf5.load(name, tmp_path, attn_implementation=attn)
        assert not any(info["loading_info"].values()), info["loading_info"]
        theirs = tf5.forward(name, ids, attention_mask=mask, output_router_logits=True)
        torch.testing.assert_close(real(theirs["logits"], mask), real(out.logits, mask), atol=ATOL, rtol=0)
        flat = mask.reshape(-1).bool()  # router logits are (N, E): every token, padded or not
        for ours_l, theirs_l in zip(out.router_logits, theirs["router_logits"], strict=True):
            torch.testing.assert_close(theirs_l[flat], ours_l[flat], atol=ATOL, rtol=0)
        torch.testing.assert_close(theirs["aux_loss"], out.aux_loss, atol=1e-6, rtol=0)
        gen = tf5.generate(name, ids, attention_mask=mask, max_new_tokens=10)
        assert torch.equal(gen["sequences"], ours_gen), attn
    tf5.unload(name)


def test_window_that_binds_differs_exactly_at_the_boundary(tf5, tmp_path):
    ours = random_model("window_binds", seed=2)
    w = ours.config.sliding_window
    ours.save_pretrained(tmp_path)
    ids = random_ids(2, 16, ours.config.vocab_size, seed=3)
    with torch.no_grad():
        logits = ours(ids).logits
    for attn in ("eager", "sdpa"):
        tf5.load("wb", tmp_path, attn_implementation=attn)
        gaps = gap_by_position(logits, tf5.forward("wb", ids)["logits"])
        assert gaps[:w].max() <= ATOL, gaps           # positions 0..W-1: no query reaches W keys back
        assert first_position_over(gaps, ATOL) == w   # query W is the first with a key W back
        assert gaps[w] > 1e-3                          # and the difference there is real, not noise
    # 5.23 told sliding_window = W + 1 keeps W + 1 keys, 4.41.2's count: equal everywhere
    tf5.load("wb1", tmp_path, attn_implementation="eager", config_overrides={"sliding_window": w + 1})
    torch.testing.assert_close(tf5.forward("wb1", ids)["logits"], logits, atol=ATOL, rtol=0)

    # the masks: the cells that differ are exactly key = query - W, seen by 4.41.2 only
    t = ids.shape[1]
    built = tf5.mask("wb", 1, t, 0, attn_implementation="eager")
    assert built["builder"] == "create_sliding_window_causal_mask"
    new = built["visible"][0, 0]
    ours_mask = prepare_4d_causal_attention_mask(None, (1, t), torch.zeros(1, t, 1), 0, w)[0, 0]
    old = ours_mask == 0
    cells = cells_that_differ(old, new)
    assert cells == [(i, i - w) for i in range(w, t)]
    assert all(old[i, j] and not new[i, j] for i, j in cells)
    # a decode step after P cached tokens: one column differs, and 5.23 no longer even holds that key
    p = 3 * w
    step = tf5.mask("wb", 1, 1, p, attn_implementation="eager")
    assert (step["kv_length"], step["kv_offset"]) == (w, p - w + 1)
    new_abs = torch.zeros(p + 1, dtype=torch.bool)
    new_abs[step["kv_offset"]:step["kv_offset"] + step["kv_length"]] = step["visible"][0, 0, 0]
    old_abs = causal_visibility(1, p, w)[0]
    assert (old_abs != new_abs).nonzero().flatten().tolist() == [p - w]
    assert int(old_abs.sum()) == w + 1 and int(new_abs.sum()) == w
    # the sliding cache layer stops growing at W - 1 keys
    gen = tf5.generate("wb", ids[:1, :w - 2], max_new_tokens=6, min_new_tokens=6)
    stored = [call["cache"]["layers"][0]["keys_shape"][2] for call in gen["calls"]]
    assert stored == [min(n, w - 1) for n in range(w - 2, w - 2 + len(stored))] and stored[-1] == w - 1
    assert {layer["class"] for layer in gen["cache"]["layers"]} == {"DynamicSlidingWindowLayer"}
    for handle in ("wb", "wb1"):
        tf5.unload(handle)


# -- checkpoints both ways, strict ----------------------------------------------------------------------

def test_checkpoints_round_trip_both_ways(tf5, tmp_path):
    ours = random_model("gqa", seed=4)
    ids, mask = padded_batch(ours.config.vocab_size, seed=5)
    with torch.no_grad():
        want = ours(ids, attention_mask=mask).logits
    ours.save_pretrained(tmp_path / "ours")
    info = tf5.load("rt", tmp_path / "ours", attn_implementation="eager")
    assert not any(info["loading_info"].values())
    assert info["parameters"]["model.layers.0.mlp.experts.gate_up_proj"] == [4, 96, 32]   # (E, 2I, C)
    assert info["parameters"]["model.layers.0.mlp.experts.down_proj"] == [4, 32, 48]      # (E, C, I)
    # the conversion 5.23 did at load time is ours, tensor for tensor
    fused = per_expert_to_fused(ours.state_dict())
    names = [n for n in fused if ".mlp." in n]
    theirs_state = tf5.state("rt", names)
    assert all(torch.equal(theirs_state[n], fused[n]) for n in names)

    # 5.23's save_pretrained writes the per-expert layout back; we load it strictly
    written = tf5.save("rt", tmp_path / "theirs")
    assert "model.safetensors" in written["files"]
    with safe_open(str(tmp_path / "theirs" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert keys == set(ours.state_dict())
    back = mixtral_edu.MixtralForCausalLM.from_pretrained(str(tmp_path / "theirs"))
    with torch.no_grad():
        torch.testing.assert_close(real(back(ids, attention_mask=mask).logits, mask), real(want, mask),
                                   atol=ATOL, rtol=0)
    config = json.loads((tmp_path / "theirs" / "config.json").read_text())
    assert config["transformers_version"] == "5.23.0" and "rope_parameters" in config

    # a folder holding 5.23's own fused names: both load it, strictly, with equal logits
    fused_dir = tmp_path / "fused"
    fused_dir.mkdir()
    (fused_dir / "config.json").write_text((tmp_path / "ours" / "config.json").read_text())
    save_file({k: v.contiguous() for k, v in fused.items()}, str(fused_dir / "model.safetensors"))
    from_fused = mixtral_edu.MixtralForCausalLM.from_pretrained(str(fused_dir))
    with torch.no_grad():
        torch.testing.assert_close(real(from_fused(ids, attention_mask=mask).logits, mask), real(want, mask),
                                   atol=ATOL, rtol=0)
    info = tf5.load("fused", fused_dir, attn_implementation="eager")
    assert not any(info["loading_info"].values())
    torch.testing.assert_close(real(tf5.forward("fused", ids, attention_mask=mask)["logits"], mask),
                               real(want, mask), atol=ATOL, rtol=0)
    # strict: a fused folder missing one layer's down_proj is refused, naming what is missing
    broken = dict(fused)
    del broken["model.layers.1.mlp.experts.down_proj"]
    save_file({k: v.contiguous() for k, v in broken.items()}, str(fused_dir / "model.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"layers\.1\.block_sparse_moe\.experts\.0\.w2"):
        mixtral_edu.MixtralForCausalLM.from_pretrained(str(fused_dir))
    for handle in ("rt", "fused"):
        tf5.unload(handle)


# -- the changes that move numbers -------------------------------------------------------------------------

def test_bfloat16_routing_cast_is_the_whole_difference(tf5, tiny):
    model, tok = tiny
    batch = tok(["12+34=", "the small cat"], return_tensors="pt", padding=True)
    ids, mask = batch.input_ids, batch.attention_mask
    m16 = mixtral_edu.MixtralForCausalLM.from_pretrained(TINY_DIR, torch_dtype=torch.bfloat16,
                                                         attn_implementation="eager")
    tf5.load("t16", TINY_DIR, dtype="bfloat16", attn_implementation="eager", experts_implementation="eager")
    theirs = tf5.forward("t16", ids, attention_mask=mask)["logits"]
    assert theirs.dtype == torch.bfloat16  # 5.23 returns the model dtype; 4.41.2 upcasts in forward
    with torch.no_grad():
        cast = m16(ids, attention_mask=mask).logits
        with mixtral_edu.hooks(m16, keep_routing_weights_fp32()):
            uncast = m16(ids, attention_mask=mask).logits
    assert cast.dtype == torch.float32
    assert (real(cast, mask) - real(theirs.float(), mask)).abs().max() > 1e-2   # the cast moves bf16 logits
    assert torch.equal(real(uncast, mask), real(theirs.float(), mask))           # and is all that differs
    tf5.unload("t16")


def test_load_balancing_loss_is_the_same_value(tf5, tiny):
    model, tok = tiny
    batch = tok(["12+34=", "the small cat sees"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(batch.input_ids, attention_mask=batch.attention_mask, output_router_logits=True)
    e, k = model.config.num_local_experts, model.config.num_experts_per_tok
    for n in range(1, len(out.router_logits) + 1):  # layer by layer: every prefix of the layers
        for am in (None, batch.attention_mask):
            ours = mixtral_edu.modeling.moe.load_balancing_loss_func(out.router_logits[:n], e, k, am)
            torch.testing.assert_close(tf5.aux_loss(out.router_logits[:n], e, k, am), ours, atol=1e-6, rtol=0)


def test_exercise_reference_is_523s_sliding_layer(tf5):
    g = torch.Generator().manual_seed(0)
    for _, w, steps in _update_cases():
        updates = [(torch.randn(2, 2, t, 3, generator=g), torch.randn(2, 2, t, 3, generator=g)) for t in steps]
        theirs = tf5.sliding_layer(w, updates)
        keep_k = keep_v = torch.zeros(2, 2, 0, 3)
        for (k, v), step in zip(updates, theirs):
            keep_k, keep_v, attend_k, attend_v = reference_sliding_layer_update(keep_k, keep_v, k, v, w)
            for name, mine in (("keep_k", keep_k), ("keep_v", keep_v), ("attend_k", attend_k), ("attend_v", attend_v)):
                assert torch.equal(mine, step[name]), (w, name)


def test_close_ends_the_worker_and_removes_its_files(tf5):
    pid, folder = tf5.pid, tf5._dir
    assert os.path.isdir(folder)
    tf5.close()
    assert not tf5.alive and not os.path.exists(f"/proc/{pid}") and not os.path.exists(folder)
    tf5.close()  # twice is fine


def test_worker_exits_when_its_parent_is_killed(tmp_path):
    """No orphans: a parent killed with SIGKILL closes the worker's stdin, and the worker leaves."""
    import signal
    import subprocess
    import sys
    import time
    script = ("import os, signal, sys\n"
              "from mixtral_edu.then_and_now import Tf5Bridge\n"
              "b = Tf5Bridge().start()\n"
              "print(b.pid, b._dir, flush=True)\n"
              "os.kill(os.getpid(), signal.SIGKILL)\n")
    parent = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(bridge_module.REPO)})
    assert parent.returncode == -signal.SIGKILL, parent.stderr
    pid, folder = parent.stdout.split()
    deadline = time.monotonic() + 30
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(f"/proc/{pid}") and not os.path.exists(folder)
