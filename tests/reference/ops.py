"""Elementary operations of the reference, each written out from its textbook formula.

Nothing here calls a torch.nn.functional layer: linear maps are matrix products, softmax and LayerNorm
are spelled out, and every resampling (area pooling, bilinear, bicubic) is a matrix built entry by entry
from the sampling rule, applied separably to the two axes of a grid.
"""

import math
from typing import Mapping

import torch

Params = Mapping[str, torch.Tensor]

LN_EPS = 1e-5  # nn.LayerNorm's default, which mmcv's `dict(type='LN')` keeps
CUBIC_A = -0.75  # the cubic-convolution constant of PyTorch's bicubic mode


def linear(x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
    """x W^T + b with W = params[name.weight] (out, in) and b = params[name.bias] when there is one."""
    y = x.contiguous() @ params[f'{name}.weight'].T  # (strided float64 operands take a slow matmul path)
    bias = params.get(f'{name}.bias')
    return y if bias is None else y + bias


def layer_norm(x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance)."""
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + LN_EPS) * params[f'{name}.weight'] + params[f'{name}.bias']


def gelu(x: torch.Tensor) -> torch.Tensor:
    """The exact GELU, x * Phi(x)."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0)))


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """exp(l - max) / sum(exp(l - max)) along the last axis."""
    e = torch.exp(logits - logits.max(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def _source_coordinate(i: int, n_in: int, n_out: int) -> float:
    """The input coordinate sampled by output pixel i with pixel centres aligned (align_corners=False)."""
    return (i + 0.5) * n_in / n_out - 0.5


def linear_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n_out, n_in) linear interpolation along one axis (the 1-D factor of bilinear resizing)."""
    m = torch.zeros(n_out, n_in, dtype=dtype)
    for i in range(n_out):
        src = max(_source_coordinate(i, n_in, n_out), 0.0)
        lo = int(math.floor(src))
        hi = min(lo + 1, n_in - 1)
        frac = src - lo
        m[i, lo] += 1 - frac
        m[i, hi] += frac
    return m


def area_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n_out, n_in) adaptive average pooling along one axis: bin i averages [floor(i n/m), ceil((i+1) n/m))."""
    m = torch.zeros(n_out, n_in, dtype=dtype)
    for i in range(n_out):
        start = (i * n_in) // n_out
        end = -((-(i + 1) * n_in) // n_out)
        m[i, start:end] = 1.0 / (end - start)
    return m


def _cubic_weight(t: float) -> float:
    """Keys' cubic convolution kernel with a = CUBIC_A."""
    a, t = CUBIC_A, abs(t)
    if t <= 1:
        return ((a + 2) * t - (a + 3)) * t * t + 1
    if t < 2:
        return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return 0.0


def cubic_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(n_out, n_in) cubic convolution along one axis; samples outside the input repeat the border."""
    m = torch.zeros(n_out, n_in, dtype=dtype)
    for i in range(n_out):
        src = _source_coordinate(i, n_in, n_out)
        base = int(math.floor(src))
        for j in range(base - 1, base + 3):
            m[i, min(max(j, 0), n_in - 1)] += _cubic_weight(src - j)
    return m


def resize_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """GLD's rule for one axis: area pooling when it shrinks, linear interpolation when it grows."""
    if n_out < n_in:
        return area_matrix(n_in, n_out, dtype)
    if n_out > n_in:
        return linear_matrix(n_in, n_out, dtype)
    return torch.eye(n_in, dtype=dtype)


def resample(grid: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Applies per-axis matrices to the last two axes of `grid` (..., H, W) -> (..., H', W')."""
    return rows.to(grid.dtype) @ grid.contiguous() @ cols.to(grid.dtype).T


def bicubic(grid: torch.Tensor, size) -> torch.Tensor:
    """Bicubic resizing of (..., H, W) to `size` (align_corners=False)."""
    return resample(grid, cubic_matrix(grid.shape[-2], size[0]), cubic_matrix(grid.shape[-1], size[1]))


def bilinear(grid: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resizing of (..., H, W) to `size` (align_corners=False, no antialiasing)."""
    return resample(grid, linear_matrix(grid.shape[-2], size[0]), linear_matrix(grid.shape[-1], size[1]))
