# RetinaNet + FPN with a MAFormer backbone on COCO 2017, 1x schedule (12 epochs): mmdet's RetinaNet and COCO
# detection bases with the MAFormer recipe of the Mask R-CNN configs (./maformer_det_schedule_1x.py).
# As in mmdet's RetinaNet Swin config, the FPN starts at stride 8 from the backbone's stages 2-4 (out_indices
# (1, 2, 3), start_level 0): every output the backbone returns gets its own LayerNorm, so an unused stride-4
# output would leave parameters without gradients. P6 comes from a stride-2 convolution on stage 4's output
# (add_extra_convs='on_input'), P7 from one on P6: five levels, strides 8 to 128.
# The size-specific configs (configs/retinanet_maformer_{t,s,b}.py) set arch, drop path and neck widths.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
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
        out_indices=(1, 2, 3),
        vit_window_size=0,  # global attention in stages 3-4, as the paper and ImageNet pretraining
        with_cp=False,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained),
    ),
    neck=dict(in_channels=[128, 256, 512], start_level=0, num_outs=5),
)
