# Faster R-CNN + FPN with a MAFormer backbone on COCO 2017, 1x schedule (12 epochs), box only: mmdet's Faster R-CNN
# and COCO detection bases with the MAFormer recipe of the Mask R-CNN configs (./maformer_det_schedule_1x.py).
# `tools/test.py CFG CKPT --tta` runs mmdet's flip + multi-scale test (mmdet's DetTTAModel merges boxes only,
# so the mask configs have no TTA).
# The size-specific configs (configs/faster_rcnn_maformer_{t,s,b}.py) set arch, drop path and neck widths.
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './maformer_det_schedule_1x.py',
    'mmdet::retinanet/retinanet_tta.py',  # tta_model and tta_pipeline: 3 scales x flip, boxes merged by NMS
]

# ImageNet-1K weights of the backbone (README, "ImageNet weights").
pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='MAFormer',
        arch='small',
        drop_path_rate=0.3,
        out_indices=(0, 1, 2, 3),
        vit_window_size=0,  # global attention in stages 3-4, as the paper and ImageNet pretraining
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
