# Mask R-CNN + FPN with a MAFormer backbone on COCO 2017, 1x schedule (12 epochs), the spec's recipe:
# AdamW 1e-4, weight decay 0.05 (none on norms, relative-position tables and GLD position biases),
# 1000-iteration linear warm-up, lr x0.1 at epochs 8 and 11, 8 GPUs x 2 images.
# The size-specific configs (configs/mask_rcnn_maformer_{t,s,b}.py) set arch, drop path and neck widths.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './maformer_det_schedule_1x.py',  # the recipe (schedule, AdamW, no decay on norms/position terms, hooks)
]

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
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
