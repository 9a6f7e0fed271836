"""Pure helpers for non-overlapping window attention on NHWC maps.

Padding is returned, never stored: `window_partition` gives back the padded size and
`window_unpartition` crops to the size it is told (the detectron2 ViTDet convention).
"""

from typing import Tuple

import torch
import torch.nn.functional as F

from .export import is_exporting


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pads a (B, H, W, C) map at the bottom/right so that H and W are multiples of `multiple`.

    Returns:
        The padded map (in eager mode the input itself when no padding is needed) and its (Hp, Wp).
    """
    _, h, w, _ = x.shape
    # (h + m - 1) // m * m rather than h + (-h) % m: the same number, but an exporter's symbolic shapes
    # then see Hp as a multiple of m, which the window view needs
    hp, wp = (h + multiple - 1) // multiple * multiple, (w + multiple - 1) // multiple * multiple
    if is_exporting() or hp != h or wp != w:  # an export graph pads always (maybe by 0): no branch on the size
        x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    return x, (hp, wp)


def window_partition(x: torch.Tensor, window_size: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Cuts a (B, H, W, C) map into windows, padding it first when needed.

    Returns:
        Windows of shape (B * nW, window_size * window_size, C) and the padded size (Hp, Wp).
    """
    x, (hp, wp) = pad_to_multiple(x, window_size)
    b, _, _, c = x.shape
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    # (B, nH, ws, nW, ws, C) -> (B, nH, nW, ws, ws, C): the one copy
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)
    return windows, (hp, wp)


def window_unpartition(
    windows: torch.Tensor, window_size: int, pad_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of `window_partition`: (B * nW, ws * ws, C) windows back to a (B, H, W, C) map."""
    hp, wp = pad_hw
    h, w = hw
    c = windows.shape[-1]
    x = windows.view(-1, hp // window_size, wp // window_size, window_size, window_size, c)
    # (B, nH, nW, ws, ws, C) -> (B, nH, ws, nW, ws, C) -> (B, Hp, Wp, C)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)
    return x[:, :h, :w, :]  # crops the padding (a view, also when there is none)
