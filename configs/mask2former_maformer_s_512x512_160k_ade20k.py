# Mask2Former, MAFormer-S backbone, ADE20K semantic segmentation, 512x512 crops, 160k iterations (8 GPUs x 2 images).
_base_ = ['./_base_/mask2former_maformer_512x512_160k_ade20k.py']

pretrained = 'checkpoints/maformer_s_in1k.pth'
model = dict(
    backbone=dict(arch='small', drop_path_rate=0.4, init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
)
