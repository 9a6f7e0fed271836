# Mask2Former, MAFormer-B backbone, COCO 2017 panoptic segmentation, large-scale jittering, 50 epochs (8 GPUs x 2).
_base_ = ['./_base_/mask2former_maformer_lsj_50e_coco_panoptic.py']

pretrained = 'checkpoints/maformer_b_in1k.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5, init_cfg=dict(checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[96, 192, 384, 768]),
)
