# Mask2Former with a MAFormer backbone on COCO 2017 instance segmentation, large-scale jittering (1024x1024 crops of
# images rescaled by 0.1..2.0), 50 epochs (368,750 iterations of 8 GPUs x 2 images): mmdet's own Mask2Former
# instance config (MSDeformAttn pixel decoder, 100 queries, 9 masked-attention decoder layers, AdamW lr 1e-4 with
# weight decay 0.05 and gradient clipping at 0.01, lr x0.1 at iterations 327,778 and 355,092), with the backbone
# replaced and the optimiser keys of mmdet's Swin Mask2Former configs (backbone at 0.1x the lr; no weight decay on
# its norms and position terms nor on the query/level embeddings; ./mask2former_maformer_optim.py).
# The pixel decoder reads all four backbone levels, each through the backbone's own output LayerNorm (norm0..norm3).
# Classes live in panoptic_head.num_things_classes (+ num_stuff_classes = 0), panoptic_fusion_head and the
# num_classes + 1 entries of panoptic_head.loss_cls.class_weight; `tools/train.py --data-root` sets all of them.
# mmcv's MultiScaleDeformableAttention runs its PyTorch path (grid_sample) on CPU tensors and mmcv's CUDA kernel on
# CUDA tensors; the kernel needs mmcv built with CUDA ops (docs/query_heads.md).
# The size-specific configs (configs/mask2former_maformer_{t,s,b}_lsj_50e_coco.py) set arch, drop path and widths.
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    './maformer_backbone.py',
    './mask2former_maformer_optim.py',
]
custom_imports = dict(imports=['maformer_mm'], allow_failed_imports=False)
# mmengine's CheckpointHook, but atomic saves, and a resume that deletes nothing the checkpoint names
# (docs/checkpoints_and_safety.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))

# ImageNet-1K weights of the backbone (docs/query_heads.md). Override with
# --cfg-options model.backbone.init_cfg.checkpoint=PATH, or model.backbone.init_cfg=None to start from scratch.
pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(_base_.maformer_backbone, _delete_=True, init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys=_base_.maformer_mask2former_custom_keys, norm_decay_mult=0.0))
# Stop on a NaN/inf loss before a checkpoint with broken weights is written.
custom_hooks = [dict(type='InvalidLossHook')]
