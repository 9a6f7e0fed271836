# DINO (5 scales), MAFormer-L backbone, COCO 2017, 36 epochs: the 12-epoch config with the schedule of mmdet's
# DINO-5scale Swin-L 36-epoch config (lr x0.1 at epochs 27 and 33).
_base_ = ['./dino_5scale_maformer_l_12e.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1)]
