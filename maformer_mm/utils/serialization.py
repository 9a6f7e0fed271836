"""Lets torch's default safe loader (`weights_only=True` since torch 2.6) read mmengine checkpoints.

mmengine 0.10.7 stores its message hub (HistoryBuffer objects holding numpy arrays) and numpy
scalars in every training checkpoint, so `--resume`, `load_from` and `tools/test.py CFG CKPT`
would fail with UnpicklingError. Rather than turning the safe loader off, the exact types mmengine
writes are added to torch's allow-list; anything else is still refused. A HistoryBuffer pickles its
statistics methods as `getattr(HistoryBuffer, 'mean')`, so `getattr` is listed too: the safe loader
only ever calls allow-listed functions, so looked-up attributes are stored, never called.
"""
import builtins
from collections import Counter

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['allow_mmengine_checkpoints']


def _numpy_globals() -> list:
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtypes = [type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32,
                                          np.int64, np.uint8, np.bool_)]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype, *dtypes]


def allow_mmengine_checkpoints() -> None:
    """Registers HistoryBuffer and the numpy types of mmengine checkpoints as safe globals (idempotent)."""
    torch.serialization.add_safe_globals([HistoryBuffer, Counter, builtins.getattr, *_numpy_globals()])
