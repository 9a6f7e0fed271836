# DINO (4 scales), MAFormer-B backbone, COCO 2017, 36 epochs: the 12-epoch config with mmdet's DINO-4scale
# 36-epoch schedule (lr x0.1 at epoch 30).
_base_ = ['./dino_4scale_maformer_b_12e.py']

max_epochs = 36
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[30], gamma=0.1)]
