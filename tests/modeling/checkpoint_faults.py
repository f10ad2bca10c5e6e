"""Fault injection for save_pretrained, run as a subprocess by test_checkpoint_faults.py.

    python tests/checkpoint_faults.py MODES WORKDIR    (MODES: comma-separated of kills, fsize, disk, errors)

Every fault hits a save of the NEW model into a folder that holds a complete save of the
OLD one (plus a file of the user's). Afterwards the folder must load as OLD or as NEW:
same config, same generation config and the very same logits as a clean save of that
model; anything else counts as a lost checkpoint. Prints one JSON line of counts.

kills  : SIGKILL before each file-system step of a save (every crash point, found by
         counting), then at random moments during saves that follow each other without a
         clean-up in between; single-file and sharded saves, in every combination.
fsize  : RLIMIT_FSIZE below the size of the files to write (SIGXFSZ ignored: the write fails
         with EFBIG; and SIGXFSZ left on: the process dies mid-write).
disk   : a full disk: a small tmpfs mounted in a private mount namespace (run under unshare).
errors : an exception raised at each step, and the save's own refusals (bad max_shard_size,
         weights tied by hand).
readers: not a fault: another process loads again and again while saves run; each load must
         be OLD or NEW (a load that sees files change under it reads again).
"""
from __future__ import annotations

import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time

import torch

torch.set_num_threads(1)

import mixtral_edu  # noqa: E402
from mixtral_edu.modeling import checkpoint as ckpt  # noqa: E402

SMALL = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64,
             initializer_range=0.2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
IDS = torch.tensor([[5, 17, 33, 8, 61, 2, 40], [9, 9, 12, 70, 3, 44, 1]])
USER_FILE, USER_TEXT = "notes.txt", "the user's own file: a save must leave it alone\n"
# (old save's max_shard_size, new save's): single file and shards both ways, the same shard names, other ones
FORMATS = [(None, None), (None, "30KB"), ("30KB", None), ("30KB", "30KB"), ("30KB", "60KB")]


def make_models():
    """OLD and NEW differ in weights, in config.json (rope_theta) and in generation_config.json, so a
    folder that mixed their files would match neither."""
    torch.manual_seed(1)
    old = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**SMALL, rope_theta=1e4)).eval()
    torch.manual_seed(2)
    new = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**SMALL, rope_theta=5e5)).eval()
    new.generation_config.max_new_tokens = 7
    return {"old": old, "new": new}


def signature(folder):
    """(config dict, generation config dict, logits) of what loads from folder."""
    m = mixtral_edu.MixtralForCausalLM.from_pretrained(folder)
    with torch.no_grad():
        logits = m(IDS).logits
    return m.config.to_dict(), m.generation_config.to_dict(), logits


def references(models, work):
    refs = {}
    for name, model in models.items():
        d = os.path.join(work, "ref-" + name)
        model.save_pretrained(d)
        refs[name] = signature(d)
    return refs


def verify(folder, refs, allowed):
    """Which of `allowed` the folder loads as, or 'lost: why'."""
    try:
        with open(os.path.join(folder, USER_FILE)) as f:
            if f.read() != USER_TEXT:
                return "lost: the user's file changed"
        cfg, gen, logits = signature(folder)
    except Exception as err:  # noqa: BLE001 - any failure to load is a lost checkpoint
        return f"lost: {type(err).__name__}: {err}"[:300]
    for name in allowed:
        rc, rg, rl = refs[name]
        if cfg == rc and gen == rg and torch.equal(logits, rl):
            return name
    return "lost: loads, but as neither " + " nor ".join(allowed)


def fresh(folder, model, shard):
    """A folder holding one clean save of `model` and the user's file."""
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, max_shard_size=shard)
    with open(os.path.join(folder, USER_FILE), "w") as f:
        f.write(USER_TEXT)


