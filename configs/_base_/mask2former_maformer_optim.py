# Mask2Former's optimiser keys for a MAFormer backbone, shared by the Mask2Former bases (ADE20K, COCO instance and
# panoptic: `_base_.maformer_mask2former_custom_keys`; the only name defined here, so that this file can sit beside
# mmdet's and mmseg's configs in a `_base_` list). As in mmdet's and mmseg's Swin Mask2Former configs: the backbone
# learns at 0.1x the lr; its norms, relative-position tables and GLD position biases, and the head's query and level
# embeddings, get no weight decay. mmengine applies the longest custom key that a parameter name contains and then
# skips `norm_decay_mult`, so each backbone norm needs a key longer than 'backbone': one per block of the deepest
# variant (2, 4, 32, 2 blocks: small, base, large; tiny's blocks are a subset), as mmdet lists one per Swin block.
maformer_mask2former_custom_keys = {
    'backbone': dict(lr_mult=0.1, decay_mult=1.0),
    'backbone.patch_embed.norm': dict(lr_mult=0.1, decay_mult=0.0),
    'backbone.norm': dict(lr_mult=0.1, decay_mult=0.0),  # the output norms norm0..norm3
    'relative_position_bias_table': dict(lr_mult=0.1, decay_mult=0.0),
    'gld.fc.bias': dict(lr_mult=0.1, decay_mult=0.0),  # one learned offset per global-token position
    'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
    'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
    'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
    **{
        f'backbone.stages.{stage}.blocks.{block}.norm': dict(lr_mult=0.1, decay_mult=0.0)  # norm1/norm_q/norm_kv/norm2
        for stage, depth in enumerate((2, 4, 32, 2))
        for block in range(depth)
    },
    **{f'backbone.stages.{stage}.downsample.norm': dict(lr_mult=0.1, decay_mult=0.0) for stage in (1, 2, 3)},
}
