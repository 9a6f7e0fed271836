# Mask R-CNN + FPN, MAFormer-T backbone, COCO 2017, 3x schedule with multi-scale + random-crop training.
_base_ = ['./_base_/mask_rcnn_maformer_fpn_ms_crop_3x_coco.py']

pretrained = 'checkpoints/maformer_t_in1k.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 256, 512]),
)
