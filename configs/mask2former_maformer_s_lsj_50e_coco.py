# Mask2Former, MAFormer-S backbone, COCO 2017 instance segmentation, large-scale jittering, 50 epochs (8 GPUs x 2).
_base_ = ['./_base_/mask2former_maformer_lsj_50e_coco.py']

pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.3, init_cfg=dict(checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]),
)
