"""A whole MAFormer forward composed of the reference blocks, and the checkpoint resizing rules."""

import math
from typing import Sequence, Tuple, Union

import torch

from .blocks import global_grid, maf_block, patch_embed, patch_merging, vit_block
from .ops import Params, bicubic, bilinear, layer_norm

MAF_STAGES = (0, 1)


def maformer(
    images: torch.Tensor,
    params: Params,
    embed_dims: int,
    depths: Sequence[int],
    num_heads: Sequence[int],
    window_size: int = 7,
    gld_ratio: float = 0.5,
    pretrain_img_size: Union[int, Tuple[int, int]] = 224,
    out_indices: Sequence[int] = (0, 1, 2, 3),
    vit_window_size: int = 0,
    vit_global_blocks: Sequence[int] = (),
    patch_size: int = 4,
) -> Tuple[torch.Tensor, ...]:
    """(B, 3, H, W) -> the normalised NCHW maps of the stages in `out_indices`.

    Stages 1-2: MAF blocks whose GLD reference grid is the stage's grid at the pretraining size.
    Stages 3-4: ViT blocks, in stage 3 windowed by `vit_window_size` except `vit_global_blocks`.
    Every stage after the first starts with a 2x patch merging; `norm{i}` normalises each output.
    """
    pretrain_hw = (pretrain_img_size,) * 2 if isinstance(pretrain_img_size, int) else tuple(pretrain_img_size)
    outs = {i: [] for i in out_indices}
    for image in images:
        x = patch_embed(image, params, 'patch_embed', patch_size)
        for i, depth in enumerate(depths):
            if i > 0:
                x = patch_merging(x, params, f'stages.{i}.downsample')
            stride = patch_size * 2**i
            for j in range(depth):
                name = f'stages.{i}.blocks.{j}'
                if i in MAF_STAGES:
                    ref_hw = (math.ceil(pretrain_hw[0] / stride), math.ceil(pretrain_hw[1] / stride))
                    x = maf_block(x, params, name, num_heads[i], window_size, ref_hw, gld_ratio)
                else:
                    windowed = i == 2 and j not in vit_global_blocks
                    x = vit_block(x, params, name, num_heads[i], vit_window_size if windowed else 0)
            if i in outs:
                outs[i].append(layer_norm(x, params, f'norm{i}').permute(2, 0, 1))
    return tuple(torch.stack(outs[i]) for i in sorted(outs))


def resize_rel_pos_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """A ((2w'-1)^2, heads) table, seen per head as a (2w'-1) x (2w'-1) grid of offsets, resized bicubically
    to the grid of a window of `window_size`."""
    src = math.isqrt(table.shape[0])
    dst = 2 * window_size - 1
    grid = table.T.reshape(-1, src, src)
    return bicubic(grid, (dst, dst)).reshape(-1, dst * dst).T


def resize_gld_fc(
    weight: torch.Tensor, bias: torch.Tensor, ref_hw: Tuple[int, int], ratio: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """A GLD FC made for square grids (G_s^2 <- R_s^2), seen as a (G_s, G_s, R_s, R_s) kernel, resized
    bilinearly on its reference axes to `ref_hw` (scaled by R_s^2 / (H_r W_r), so a sum over inputs keeps its
    size) and on its global axes to the global grid of `ref_hw` and `ratio`; the bias like a global map."""
    g_src, r_src = weight.shape
    gs, rs = math.isqrt(g_src), math.isqrt(r_src)
    global_hw = global_grid(ref_hw, ratio)
    kernel = bilinear(weight.reshape(gs, gs, rs, rs), ref_hw) * (r_src / (ref_hw[0] * ref_hw[1]))
    kernel = bilinear(kernel.permute(2, 3, 0, 1), global_hw)  # H_r, W_r, G_h, G_w
    new_weight = kernel.reshape(ref_hw[0] * ref_hw[1], -1).T
    new_bias = bilinear(bias.reshape(gs, gs), global_hw).reshape(-1)
    return new_weight, new_bias
