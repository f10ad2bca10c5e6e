"""Read what transformers logs: its warnings go to Python's logging, not to the warnings module.

    with transformers_log("transformers.models.mixtral.modeling_mixtral") as messages:
        hf_model(ids, use_cache=True)        # in training with gradient checkpointing on
    messages                                 # ["`use_cache=True` is incompatible with gradient checkpointing. ..."]

Inside the block transformers' verbosity is "warning" and the logger's records are collected instead
of printed; afterwards the verbosity, the logger's handlers and its propagation are put back, whatever
happened. (transformers' `logger.warning_once` speaks once per process: a second identical call logs nothing.)
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, List


class _Collect(logging.Handler):
    def __init__(self, into: List[str]):
        super().__init__(level=logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


@contextlib.contextmanager
def transformers_log(name: str = "transformers", level: int = logging.WARNING) -> Iterator[List[str]]:
    """Collect the messages transformers' logger `name` emits at `level` or above inside the block."""
    from transformers.utils import logging as hf_logging
    messages: List[str] = []
    logger = logging.getLogger(name)
    handler = _Collect(messages)
    handler.setLevel(level)
    saved_verbosity, saved_propagate = hf_logging.get_verbosity(), logger.propagate
    hf_logging.set_verbosity(level)
    logger.addHandler(handler)
    logger.propagate = False          # collected here, not printed by transformers' own handler
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved_propagate
        hf_logging.set_verbosity(saved_verbosity)
