"""GLD, Global Learning with Down-sampling: the global branch of a MAF block.

One fully-connected layer acting along the token axis maps the H_r x W_r tokens of a fixed
reference grid to G_h x G_w global tokens (shared by all channels). A position term, the input
bilinearly interpolated to the global grid, is added to its output. Maps of any other size are
first resized to the reference grid, so the FC weights serve every input size and the branch's
cost stays fixed. GLD reads the unpadded map, so window padding never reaches it.

The resize is separable. Eagerly it runs as `F.adaptive_avg_pool2d` and `F.interpolate`; in an export
graph (see `export.py`) as two matrix products whose matrices are built from the map size with
`arange` and comparisons, so that one ONNX graph serves every size.
"""

import math
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .export import is_exporting

__all__ = [
    'GLD',
    'global_grid',
    'resize_to_grid',
    'resize_weights',
    'adaptive_pool_weights',
    'bilinear_weights',
    'resize_gld_fc',
]

# A size: an int, an exporter's symbolic int, or a traced 0-dim tensor (legacy ONNX exporter).
_Length = Union[int, torch.SymInt, torch.Tensor]  # a token count, also while tracing


def global_grid(ref_hw: Tuple[int, int], ratio: float) -> Tuple[int, int]:
    """The global grid (round(H_r * sqrt(N)), round(W_r * sqrt(N))), at least 1 x 1."""
    scale = math.sqrt(ratio)
    return max(1, round(ref_hw[0] * scale)), max(1, round(ref_hw[1] * scale))


