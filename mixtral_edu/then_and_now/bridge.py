"""Run today's transformers (5.23.0) beside this package, which mirrors 4.41.2.

Both cannot live in one Python: 5.23 sits in its own environment, `.venv-tf5`, made by
`bash scripts/setup.sh`. A `Tf5Bridge` starts one worker there (`worker.py`, run isolated)
and keeps it alive, so its start-up (~5 s: torch and transformers imports) is paid once:

    with Tf5Bridge() as tf5:                       # or tf5 = shared_bridge(): one per session
        tf5.load("tiny", TINY_DIR)                 # 5.23's from_pretrained, in the worker
        out = tf5.forward("tiny", input_ids, output_router_logits=True)
        out["logits"]                              # a torch tensor here, computed there

Tensors cross as safetensors files in a private temporary directory; the rest is JSON.
Nothing is pickled. Leaving the `with` block, `close()`, or the end of the interpreter
always ends the worker and removes the directory; the worker also exits by itself when
its stdin closes, so it cannot outlive this process.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import shutil
import subprocess
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors.torch import load_file, save_file

from .worker import pack, unpack

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-tf5"
WORKER = Path(__file__).with_name("worker.py")
EXPECTED_TRANSFORMERS = "5.23.0"
PYTHON_ENV_VAR = "MIXTRAL_EDU_TF5_PYTHON"
SETUP_COMMAND = "bash scripts/setup.sh"
MANUAL_COMMAND = ("python3 -m venv .venv-tf5 && .venv-tf5/bin/python -m pip install "
                  "-r requirements-tf5.txt")

MISSING = ("transformers {want} runs in its own environment, which is missing: {python} does not exist.\n"
           "Create it from the repository root ({repo}) with\n    {setup}\n"
           "(it also makes .venv; a second run only checks a stamp), or by hand with\n    {manual}")
WRONG_VERSION = ("{python} has transformers {found}, but chapter 11 compares against {want}.\n"
                 "Reinstall it from the repository root with\n    {setup}")
BROKEN = "{python} cannot run the worker ({error}).\nRepair the environment from the repository root with\n    {setup}"
DIED = "the transformers 5.23 worker ended unexpectedly (exit code {code}). Its last messages:\n{log}"
TIMED_OUT = "the transformers 5.23 worker gave no answer to {op!r} within {seconds:.0f} s; it was stopped."


class Tf5EnvironmentMissing(FileNotFoundError):
    """The .venv-tf5 environment (or its transformers 5.23.0) is not there."""


class Tf5WorkerError(RuntimeError):
    """An operation raised inside the worker; `remote_type` and `remote_traceback` say what and where."""

    def __init__(self, op: str, remote_type: str, message: str, remote_traceback: str):
        super().__init__(f"{op}: {remote_type}: {message}")
        self.remote_type, self.remote_traceback = remote_type, remote_traceback


def tf5_python() -> Path:
    """The interpreter of the 5.23 environment; Tf5EnvironmentMissing (with the command) if absent."""
    python = Path(os.environ.get(PYTHON_ENV_VAR) or VENV / "bin" / "python")
    if not python.exists():
        raise Tf5EnvironmentMissing(MISSING.format(want=EXPECTED_TRANSFORMERS, python=python, repo=REPO,
                                                   setup=SETUP_COMMAND, manual=MANUAL_COMMAND))
    return python


def _stop(proc: subprocess.Popen, private_dir: str, log) -> None:
    """End the worker (politely, then by force) and remove its directory. Safe to call twice."""
    if proc.poll() is None:
        try:
            proc.stdin.write(json.dumps({"id": -1, "op": "shutdown"}) + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout, log):
        try:
            stream.close()
        except (OSError, ValueError):
            pass
    shutil.rmtree(private_dir, ignore_errors=True)


class Tf5Bridge:
    """One transformers 5.23 worker process; every method is one request to it."""

    def __init__(self, python: Optional[os.PathLike] = None, timeout: float = 300.0):
        self.python = Path(python) if python is not None else tf5_python()
        if not self.python.exists():
            raise Tf5EnvironmentMissing(MISSING.format(want=EXPECTED_TRANSFORMERS, python=self.python, repo=REPO,
                                                       setup=SETUP_COMMAND, manual=MANUAL_COMMAND))
        self.timeout = timeout
        self.proc: Optional[subprocess.Popen] = None
        self.versions: Dict[str, Any] = {}
        self._dir: Optional[str] = None
        self._log = None
        self._next_id = 0
        self._lock = threading.Lock()
        self._finalizer = None

    # -- life cycle ----------------------------------------------------------------------
    def start(self, wait: bool = True) -> "Tf5Bridge":
        """Start the worker (if not running) and check it runs transformers 5.23.0.

        wait=False returns at once and checks on the first request: the worker's imports
        (a few seconds) then overlap with whatever the caller does meanwhile.
        """
        if self.alive:
            if wait and not self.versions:
                self._check()
            return self
        self._dir = tempfile.mkdtemp(prefix="mixtral_edu_tf5_")  # mode 0700: ours only
        self._log = open(os.path.join(self._dir, "worker.log"), "w+", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", TQDM_DISABLE="1",
                   TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1")
        self.proc = subprocess.Popen([str(self.python), "-I", str(WORKER), self._dir], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, cwd=self._dir)
        self._finalizer = weakref.finalize(self, _stop, self.proc, self._dir, self._log)
        self.versions = {}
        if wait:
            self._check()
        return self

    def _check(self) -> None:
        try:
            versions = self._request("hello", {})
        except (Tf5WorkerError, RuntimeError) as exc:  # no torch or no transformers there, say
            self.close()
            raise Tf5EnvironmentMissing(BROKEN.format(python=self.python, error=exc, setup=SETUP_COMMAND)) from None
        if versions["transformers"] != EXPECTED_TRANSFORMERS:
            self.close()
            raise Tf5EnvironmentMissing(WRONG_VERSION.format(python=self.python, found=versions["transformers"],
                                                             want=EXPECTED_TRANSFORMERS, setup=SETUP_COMMAND))
        self.versions = versions

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    def close(self) -> None:
        """Stop the worker and remove its private directory (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _stop once, whatever happened before

    def __enter__(self) -> "Tf5Bridge":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}, transformers {self.versions.get('transformers')}" if self.alive else "stopped"
        return f"Tf5Bridge({self.python}, {state})"

    # -- one request ------------------------------------------------------------------------
    def _log_tail(self, lines: int = 15) -> str:
        """The worker's last stderr lines, read through our own handle (the file may be unlinked by now)."""
        try:
            self._log.flush()
            self._log.seek(0)
            return "".join(self._log.read().splitlines(keepends=True)[-lines:]) or "(nothing)"
        except (OSError, ValueError, AttributeError):
            return "(no log)"

    def call(self, op: str, **args: Any) -> Any:
        """Send one request; return its result with tensors restored, or raise what the worker raised."""
        self.start()  # (re)starts a stopped worker; checks the version once
        return self._request(op, args)

    def _request(self, op: str, args: Dict[str, Any]) -> Any:
        with self._lock:
            rid = self._next_id
            self._next_id += 1
            payload, tensors = pack(args)
            request_file = None
            if tensors:
                request_file = os.path.join(self._dir, f"request-{rid}.safetensors")
                save_file(tensors, request_file + ".tmp")
                os.replace(request_file + ".tmp", request_file)
            try:
                self.proc.stdin.write(json.dumps({"id": rid, "op": op, "args": payload,
                                                  "tensors": request_file}) + "\n")
                self.proc.stdin.flush()
                ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
                line = self.proc.stdout.readline() if ready else None
            except (BrokenPipeError, OSError):
                line = ""
            finally:
                if request_file is not None and os.path.exists(request_file):
                    os.remove(request_file)
            if line is None:
                self.close()
                raise TimeoutError(TIMED_OUT.format(op=op, seconds=self.timeout))
            if not line:
                try:
                    code = self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    code = None
                log = self._log_tail()
                self.close()
                raise RuntimeError(DIED.format(code=code, log=log))
            answer = json.loads(line)
            if not answer["ok"]:
                raise Tf5WorkerError(op, answer["error"], answer["message"], answer["traceback"])
            out_tensors: Dict[str, torch.Tensor] = {}
            if answer.get("tensors"):
                out_tensors = load_file(answer["tensors"])
                os.remove(answer["tensors"])
            return unpack(answer["result"], out_tensors)

    # -- the operations (see worker.py for what each returns) ------------------------------------
    def hello(self) -> Dict[str, Any]:
        return self.call("hello")

    def load(self, handle: str, folder: os.PathLike, dtype: str = "float32", **kwargs: Any) -> Dict[str, Any]:
        """5.23's MixtralForCausalLM.from_pretrained(folder), kept in the worker under `handle`."""
        return self.call("load", handle=handle, folder=str(folder), dtype=dtype, **kwargs)

    def load_model(self, handle: str, model, dtype: str = "float32", **kwargs: Any) -> Dict[str, Any]:
        """Send one of our models: save_pretrained into the private directory, load it there."""
        folder = os.path.join(self._private_dir(), f"model-{handle}")
        model.save_pretrained(folder)
        return self.load(handle, folder, dtype=dtype, **kwargs)

    def _private_dir(self) -> str:
        self.start()
        return self._dir

    def unload(self, handle: str) -> Dict[str, Any]:
        return self.call("unload", handle=handle)

    def save(self, handle: str, folder: os.PathLike) -> Dict[str, Any]:
        return self.call("save", handle=handle, folder=str(folder))

    def state(self, handle: str, names) -> Dict[str, torch.Tensor]:
        return self.call("state", handle=handle, names=list(names))

    def forward(self, handle: str, input_ids: torch.Tensor, **kwargs: Any) -> Dict[str, Any]:
        return self.call("forward", handle=handle, input_ids=input_ids, **kwargs)

    def generate(self, handle: str, input_ids: torch.Tensor, **kwargs: Any) -> Dict[str, Any]:
        return self.call("generate", handle=handle, input_ids=input_ids, **kwargs)

    def mask(self, handle: str, batch_size: int, q_len: int, past_len: int = 0, **kwargs: Any) -> Dict[str, Any]:
        return self.call("mask", handle=handle, batch_size=batch_size, q_len=q_len, past_len=past_len, **kwargs)

    def moe(self, handle: str, layer: int, hidden_states: torch.Tensor, implementations) -> Dict[str, Any]:
        return self.call("moe", handle=handle, layer=layer, hidden_states=hidden_states,
                         implementations=list(implementations))

    def aux_loss(self, gate_logits, num_experts: int, top_k: int, attention_mask=None) -> torch.Tensor:
        return self.call("aux_loss", gate_logits=list(gate_logits), num_experts=num_experts, top_k=top_k,
                         attention_mask=attention_mask)["aux_loss"]

    def sliding_layer(self, sliding_window: int, updates) -> list:
        """5.23's DynamicSlidingWindowLayer fed the (key, value) pairs in turn."""
        return self.call("sliding_layer", sliding_window=sliding_window, updates=[list(u) for u in updates])

    def recorders(self, handle: str, input_ids: torch.Tensor) -> Dict[str, Any]:
        return self.call("recorders", handle=handle, input_ids=input_ids)

    def registries(self) -> Dict[str, Any]:
        return self.call("registries")

    def conversion_rules(self, model_type: str = "mixtral") -> list:
        return self.call("conversion_rules", model_type=model_type)

    def source(self, *names: str) -> Dict[str, Dict[str, Any]]:
        """{dotted name: {"source", "file", "line"}} read with inspect in the 5.23 environment."""
        return self.call("source", names=list(names))


_SHARED: Optional[Tf5Bridge] = None


def shared_bridge(wait: bool = False) -> Tf5Bridge:
    """The session's one worker (started on first use, restarted if it died).

    By default it returns while the worker is still importing; the first request waits.
    """
    global _SHARED
    if _SHARED is None or not _SHARED.alive:
        _SHARED = Tf5Bridge().start(wait=wait)
    return _SHARED


def close_shared_bridge() -> None:
    global _SHARED
    if _SHARED is not None:
        _SHARED.close()
        _SHARED = None


atexit.register(close_shared_bridge)
