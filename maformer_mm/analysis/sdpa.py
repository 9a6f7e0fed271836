"""Counts `aten::scaled_dot_product_attention` in mmengine's FLOP counter, for every counter in the process.

mmengine's FlopAnalyzer has no handle for SDPA and counts it as 0 (with a warning per call), so the host
libraries' `get_flops.py` report MAFormer about a fifth low. `import maformer_mm` calls `install_sdpa_flop_count`,
which adds `sdpa_flop_jit` to mmengine's table of default handles (`_DEFAULT_SUPPORTED_FLOP_OPS`, read by each
new FlopAnalyzer): from then on every model counted in that process has its SDPA calls counted, ours and the host
libraries' alike (docs/host_tools.md). A handle mmengine may bring itself is kept.
"""

from collections import Counter
from typing import Any, List

from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import get_shape

__all__ = ['SDPA_OP', 'sdpa_flop_jit', 'install_sdpa_flop_count']

SDPA_OP = 'aten::scaled_dot_product_attention'


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Multiply-adds of softmax(q k^T) v for q (..., N, d), k (..., M, d), v (..., M, dv): the two matrix
    products SDPA performs, counted as the explicit path's matmuls are, so both paths give the same total."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for dim in q[:-2]:
        batch *= dim
    n, d = q[-2:]
    m, dv = k[-2], v[-1]
    return Counter({'scaled_dot_product_attention': batch * n * m * (d + dv)})


def install_sdpa_flop_count() -> None:
    """Makes every FlopAnalyzer created from now on count SDPA (see the module docstring). Idempotent."""
    complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS.setdefault(SDPA_OP, sdpa_flop_jit)
