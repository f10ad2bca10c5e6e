"""Notebook run times, kept for the benchmarks: printed, and merged into artifacts/notebook_times.json."""
from __future__ import annotations

import json
from pathlib import Path

from mixtral_edu.modeling.files import write_file_atomically

ROOT = Path(__file__).resolve().parents[1]


def record_time(stem: str, seconds: float) -> None:
    """Print a notebook's run time and keep it in artifacts/notebook_times.json (written atomically)."""
    print(f"{stem}.ipynb: {seconds:.1f} s")
    record = ROOT / "artifacts" / "notebook_times.json"
    record.parent.mkdir(exist_ok=True)
    times = json.loads(record.read_text()) if record.exists() else {}
    times[stem] = round(seconds, 2)
    write_file_atomically(str(record), json.dumps(times, indent=1, sort_keys=True))
