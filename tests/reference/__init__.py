"""An independent reference of MAFormer's equations, for the tests only.

Written from the spec's block equations (shared/docs/maformer-spec.md) and the README's "Decisions where the
paper is silent", in the plainest form: explicit softmax and LayerNorm, a loop over heads, a loop over
windows, resampling as matrices built from the sampling rules. It imports nothing from `maformer_mm`; it
reads weights from a state dict by name, so the tests can give the package's modules and the reference the
same weights. Slow, and meant to be: it runs on small maps in float64.
"""

from .blocks import (
    batched,
    cross_attention,
    gld,
    global_grid,
    maf_block,
    multi_head_attention,
    patch_embed,
    patch_merging,
    relative_position_bias,
    self_attention,
    vit_block,
    window_attention,
)
from .model import maformer, resize_gld_fc, resize_rel_pos_table
from .ops import area_matrix, bicubic, bilinear, cubic_matrix, layer_norm, linear_matrix, softmax
from .weights import randomize_

__all__ = [
    'batched',
    'cross_attention',
    'gld',
    'global_grid',
    'maf_block',
    'multi_head_attention',
    'patch_embed',
    'patch_merging',
    'relative_position_bias',
    'self_attention',
    'vit_block',
    'window_attention',
    'maformer',
    'resize_gld_fc',
    'resize_rel_pos_table',
    'area_matrix',
    'bicubic',
    'bilinear',
    'cubic_matrix',
    'layer_norm',
    'linear_matrix',
    'softmax',
    'randomize_',
]
