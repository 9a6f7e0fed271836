"""Counts `aten::scaled_dot_product_attention` in mmengine's FLOP counter, for every counter in the process.

mmengine's FlopAnalyzer has no handle for SDPA and counts it as 0 (with a warning per call), so the host
libraries' `get_flops.py` report MAFormer about a fifth low. `import maformer_mm` calls `install_sdpa_flop_count`,
which adds `sdpa_flop_jit` to mmengine's table of default handles (`_DEFAULT_SUPPORTED_FLOP_OPS`, read by each
new FlopAnalyzer): from then on every model counted in that process has its SDPA calls counted, ours and the host
libraries' alike (docs/host_tools.md). The activation counter (`ActivationAnalyzer`, which `get_flops.py` also
runs) gets `sdpa_activation_jit` the same way. A handle mmengine may bring itself is kept.
"""

from collections import Counter
from typing import Any, List, Tuple

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import get_shape

__all__ = ['SDPA_OP', 'sdpa_flop_jit', 'sdpa_activation_jit', 'install_sdpa_flop_count']

SDPA_OP = 'aten::scaled_dot_product_attention'


def _sizes(inputs: List[Any]) -> Tuple[int, int, int, int, int]:
    """(batch, N, M, d, dv) of q (..., N, d), k (..., M, d), v (..., M, dv); batch is the product of the rest."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for dim in q[:-2]:
        batch *= dim
    return batch, q[-2], k[-2], q[-1], v[-1]


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Multiply-adds of softmax(q k^T) v: the two matrix products SDPA performs, counted as the explicit path's
    matmuls are, so both paths give the same total."""
    batch, n, m, d, dv = _sizes(inputs)
    return Counter({'scaled_dot_product_attention': batch * n * m * (d + dv)})


def sdpa_activation_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Activations as the explicit path's two matmuls count them (their outputs: the N x M scores and the N x dv
    result), so both paths give the same total."""
    batch, n, m, _, dv = _sizes(inputs)
    return Counter({'scaled_dot_product_attention': batch * n * (m + dv)})


def install_sdpa_flop_count() -> None:
    """Makes every FlopAnalyzer and ActivationAnalyzer created from now on count SDPA (see the module docstring).
    Idempotent."""
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(SDPA_OP, sdpa_flop_jit)
    complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS.setdefault(SDPA_OP, sdpa_activation_jit)
