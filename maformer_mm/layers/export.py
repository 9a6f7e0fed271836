"""When the model is being exported, a few steps take branch-free forms that ONNX can express.

Eager PyTorch keeps the fast forms (no padding when none is needed, `F.adaptive_avg_pool2d` for the GLD
resize). While `torch.onnx.export` (either exporter) or `torch.export` traces the model, or inside
`export_forms()`, the same steps are written without Python branches on the map size and with ops that
ONNX has, so that one graph serves every input size. The two forms agree to float rounding (tested).
"""

import contextlib
from typing import Iterator

import torch

__all__ = ['is_exporting', 'export_forms']

_FORCED = False


def is_exporting() -> bool:
    """True while an exporter traces the model, or inside `export_forms()`."""
    return _FORCED or torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


@contextlib.contextmanager
def export_forms() -> Iterator[None]:
    """Runs the model eagerly in the forms its export graph has (for tests and debugging an export)."""
    global _FORCED
    previous, _FORCED = _FORCED, True
    try:
        yield
    finally:
        _FORCED = previous
