# DINO (5 scales: stages 1-4 + one extra level), MAFormer-B backbone, COCO 2017, 12 epochs (8 GPUs x 2 images).
_base_ = ['./_base_/dino_maformer_5scale_coco.py']

pretrained = 'checkpoints/maformer_b_in1k.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.5, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[96, 192, 384, 768]),
)
