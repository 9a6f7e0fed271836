# Cascade Mask R-CNN + FPN with a MAFormer backbone on COCO 2017, 1x schedule (12 epochs): the detector with which
# Swin and CSWin report their strongest COCO results. mmdet's Cascade Mask R-CNN, with the box heads of Swin's and
# ConvNeXt's cascade configs (4 convolutions + 1 fc with SyncBN, GIoU loss on decoded boxes), and the MAFormer
# recipe of the Mask R-CNN configs (./maformer_det_schedule_1x.py).
# The size-specific configs (configs/cascade_mask_rcnn_maformer_{t,s,b}.py) set arch, drop path and neck widths.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './maformer_det_schedule_1x.py',
]

# ImageNet-1K weights of the backbone (README, "ImageNet weights").
pretrained = 'checkpoints/maformer_s_in1k.pth'
# Box-regression target stds of the three stages (IoU thresholds 0.5, 0.6, 0.7), as in mmdet's cascade base.
cascade_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
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
    roi_head=dict(
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=80,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0, 0.0, 0.0, 0.0], target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=dict(type='SyncBN', requires_grad=True),  # plain BN without distributed training
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0),
            )
            for stds in cascade_target_stds
        ]
    ),
)
