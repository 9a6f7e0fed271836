# DINO with a MAFormer backbone, five feature scales: as mmdet's DINO-5scale Swin-L config does on top of the
# 4-scale one, all four stages (strides 4 to 32) go through the ChannelMapper, which adds a fifth level (stride 64)
# with a stride-2 3x3 convolution on stage 4; the encoder's self-attention and the decoder's cross-attention
# sample five levels. The size-specific configs (configs/dino_5scale_maformer_{b,l}_{12e,36e}.py) set the widths.
_base_ = ['./dino_maformer_4scale_coco.py']

num_levels = 5
model = dict(
    num_feature_levels=num_levels,
    backbone=dict(out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[96, 192, 384, 768], num_outs=num_levels),
    encoder=dict(layer_cfg=dict(self_attn_cfg=dict(num_levels=num_levels))),
    decoder=dict(layer_cfg=dict(cross_attn_cfg=dict(num_levels=num_levels))),
)
