# Mask R-CNN + FPN with a MAFormer backbone on COCO 2017, 1x schedule (12 epochs), the spec's recipe:
# AdamW 1e-4, weight decay 0.05 (none on norms, relative-position tables and GLD position biases),
# 1000-iteration linear warm-up, lr x0.1 at epochs 8 and 11, 8 GPUs x 2 images.
# The size-specific configs (configs/mask_rcnn_maformer_{t,s,b}.py) set arch, drop path and neck widths.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['maformer_mm'], allow_failed_imports=False)

# ImageNet-1K weights of the backbone (see README: "Pretraining"). Override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH, or model.backbone.init_cfg=None to start from scratch.
pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAFormer',
        arch='small',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        # Global attention in every stage-3/4 block: the paper's architecture, as ImageNet pretraining trains
        # it. The *_win configs use 14x14 windows in most stage-3 blocks instead, at about half the backbone
        # FLOPs (README, "Dense-task cost").
        vit_window_size=0,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={
        'norm': dict(decay_mult=0.),
        'relative_position_bias_table': dict(decay_mult=0.),
        'gld.fc.bias': dict(decay_mult=0.),  # one learned offset per global-token position
    }))
# Stop on a NaN/inf loss before a checkpoint with broken weights is written.
custom_hooks = [dict(type='InvalidLossHook')]
# 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales the lr to the batch actually used.
auto_scale_lr = dict(enable=False, base_batch_size=16)
