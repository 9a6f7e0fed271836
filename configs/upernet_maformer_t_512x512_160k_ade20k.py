# UperNet, MAFormer-T backbone, ADE20K, 512x512 crops, 160k iterations (8 GPUs x 2 images).
_base_ = ['./_base_/upernet_maformer_512x512_160k_ade20k.py']

pretrained = 'checkpoints/maformer_t_in1k.pth'
model = dict(
    backbone=dict(arch='tiny', drop_path_rate=0.2, init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[64, 128, 256, 512]),
    auxiliary_head=dict(in_channels=256),
)
