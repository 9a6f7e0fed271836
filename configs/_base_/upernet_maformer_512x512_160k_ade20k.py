# UperNet with a MAFormer backbone on ADE20K, 512x512 crops, 160k iterations, the spec's recipe:
# AdamW 6e-5, betas (0.9, 0.999), weight decay 0.01 (none on norms, relative-position tables and GLD
# position biases), 1500-iteration linear warm-up then poly decay (power 1) to 0, 8 GPUs x 2 images.
# Testing resizes to 2048x512 (mmseg's ADE20K base); `tools/test.py --tta` uses its multi-scale + flip.
# The size-specific configs (configs/upernet_maformer_{t,s,b}_512x512_160k_ade20k.py) set arch, drop path
# and head widths.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
custom_imports = dict(imports=['maformer_mm'], allow_failed_imports=False)
# mmengine's CheckpointHook, but atomic saves, and a resume that deletes nothing the checkpoint names
# (docs/checkpoints_and_safety.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
# ImageNet-1K weights of the backbone (see README: "Pretraining"). Override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH, or model.backbone.init_cfg=None to start from scratch.
pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='MAFormer',
        arch='small',
        drop_path_rate=0.4,
        out_indices=(0, 1, 2, 3),
        # Global attention in every stage-3/4 block: the paper's architecture, as ImageNet pretraining trains
        # it. The *_win configs use 14x14 windows in most stage-3 blocks instead, at about half the backbone
        # FLOPs (README, "Dense-task cost").
        vit_window_size=0,
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    decode_head=dict(in_channels=[64, 128, 256, 512], num_classes=150),
    auxiliary_head=dict(in_channels=256, num_classes=150),
)

max_iters = 160000
warmup_iters = 1500
train_cfg = dict(max_iters=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'gld.fc.bias': dict(decay_mult=0.0),  # one learned offset per global-token position
        }
    ),
)
# Stop on a NaN/inf loss before a checkpoint with broken weights is written.
custom_hooks = [dict(type='InvalidLossHook')]
# 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales the lr to the batch actually used.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
