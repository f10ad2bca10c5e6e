"""Notebook run times, kept for the benchmarks: printed, and merged into artifacts/notebook_times.json."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def record_time(stem: str, seconds: float) -> None:
    """Print a notebook's run time and keep it in artifacts/notebook_times.json (written atomically)."""
    print(f"{stem}.ipynb: {seconds:.1f} s")
    record = ROOT / "artifacts" / "notebook_times.json"
    record.parent.mkdir(exist_ok=True)
    times = json.loads(record.read_text()) if record.exists() else {}
    times[stem] = round(seconds, 2)
    fd, tmp = tempfile.mkstemp(dir=record.parent, prefix=".notebook_times.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(times, indent=1, sort_keys=True))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, record)
    except BaseException:
        os.unlink(tmp)
        raise
