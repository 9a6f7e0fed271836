# DINO with a MAFormer backbone on COCO 2017, four feature scales, 12 epochs: mmdet's own DINO-4scale config (the
# deformable-attention encoder and decoder, 900 queries, contrastive denoising, multi-scale + random-crop training,
# AdamW lr 1e-4 with weight decay 1e-4 and gradient clipping at 0.1, lr x0.1 at epoch 11, 8 GPUs x 2 images), with
# the backbone replaced as mmdet's Swin-L DINO config replaces it, and the optimiser setting that config (inheriting
# the R-50 one) gives the backbone: 0.1x the lr.
# Four scales as in mmdet's 4-scale config: stages 2-4 (strides 8, 16, 32) through the ChannelMapper (1x1 convs
# to 256 channels + GroupNorm), and a fourth level (stride 64) that the mapper computes from stage 4 with a
# stride-2 3x3 convolution. The 5-scale base (./dino_maformer_5scale_coco.py) adds stage 1.
# mmcv's MultiScaleDeformableAttention runs its PyTorch path (grid_sample) on CPU tensors and mmcv's CUDA kernel
# on CUDA tensors; the kernel needs mmcv built with CUDA ops (docs/query_heads.md).
# The size-specific configs (configs/dino_4scale_maformer_{t,s,b}_{12e,36e}.py) set arch, drop path and widths.
_base_ = [
    'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    './maformer_backbone.py',
]
custom_imports = dict(imports=['maformer_mm'], allow_failed_imports=False)
# mmengine's CheckpointHook, but atomic saves, and a resume that deletes nothing the checkpoint names
# (docs/checkpoints_and_safety.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))

# ImageNet-1K weights of the backbone (docs/query_heads.md). Override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH, or model.backbone.init_cfg=None to start from scratch.
pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(
        _base_.maformer_backbone,
        _delete_=True,
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[128, 256, 512]),
)
# Stop on a NaN/inf loss before a checkpoint with broken weights is written.
custom_hooks = [dict(type='InvalidLossHook')]