def expected_listing(shard, n_shards):
    names = {"config.json", "generation_config.json", USER_FILE}
    if shard is None:
        return names | {"model.safetensors"}
    return names | {"model.safetensors.index.json"} | {
        f"model-{i:05d}-of-{n_shards:05d}.safetensors" for i in range(1, n_shards + 1)}


class Counts:
    def __init__(self):
        self.faults, self.lost, self.outcomes, self.notes = 0, 0, {}, []

    def add(self, outcome, what):
        self.faults += 1
        self.outcomes[outcome.split(":")[0]] = self.outcomes.get(outcome.split(":")[0], 0) + 1
        if outcome.startswith("lost"):
            self.lost += 1
            self.notes.append(f"{what}: {outcome}")


# -- SIGKILL ---------------------------------------------------------------------------------------

FS_STEPS = ("replace", "remove", "fsync")  # os.* functions a save calls; plus checkpoint.save_file


class Armed:
    """Patch the file-system steps of a save: run `action()` just before step `at` (counting from 0).

    Used as a context manager in this process (the patches come off again), or left on in a forked child.
    """

    def __init__(self, at=-1, action=None):
        self.at, self.action, self.seen, self.saved = at, action, 0, {}

    def __enter__(self):
        def wrap(fn):
            def step(*args, **kwargs):
                if self.seen == self.at:
                    self.action()
                self.seen += 1
                return fn(*args, **kwargs)
            return step
        self.saved = {name: getattr(os, name) for name in FS_STEPS}
        self.saved["save_file"] = ckpt.save_file
        for name in FS_STEPS:
            setattr(os, name, wrap(self.saved[name]))
        ckpt.save_file = wrap(self.saved["save_file"])
        return self

    def __exit__(self, *exc):
        for name in FS_STEPS:
            setattr(os, name, self.saved[name])
        ckpt.save_file = self.saved["save_file"]


def count_steps(models, folder, old_shard, new_shard):
    fresh(folder, models["old"], old_shard)
    with Armed() as armed:
        models["new"].save_pretrained(folder, max_shard_size=new_shard)
    return armed.seen


def sample(total, budget):
    """All step indices 0..total-1, or `budget` of them spread evenly (first and last included)."""
    if budget is None or budget >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (budget - 1)) for i in range(budget)})


