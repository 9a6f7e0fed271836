# RetinaNet + FPN (stages 2-4 into the FPN), MAFormer-S backbone, COCO 2017, 1x schedule (12 epochs, 8 GPUs x 2).
_base_ = ['./_base_/retinanet_maformer_fpn_1x_coco.py']

pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)),
    neck=dict(in_channels=[128, 256, 512]),
)
