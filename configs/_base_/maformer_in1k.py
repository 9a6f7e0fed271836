# MAFormer image classification on ImageNet-1K at 224x224 with mmpretrain, the spec's recipe: 300 epochs,
# AdamW lr 1e-3 for batch 1024 (8 GPUs x 128), weight decay 0.05 (none on norms, relative-position tables and
# GLD position biases), 20 linear warm-up epochs then cosine, RandAugment m9, Mixup 0.8 / CutMix 1.0,
# random erasing 0.25, label smoothing 0.1, EMA of the weights.
# The size-specific configs (configs/maformer_{t,s,b,l}_in1k.py) set arch, drop path and head width.
# Data: mmpretrain's ImageNet layout under data/imagenet (train/CLASS/*.JPEG and val/ with meta/val.txt, or
# val/CLASS/*.JPEG). The checkpoints keep the EMA weights under `state_dict`; they initialise the detection and
# segmentation backbones as they are (configs/mask_rcnn_maformer_*.py, configs/upernet_maformer_*.py).
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
]
custom_imports = dict(imports=['maformer_mm'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='MAFormer',
        arch='tiny',
        drop_path_rate=0.2,
        pretrain_img_size=224,  # sets the GLD reference grids (56x56, 28x28) that dense tasks resize to
        # Only the last stage's norm is built: every parameter gets a gradient (no unused parameters under DDP).
        # Detection/segmentation backbones add norm0..norm2, which start from their init.
        out_indices=(3,),
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.0),
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        cal_acc=False,
    ),
    # One of the two per batch (equal odds), as timm's mixup 0.8 / cutmix 1.0 with switch probability 0.5.
    train_cfg=dict(augments=[dict(type='Mixup', alpha=0.8), dict(type='CutMix', alpha=1.0)]),
)

# The base dataset config already has the recipe's train pipeline: RandomResizedCrop 224 (bicubic), flip,
# RandAugment (2 ops, magnitude 9, std 0.5, timm's 'increasing' policies), RandomErasing p=0.25; and a
# 256-short-side resize + 224 centre crop for validation. 8 GPUs x 128 images = 1024.
train_dataloader = dict(batch_size=128, num_workers=8, persistent_workers=True)
val_dataloader = dict(batch_size=128, num_workers=8, persistent_workers=True)
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    # Gradient clipping at norm 5, as in Swin's ImageNet recipe (not in the spec; a safeguard for 37-block models).
    clip_grad=dict(max_norm=5.0),
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,  # every LayerNorm (blocks, patch embedding, patch merging, output norm)
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.0),
            'gld.fc.bias': dict(decay_mult=0.0),  # one learned offset per global-token position
        },
    ),
)

# Warm-up over 20 epochs (per iteration) from lr x 1e-3, then cosine to 1e-5 at epoch 300 (from the base).
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=20, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=20),
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)
# `tools/train.py --auto-scale-lr` rescales the lr to the batch actually used.
auto_scale_lr = dict(enable=False, base_batch_size=1024)

# EMA of the weights, decay 0.99992 per iteration: CSWin's value at batch 1024 (its T/S runs used 0.99984 at batch
# 2048), an averaging horizon of about 10 epochs. Validation runs on the EMA weights, and the checkpoints store
# them under `state_dict` (the raw weights go to `ema_state_dict`), so downstream configs read the EMA model.
custom_hooks = [dict(type='EMAHook', momentum=8e-5, priority='ABOVE_NORMAL'), dict(type='InvalidLossHook')]
# mmengine's CheckpointHook, but atomic saves and a resume that deletes nothing the checkpoint names
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=3))
