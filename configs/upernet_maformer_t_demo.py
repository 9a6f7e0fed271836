# `make demo-seg`: UperNet MAFormer-T trained from scratch on CPU on the generated shapes set
# (`tools/make_demo_data.py ade --class-hues`: each class has its own hue band, a cue a from-scratch model
# learns in minutes; with random colours, shape alone stayed at chance level after 900 iterations).
# Inherits the real config; changes only the data, the schedule and the size (image and crop size, GLD
# reference grid, head widths, batch, no ImageNet weights).
_base_ = ['./upernet_maformer_t_512x512_160k_ade20k.py']

data_root = 'data/demo_ade/'
# The generated label maps hold 0 = background (ignored through reduce_zero_label) and 1..3 = shapes.
dataset_type = 'BaseSegDataset'
metainfo = dict(classes=('circle', 'square', 'triangle'), palette=[(220, 20, 60), (0, 128, 255), (60, 180, 75)])
# 80 px images, trained on 64 px crops: small inputs keep an iteration cheap (about 0.6 s per batch of 8).
scale = (80, 80)
crop_size = (64, 64)

data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    # GLD reference grids at the crop size (16x16 and 8x8): there are no pretrained weights to match.
    backbone=dict(drop_path_rate=0.0, pretrain_img_size=crop_size, init_cfg=None),
    # 128 / 64 channels (512 / 256 in the real config): the 3x3 convolutions at stride 4 dominate the cost.
    decode_head=dict(channels=128, num_classes=3),
    auxiliary_head=dict(channels=64, num_classes=3),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=scale, ratio_range=(0.75, 1.25), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=scale, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True,
)
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False, dataset=dict(**dataset, pipeline=train_pipeline)
)
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(**dataset, pipeline=test_pipeline)
)
test_dataloader = val_dataloader

max_iters = 300
warmup_iters = 30
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=warmup_iters),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=warmup_iters, end=max_iters),
]
optim_wrapper = dict(optimizer=dict(lr=4e-4))
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
auto_scale_lr = dict(base_batch_size=8)
