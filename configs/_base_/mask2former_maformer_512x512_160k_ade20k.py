# Mask2Former with a MAFormer backbone on ADE20K semantic segmentation, 512x512 crops, 160k iterations: mmseg's own
# Mask2Former config (mmdet's MSDeformAttn pixel decoder over strides 8-32 with the stride-4 map for the masks, 100
# queries, 9 masked-attention decoder layers, AdamW lr 1e-4 with weight decay 0.05 and gradient clipping at 0.01,
# poly decay (power 0.9), 8 GPUs x 2 images), with the backbone replaced and the optimiser keys of mmseg's Swin
# Mask2Former configs (backbone at 0.1x the lr; no weight decay on its norms and position terms nor on the
# query/level embeddings; ./mask2former_maformer_optim.py).
# The pixel decoder reads all four backbone levels, each through the backbone's own output LayerNorm (norm0..norm3).
# mmcv's MultiScaleDeformableAttention runs its PyTorch path (grid_sample) on CPU tensors and mmcv's CUDA kernel on
# CUDA tensors; the kernel needs mmcv built with CUDA ops (docs/query_heads.md).
# The size-specific configs (configs/mask2former_maformer_{t,s}_512x512_160k_ade20k.py,
# configs/mask2former_maformer_b_640x640_160k_ade20k.py) set arch, drop path and widths.
_base_ = [
    'mmseg::mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    './maformer_backbone.py',
    './mask2former_maformer_optim.py',
]
# mmdet.models: the pixel decoder, losses and matcher of mmseg's Mask2FormerHead are mmdet's.
custom_imports = dict(imports=['maformer_mm', 'mmdet.models'], allow_failed_imports=False)
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
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.maformer_mask2former_custom_keys, norm_decay_mult=0.0))
# Stop on a NaN/inf loss before a checkpoint with broken weights is written.
custom_hooks = [dict(type='InvalidLossHook')]
