# DINO (4 scales: stages 2-4 + one extra level), MAFormer-T backbone, COCO 2017, 12 epochs (8 GPUs x 2 images).
_base_ = ['./_base_/dino_maformer_4scale_coco.py']

pretrained = 'checkpoints/maformer_t_in1k.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]),
)
