"""Shared fixtures: a tiny MAFormer that runs the real code paths in milliseconds on CPU."""
import copy

import pytest
import torch

# Depth 1 per stage, few channels, a 64x64 pretraining grid (GLD reference grids 16x16 and 8x8).
TINY_ARCH = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
TINY_CFG = dict(arch=TINY_ARCH, pretrain_img_size=64, window_size=4, drop_path_rate=0.)


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