def in_child(body):
    """Fork; the child runs body() and exits 0 (3 on an exception). Returns the wait status."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            body()
        except BaseException:  # noqa: BLE001 - the parent reads the exit code
            code = 3
        os._exit(code)
    return os.waitpid(pid, 0)[1]


def kills(models, refs, work, counts, budget):
    folder = os.path.join(work, "ckpt")
    crash_points = 0
    for old_shard, new_shard in FORMATS:
        total = count_steps(models, folder, old_shard, new_shard)
        for k in sample(total, None if budget is None else budget["points"]):
            fresh(folder, models["old"], old_shard)
            status = in_child(lambda: (Armed(k, lambda: os.kill(os.getpid(), signal.SIGKILL)).__enter__(),
                                       models["new"].save_pretrained(folder, max_shard_size=new_shard)))
            assert os.WIFSIGNALED(status), f"the save ran to its end without reaching step {k} of {total}"
            crash_points += 1
            counts.add(verify(folder, refs, ("old", "new")), f"SIGKILL at step {k}, {old_shard}->{new_shard}")
            # the next save finishes or clears what was left: the folder is then exactly the new save
            models["new"].save_pretrained(folder, max_shard_size=new_shard)
            n = len([x for x in os.listdir(folder) if x.startswith("model-")])
            if set(os.listdir(folder)) != expected_listing(new_shard, n):
                counts.notes.append(f"after the kill at step {k} ({old_shard}->{new_shard}), the next save left "
                                    f"{sorted(os.listdir(folder))}")
                counts.lost += 1
    # random moments, one save after another: each kill lands on whatever the last one left
    rng = random.Random(0)
    fresh(folder, models["old"], None)
    t0 = time.perf_counter()
    for _ in range(3):
        models["old"].save_pretrained(folder)
    duration = (time.perf_counter() - t0) / 3
    state, timed, landed = "old", 0, 0
    while landed < (60 if budget is None else budget["random"]) and timed < 200:
        target = rng.choice(("old", "new"))
        shard = rng.choice((None, "30KB", "60KB"))
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, b"1")
            models[target].save_pretrained(folder, max_shard_size=shard)
            os._exit(0)
        os.close(w)
        os.read(r, 1)  # the child is about to save
        os.close(r)
        time.sleep(rng.uniform(0, 1.3 * duration))
        os.kill(pid, signal.SIGKILL)
        status = os.waitpid(pid, 0)[1]
        timed += 1
        outcome = verify(folder, refs, tuple({state, target}))
        if os.WIFSIGNALED(status):
            landed += 1
            counts.add(outcome, f"random SIGKILL {timed} ({state}->{target}, {shard})")
        elif outcome.startswith("lost"):
            counts.lost += 1
            counts.notes.append(f"a finished save ({target}) did not load: {outcome}")
        state = outcome if not outcome.startswith("lost") else state
    return {"crash_points": crash_points, "random_kills": landed, "random_saves_finished_first": timed - landed,
            "save_ms": round(duration * 1e3, 2)}


# -- file size limit and full disk ------------------------------------------------------------------------

def fsize(models, refs, work, counts, budget):
    folder = os.path.join(work, "ckpt")
    runs = 0
    for old_shard, new_shard in FORMATS if budget is None else FORMATS[1:4]:
        for limit in (2_000, 20_000, 100_000) if budget is None else (2_000, 100_000):
            for ignore in (True, False):
                fresh(folder, models["old"], old_shard)

                def body():
                    if ignore:
                        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead
                    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
                    models["new"].save_pretrained(folder, max_shard_size=new_shard)
                status = in_child(body)
                if os.WIFSIGNALED(status) or os.WEXITSTATUS(status) != 0:
                    runs += 1
                    counts.add(verify(folder, refs, ("old", "new")),
                               f"RLIMIT_FSIZE {limit} ({'EFBIG' if ignore else 'SIGXFSZ'}), {old_shard}->{new_shard}")
    return {"fsize_faults": runs}


def can_mount(work):
    mnt = os.path.join(work, "probe")
    os.makedirs(mnt, exist_ok=True)
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", mnt], check=True)
    return ok


def disk(models, refs, work, counts, budget):
    """Inside a private mount namespace: a tmpfs just too small for the new save (else: say so)."""
    if not can_mount(work):
        return {"disk_full_faults": 0, "disk_full": "no tmpfs could be mounted here; RLIMIT_FSIZE stands in"}
    mnt = os.path.join(work, "tmpfs")
    os.makedirs(mnt, exist_ok=True)
    runs = 0
    for old_shard, new_shard in FORMATS:
        sizes = []
        for kb in range(100, 520, 28 if budget is None else 84):  # from about the old save alone up to room for both
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kb}k", "tmpfs", mnt], check=True)
            try:
                folder = os.path.join(mnt, "ckpt")
                try:
                    fresh(folder, models["old"], old_shard)
                except Exception as err:  # noqa: BLE001
                    if "No space left" not in str(err):
                        raise
                    continue  # not even the old save fits: no fault to inject at this size
                try:
                    models["new"].save_pretrained(folder, max_shard_size=new_shard)
                    continue  # it all fit
                except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for ENOSPC
                    if "No space left" not in str(err):
                        raise
                runs += 1
                sizes.append(kb)
                counts.add(verify(folder, refs, ("old", "new")), f"ENOSPC at {kb} KiB, {old_shard}->{new_shard}")
                left = [n for n in os.listdir(folder) if n.endswith(".tmp")]
                if left:
                    counts.notes.append(f"ENOSPC at {kb} KiB left temp files {left}")
            finally:
                subprocess.run(["umount", mnt], check=True)
    return {"disk_full_faults": runs, "disk_full": "tmpfs"}


# -- exceptions --------------------------------------------------------------------------------------------

def errors(models, refs, work, counts, budget):
    folder = os.path.join(work, "ckpt")
    raised = 0

    def boom():
        raise OSError(5, "injected I/O error")
    for old_shard, new_shard in FORMATS:
        total = count_steps(models, folder, old_shard, new_shard)
        for k in sample(total, None if budget is None else budget["points"]):
            fresh(folder, models["old"], old_shard)
            try:
                with Armed(k, boom):
                    models["new"].save_pretrained(folder, max_shard_size=new_shard)
                counts.notes.append(f"no error raised at step {k} of {total}")
                counts.lost += 1
            except OSError:
                raised += 1
                counts.add(verify(folder, refs, ("old", "new")), f"OSError at step {k}, {old_shard}->{new_shard}")
    refused = 0
    tied = mixtral_edu.MixtralForCausalLM(mixtral_edu.MixtralConfig(**SMALL)).eval()
    tied.lm_head.weight = tied.model.embed_tokens.weight  # tied by hand; config.tie_word_embeddings is False
    for shard, model, error in (("5 megabytes", models["new"], ValueError), (0, models["new"], ValueError),
                                (True, models["new"], TypeError), (None, tied, RuntimeError),
                                ("30KB", tied, RuntimeError)):
        fresh(folder, models["old"], "30KB")
        try:
            model.save_pretrained(folder, max_shard_size=shard)
            counts.notes.append(f"save with max_shard_size={shard!r} did not raise")
            counts.lost += 1
        except error:
            refused += 1
            counts.add(verify(folder, refs, ("old",)), f"refused save ({shard!r})")
    return {"exceptions_raised": raised, "refused_saves": refused}


# -- a reader in another process while saves run -------------------------------------------------------

def readers(models, refs, work, counts, budget):
    """Loads in a forked reader while this process saves OLD and NEW in turn (both formats): every load
    must be one of them. Not a fault; counted apart as reads."""
    folder = os.path.join(work, "ckpt")
    fresh(folder, models["old"], None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        results = {}
        deadline = time.perf_counter() + (1.0 if budget is not None else 6.0)
        while time.perf_counter() < deadline:
            outcome = verify(folder, refs, ("old", "new"))
            key = "lost" if outcome.startswith("lost") else outcome
            results[key] = results.get(key, 0) + 1
            if key == "lost":
                results.setdefault("why", []).append(outcome[:200])
        os.write(w, json.dumps(results).encode())
        os._exit(0)
    os.close(w)
    saves, rng = 0, random.Random(1)
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        models[("old", "new")[saves % 2]].save_pretrained(folder, max_shard_size=rng.choice((None, "30KB", "60KB")))
        saves += 1
    with os.fdopen(r, "rb") as f:
        results = json.loads(f.read() or b"{}")
    counts.lost += results.get("lost", 0)
    counts.notes += results.pop("why", [])
    return {"reads": results, "saves_meanwhile": saves}


QUICK = {"points": 7, "random": 16}  # CI: a sample of the crash points; MIXTRAL_EDU_FAULTS=full runs them all


def main():
    modes, work = sys.argv[1].split(","), sys.argv[2]
    budget = None if os.environ.get("MIXTRAL_EDU_FAULTS") == "full" else QUICK
    os.makedirs(work, exist_ok=True)
    models = make_models()
    refs = references(models, work)
    report = {"budget": "full" if budget is None else budget}
    for mode in modes:
        counts = Counts()
        t0 = time.perf_counter()
        run = {"kills": kills, "fsize": fsize, "disk": disk, "errors": errors, "readers": readers}[mode]
        extra = run(models, refs, work, counts, budget)
        report[mode] = {"faults": counts.faults, "lost": counts.lost, "outcomes": counts.outcomes,
                        "seconds": round(time.perf_counter() - t0, 2), **extra, "notes": counts.notes[:10]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
