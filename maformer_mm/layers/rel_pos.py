"""Swin-style relative position bias: the index table and resizing of learned tables."""
import torch
import torch.nn.functional as F


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into a ((2w-1)^2, heads) bias table for every (query, key) pair of a w x w window.

    Returns:
        A long tensor of shape (w*w, w*w).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size),
                                        indexing='ij')).flatten(1)  # 2, w*w
    rel = coords[:, :, None] - coords[:, None, :]  # 2, w*w, w*w
    rel = rel.permute(1, 2, 0) + (window_size - 1)  # w*w, w*w, 2 in [0, 2w-2]
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def resize_rel_pos_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Bicubically resizes a ((2w'-1)^2, heads) table to the one of a window of `window_size`."""
    src = int(round(table.shape[0] ** 0.5))
    dst = 2 * window_size - 1
    if src == dst:
        return table
    heads = table.shape[1]
    grid = table.T.reshape(1, heads, src, src).float()
    grid = F.interpolate(grid, size=(dst, dst), mode='bicubic', align_corners=False)
    return grid.reshape(heads, dst * dst).T.to(table.dtype)
