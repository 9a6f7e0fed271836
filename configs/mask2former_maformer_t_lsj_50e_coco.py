# Mask2Former, MAFormer-T backbone, COCO 2017 instance segmentation, large-scale jittering, 50 epochs (8 GPUs x 2).
_base_ = ['./_base_/mask2former_maformer_lsj_50e_coco.py']

pretrained = 'checkpoints/maformer_t_in1k.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.1, init_cfg=dict(checkpoint=pretrained)),
    panoptic_head=dict(in_channels=[64, 128, 256, 512]),
)
