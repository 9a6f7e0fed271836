"""Swin-style relative position bias: the index table, the gather index that lays the bias out for the fused
attention kernels, and resizing of learned tables."""

import torch
import torch.nn.functional as F

# The memory-efficient SDPA kernel on CUDA wants a float mask whose every stride but the last is a multiple of 8
# elements; torch pads (copies) any other mask on every call (`preprocess_mask` in ATen's transformers/attention.cpp).
MASK_ALIGN = 8


def relative_position_index(window_size: int) -> torch.Tensor:
    """Index into a ((2w-1)^2, heads) bias table for every (query, key) pair of a w x w window.

    Returns:
        A long tensor of shape (w*w, w*w).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing='ij')).flatten(
        1
    )  # 2, w*w
    rel = coords[:, :, None] - coords[:, None, :]  # 2, w*w, w*w
    rel = rel.permute(1, 2, 0) + (window_size - 1)  # w*w, w*w, 2 in [0, 2w-2]
    return rel[..., 0] * (2 * window_size - 1) + rel[..., 1]


def bias_gather_index(window_size: int, num_heads: int, align: int = MASK_ALIGN) -> torch.Tensor:
    """Flat index into a ((2w-1)^2, heads) bias table (row-major) that gathers the bias of every (head, query, key).

    The result has shape (heads, N, P), N = w*w and P = N rounded up to a multiple of `align`; the P - N extra
    columns repeat entry 0 and are sliced off after the gather. The gathered bias is then laid out head-major with
    stride 1 in its key dimension and every other stride a multiple of `align`: the layout the fused CUDA kernels
    take as it is (the efficient and cuDNN kernels need stride 1 in the last dimension, the efficient one also
    aligned rows), without a copy per forward.
    """
    n = window_size * window_size
    padded = -(-n // align) * align
    index = F.pad(relative_position_index(window_size), (0, padded - n))  # N, P; the padding columns gather entry 0
    heads = torch.arange(num_heads)
    return index[None] * num_heads + heads[:, None, None]  # h, N, P


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
