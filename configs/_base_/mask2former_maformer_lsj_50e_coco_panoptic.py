# Mask2Former with a MAFormer backbone on COCO 2017 panoptic segmentation (80 thing + 53 stuff classes),
# large-scale jittering, 50 epochs (368,750 iterations of 8 GPUs x 2 images): mmdet's own Mask2Former panoptic
# config, with the backbone and optimiser keys of ./mask2former_maformer_lsj_50e_coco.py. Evaluates PQ
# (CocoPanopticMetric) and box/mask AP.
# mmdet's panoptic data loading and PQ evaluation import `panopticapi`, which is not on PyPI under that name
# (mmdet: pip install git+https://github.com/cocodataset/panopticapi.git); see docs/query_heads.md.
# The size-specific configs (configs/mask2former_maformer_{t,s,b}_lsj_50e_coco_panoptic.py) set arch, drop path and
# widths.
_base_ = [
    'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
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
