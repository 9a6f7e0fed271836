# Layer-wise learning-rate decay for fine-tuning MAFormer, as the anchors' detection and segmentation recipes do
# (docs/layer_decay.md cites each number). Each name below is one `optim_wrapper` fragment that a config in
# configs/layer_decay/ merges into the optimiser of the config it inherits: our constructor (maformer_mm's
# LayerDecayOptimWrapperConstructor, which asks MAFormer.get_layer_depth; the number of depths comes from the arch),
# the lr, and a paramwise_cfg that replaces the inherited one. A parameter at depth d of N learns at
# lr * layer_decay_rate ** (N - 1 - d): the neck and heads at the full lr. Only these names are defined here, so
# that this file can sit beside another config in a `_base_` list.
# No weight decay on any 1-D parameter (every norm, every bias, the GLD FC bias) nor on the relative-position tables,
# as the anchors' constructors exempt them (mmdet's and mmseg's, InternImage's, ViT-Adapter's, mmpretrain's Swin).
layer_decay_keys = {'relative_position_bias_table': dict(decay_mult=0.0)}
# Mask R-CNN 3x: mmdet's ConvNeXt-T Mask R-CNN 3x (0.95, lr 1e-4, weight decay 0.05).
layer_decay_mask_rcnn = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.95, flat_decay_mult=0.0, custom_keys=layer_decay_keys),
)
# Cascade Mask R-CNN 3x: InternImage-L's Cascade 3x (0.9 per block, lr 2e-4, weight decay 0.05); mmdet's ConvNeXt-T/S
# Cascade 3x also train at lr 2e-4 (with 0.7 over their coarser layer ids).
layer_decay_cascade = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=2e-4, weight_decay=0.05),
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.9, flat_decay_mult=0.0, custom_keys=layer_decay_keys),
)
# DINO: InternImage-T's layer-wise DINO (0.9 in place of mmdet's 0.1x backbone lr; lr 1e-4, weight decay 1e-4 and
# gradient clipping at 0.1 as mmdet's DINO).
layer_decay_dino = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=1e-4),
    paramwise_cfg=dict(_delete_=True, layer_decay_rate=0.9, flat_decay_mult=0.0, custom_keys=layer_decay_keys),
)
# Mask2Former: ViT-Adapter's Mask2Former on ADE20K (0.9, weight decay 0.05), at mmseg's Mask2Former lr 1e-4 in place
# of its 0.1x backbone lr; the query and level embeddings keep no weight decay (mmseg's Swin Mask2Former keys).
layer_decay_mask2former = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=0.9,
        flat_decay_mult=0.0,
        custom_keys=dict(
            layer_decay_keys,
            query_embed=dict(decay_mult=0.0),
            query_feat=dict(decay_mult=0.0),
            level_embed=dict(decay_mult=0.0),
        ),
    ),
)
# UperNet: mmseg's ConvNeXt-T/S/B UperNet (stage-wise 0.9, lr 1e-4, weight decay 0.05).
layer_decay_upernet = dict(
    constructor='LayerDecayOptimWrapperConstructor',
    optimizer=dict(lr=1e-4, weight_decay=0.05),
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=0.9,
        decay_type='stage_wise',
        flat_decay_mult=0.0,
        custom_keys=layer_decay_keys,
    ),
)
