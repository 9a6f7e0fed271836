# DINO (5 scales: stages 1-4 + one extra level), MAFormer-L backbone, COCO 2017, 12 epochs (8 GPUs x 2 images).
_base_ = ['./_base_/dino_maformer_5scale_coco.py']

pretrained = 'checkpoints/maformer_l_in1k.pth'
# Activation checkpointing as in mmdet's Swin-L DINO config (a 180M-parameter backbone at up to 1333x800); drop path
# 0.5 as B here and as MAFormer-L's ImageNet config (a choice of this project: no L detection run exists to tune it).
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.5, with_cp=True, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[144, 288, 576, 1152]),
)
