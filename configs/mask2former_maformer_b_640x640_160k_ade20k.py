# Mask2Former, MAFormer-B backbone, ADE20K semantic segmentation, 640x640 crops, 160k iterations (8 GPUs x 2
# images): the 512x512 recipe at the crop size and scales of mmseg's Swin-B Mask2Former config (training: short
# side 320..1280, long side <= 2560, 640x640 crops; testing: resized to 2560x640, mmseg's ade20k_640x640 base).
_base_ = ['./_base_/mask2former_maformer_512x512_160k_ade20k.py']

pretrained = 'checkpoints/maformer_b_in1k.pth'
crop_size = (640, 640)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(arch='base', drop_path_rate=0.6, init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(in_channels=[96, 192, 384, 768]),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(
        type='RandomChoiceResize',
        scales=[int(640 * x * 0.1) for x in range(5, 21)],
        resize_type='ResizeShortestEdge',
        max_size=2560,
    ),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
