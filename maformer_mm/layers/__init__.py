"""Building blocks of MAFormer."""

from .attention import Attention, CrossAttention, WindowAttention, set_fused_attn, use_fused_attn
from .blocks import BlockOptions, MAFBlock, ViTBlock
from .export import export_forms, is_exporting
from .gld import (
    GLD,
    adaptive_pool_weights,
    bilinear_weights,
    global_grid,
    resize_gld_fc,
    resize_to_grid,
    resize_weights,
)
from .rel_pos import bias_gather_index, relative_position_index, resize_rel_pos_table
from .window import pad_to_multiple, window_partition, window_unpartition

__all__ = [
    'Attention',
    'CrossAttention',
    'WindowAttention',
    'set_fused_attn',
    'use_fused_attn',
    'BlockOptions',
    'MAFBlock',
    'ViTBlock',
    'export_forms',
    'is_exporting',
    'GLD',
    'adaptive_pool_weights',
    'bilinear_weights',
    'global_grid',
    'resize_gld_fc',
    'resize_to_grid',
    'resize_weights',
    'bias_gather_index',
    'relative_position_index',
    'resize_rel_pos_table',
    'pad_to_multiple',
    'window_partition',
    'window_unpartition',
]
