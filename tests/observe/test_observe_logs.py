"""transformers_log collects what a transformers logger says inside the block and restores everything after."""
import logging

import pytest
from transformers.utils import logging as hf_logging

from mixtral_edu.observe.logs import transformers_log

NAME = "transformers.models.mixtral.modeling_mixtral"


def test_collects_warnings_and_restores_the_logger():
    hf_logging.set_verbosity_error()
    logger = logging.getLogger(NAME)
    handlers, propagate = list(logger.handlers), logger.propagate
    with transformers_log(NAME) as messages:
        logger.warning("first %s", "warning")
        logger.info("not collected: below the level")
    assert messages == ["first warning"]
    assert hf_logging.get_verbosity() == logging.ERROR
    assert logger.handlers == handlers and logger.propagate == propagate


def test_restores_after_an_error():
    hf_logging.set_verbosity_error()
    logger = logging.getLogger(NAME)
    handlers, propagate = list(logger.handlers), logger.propagate
    with pytest.raises(RuntimeError):
        with transformers_log(NAME):
            raise RuntimeError("boom")
    assert hf_logging.get_verbosity() == logging.ERROR
    assert logger.handlers == handlers and logger.propagate == propagate