def adaptive_pool_weights(n_in: _Length, n_out: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """The (n_out, n_in) float32 matrix of 1-D adaptive average pooling: output i averages the inputs
    [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)), exactly the bins of `F.adaptive_avg_pool2d`.

    Built with `arange` and comparisons, so `n_in` may be an exporter's symbolic size.
    """
    i = torch.arange(n_out, device=device)  # output positions
    j = torch.arange(n_in, device=device)  # input positions
    start = torch.div(i * n_in, n_out, rounding_mode='floor')
    end = torch.div((i + 1) * n_in + n_out - 1, n_out, rounding_mode='floor')
    inside = (j[None] >= start[:, None]) & (j[None] < end[:, None])  # n_out, n_in
    return inside.float() / (end - start).float()[:, None]


def bilinear_weights(n_in: _Length, n_out: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """The (n_out, n_in) float32 matrix of 1-D linear interpolation as `F.interpolate(mode='bilinear',
    align_corners=False)` computes it: source position (i + 0.5) n_in / n_out - 0.5, clamped at 0, with the
    same float32 rounding as PyTorch's kernel, so the weights are bit-identical. `n_in` may be symbolic.
    """
    i = torch.arange(n_out, device=device)
    j = torch.arange(n_in, device=device)
    # a float32 scale, then one rounding of scale * (i + 0.5) - 0.5, as the kernel's fused multiply-add
    scale = j.new_full((), n_in).float() / n_out
    src = (scale.double() * (i.double() + 0.5) - 0.5).float().clamp(min=0)
    low = src.floor()
    frac = (src - low)[:, None]
    high = torch.minimum(low + 1, j[-1:].float())  # the last input position, n_in - 1
    return (j[None] == low[:, None]) * (1 - frac) + (j[None] == high[:, None]) * frac  # n_out, n_in


def resize_weights(n_in: _Length, n_out: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """The (n_out, n_in) matrix of the 1-D resize `resize_to_grid` applies along one axis: adaptive average
    pooling when n_in >= n_out (the identity when equal), bilinear interpolation when n_in < n_out.

    For a symbolic `n_in` both matrices are built and the choice is a `torch.where`, not a Python branch.
    """
    shrinks = torch.arange(n_in, device=device).new_full((), n_in) >= n_out  # a tensor, also when symbolic
    return torch.where(shrinks, adaptive_pool_weights(n_in, n_out, device), bilinear_weights(n_in, n_out, device))


def resize_to_grid(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Resizes a (B, C, H, W) map to `size`: area pooling on axes that shrink, bilinear on axes that grow.

    Returns the input itself when it already has that size (eager mode). In an export graph the resize
    is `rows @ x @ cols^T` with `resize_weights` matrices, computed from the (maybe symbolic) size.
    """
    h, w = x.shape[-2:]
    if is_exporting():
        rows = resize_weights(h, size[0], x.device).to(x.dtype)  # H_r, H
        cols = resize_weights(w, size[1], x.device).to(x.dtype)  # W_r, W
        return rows @ (x @ cols.T)  # B, C, H_r, W_r
    if (h, w) == tuple(size):
        return x
    pooled = (min(h, size[0]), min(w, size[1]))
    if pooled != (h, w):
        x = F.adaptive_avg_pool2d(x, pooled)
    if pooled != tuple(size):
        x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
    return x


def _square_side(n: int, what: str) -> int:
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f'cannot resize GLD weights: the checkpoint {what} of {n} tokens is not a square grid')
    return side


def resize_gld_fc(
    weight: torch.Tensor, bias: torch.Tensor, ref_hw: Tuple[int, int], global_hw: Tuple[int, int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Interpolates a GLD FC made for another (square) grid pair to `ref_hw` -> `global_hw`.

    The weight (G, H_r * W_r) is treated as a (G_h, G_w, H_r, W_r) kernel and resized bilinearly on
    both grid pairs, as Swin resizes its relative-position tables. It is rescaled by the ratio of the
    reference-grid areas so that each output keeps the same magnitude (the FC sums over its inputs).
    """
    g_src, r_src = weight.shape
    rs = _square_side(r_src, 'reference grid')
    gs = _square_side(g_src, 'global grid')
    dtype = weight.dtype
    w = weight.float().reshape(g_src, 1, rs, rs)
    w = F.interpolate(w, size=ref_hw, mode='bilinear', align_corners=False) * (r_src / (ref_hw[0] * ref_hw[1]))
    w = w.reshape(gs, gs, -1).permute(2, 0, 1).unsqueeze(1)  # H_r*W_r, 1, G_h, G_w
    w = F.interpolate(w, size=global_hw, mode='bilinear', align_corners=False)
    w = w.flatten(1).T.contiguous()  # G, H_r*W_r
    b = F.interpolate(
        bias.float().reshape(1, 1, gs, gs), size=global_hw, mode='bilinear', align_corners=False
    ).flatten()
    return w.to(dtype), b.to(dtype)


class GLD(nn.Module):
    """Global Learning with Down-sampling.

    Args:
        ref_hw: Reference grid (H_r, W_r): the stage's grid at the pretraining image size.
        ratio: N, the fraction of reference tokens kept as global tokens (0.5 in the paper).

    Input (B, H, W, C), output (B, G_h * G_w, C).
    """

    def __init__(self, ref_hw: Tuple[int, int], ratio: float = 0.5) -> None:
        super().__init__()
        self.ref_hw = tuple(ref_hw)
        self.global_hw = global_grid(self.ref_hw, ratio)
        self.fc = nn.Linear(self.ref_hw[0] * self.ref_hw[1], self.global_hw[0] * self.global_hw[1])
        self.register_load_state_dict_pre_hook(GLD._resize_fc_hook)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = resize_to_grid(x.permute(0, 3, 1, 2), self.ref_hw)  # B, C, H_r, W_r
        tokens = self.fc(x.flatten(2))  # B, C, G
        pos = F.interpolate(x, size=self.global_hw, mode='bilinear', align_corners=False).flatten(2)  # B, C, G
        return (tokens + pos).transpose(1, 2)  # B, G, C

    @staticmethod
    def _resize_fc_hook(module: 'GLD', state_dict: dict, prefix: str, *args) -> None:
        wkey, bkey = prefix + 'fc.weight', prefix + 'fc.bias'
        weight = state_dict.get(wkey)
        if weight is None or bkey not in state_dict or weight.shape == module.fc.weight.shape:
            return
        old = tuple(weight.shape)
        state_dict[wkey], state_dict[bkey] = resize_gld_fc(weight, state_dict[bkey], module.ref_hw, module.global_hw)
        from mmengine.logging import print_log

        print_log(
            f'Resized {wkey} from {old} to {tuple(state_dict[wkey].shape)} '
            f'(reference grid {module.ref_hw}, global grid {module.global_hw})',
            logger='current',
        )
