"""Building blocks of MAFormer."""
from .attention import Attention, CrossAttention, WindowAttention, set_fused_attn, use_fused_attn
from .blocks import MAFBlock, ViTBlock
from .gld import GLD, global_grid, resize_gld_fc, resize_to_grid
from .rel_pos import relative_position_index, resize_rel_pos_table
from .window import pad_to_multiple, window_partition, window_unpartition

__all__ = [
    'Attention', 'CrossAttention', 'WindowAttention', 'set_fused_attn', 'use_fused_attn', 'MAFBlock', 'ViTBlock',
    'GLD', 'global_grid', 'resize_gld_fc', 'resize_to_grid', 'relative_position_index', 'resize_rel_pos_table',
    'pad_to_multiple', 'window_partition', 'window_unpartition'
]
