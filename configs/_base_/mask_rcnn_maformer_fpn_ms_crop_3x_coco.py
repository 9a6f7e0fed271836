# The 3x recipe: 36 epochs, multi-scale training with the DETR-style random crop branch
# (./maformer_ms_crop_3x.py), as mmdet's Swin 3x config; lr x0.1 at epochs 27 and 33.
_base_ = ['./mask_rcnn_maformer_fpn_1x_coco.py', './maformer_ms_crop_3x.py']

train_dataloader = dict(dataset=dict(pipeline={{_base_.ms_crop_3x_train_pipeline}}))

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
