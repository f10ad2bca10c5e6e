"""Then and now: the call chain of transformers 4.41.2 (what this package mirrors) beside 5.23.0.

`bridge` runs 5.23 in its own environment (.venv-tf5) as a worker process and brings back
what it computed; chapter 11 and tests/then_and_now use it.
"""
from .bridge import (Tf5Bridge, Tf5EnvironmentMissing, Tf5WorkerError, close_shared_bridge, shared_bridge,
                     tf5_python)

__all__ = ["Tf5Bridge", "Tf5EnvironmentMissing", "Tf5WorkerError", "close_shared_bridge", "shared_bridge",
           "tf5_python"]
