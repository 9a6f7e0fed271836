"""Shared fixtures: a tiny MAFormer that runs the real code paths in milliseconds on CPU."""

import copy

import pytest
import torch

from tests.helpers import TINY_CFG


@pytest.fixture
def tiny_cfg() -> dict:
    return copy.deepcopy(TINY_CFG)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def mm_log():
    """Messages logged through mmengine's current logger during the test, as one string."""
    import logging

    from mmengine.logging import MMLogger

    records = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    logger = MMLogger.get_current_instance()
    handler = _Collect()
    logger.addHandler(handler)
    yield lambda: '\n'.join(records)
    logger.removeHandler(handler)
