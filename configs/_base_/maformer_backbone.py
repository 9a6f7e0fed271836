# The MAFormer backbone as the query-based heads take it (DINO, Mask2Former), and the optimiser keys that mmdet's
# and mmseg's Swin Mask2Former configs give a transformer backbone, written for MAFormer's parameter names.
# Holds no model: each head's base (./dino_maformer_*.py, ./mask2former_maformer_*.py) inherits mmdet's or mmseg's
# own config, replaces its ResNet with `dict(_base_.maformer_backbone, _delete_=True, ...)` and sets the widths
# that read the backbone (ChannelMapper, pixel decoder). Only these two names are defined here, so that this file
# can sit beside mmdet's and mmseg's configs in a `_base_` list (mmengine refuses a key that two bases define).
maformer_backbone = dict(
    type='MAFormer',
    arch='small',
    drop_path_rate=0.3,
    out_indices=(0, 1, 2, 3),  # every output gets its own LayerNorm (norm0..norm3): list only the levels a head reads
    vit_window_size=0,  # global attention in stages 3-4, as the paper and ImageNet pretraining
    with_cp=False,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/maformer_s_in1k.pth'))

# Mask2Former's optimiser keys, as in mmdet's and mmseg's Swin Mask2Former configs: the backbone learns at 0.1x the
# lr; its norms, relative-position tables and GLD position biases, and the head's query and level embeddings, get no
# weight decay. mmengine applies the longest custom key that a parameter name contains and then skips
# `norm_decay_mult`, so each backbone norm needs a key longer than 'backbone': one per block of the deepest variant
# (2, 4, 32, 2 blocks: small, base, large; tiny's blocks are a subset), as mmdet lists one per Swin block.
maformer_mask2former_custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.patch_embed.norm': dict(lr_mult=0.1, decay_mult=0.0),
    'backbone.norm': dict(lr_mult=0.1, decay_mult=0.0),  # the output norms norm0..norm3
    'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0),
    'gld.fc.bias': dict(lr_mult=0.1, decay_mult=0.0),  # one learned offset per global-token position
    'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
    'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
    'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
    **{f'backbone.stages.{stage}.blocks.{block}.norm': dict(lr_mult=0.1, decay_mult=0.0)  # norm1/norm_q/norm_kv/norm2
       for stage, depth in enumerate((2, 4, 32, 2)) for block in range(depth)},
    **{f'backbone.stages.{stage}.downsample.norm': dict(lr_mult=0.1, decay_mult=0.0) for stage in (1, 2, 3)},
}
