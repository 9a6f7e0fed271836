# MAFormer-T fine-tuned from its ImageNet-1K weights for your own classes, in mmpretrain's folder layout:
#   data/my_cls/train/CLASS/*.jpg, data/my_cls/val/CLASS/*.jpg (the folder names are the classes, sorted).
# Set num_classes in BOTH places: Mixup/CutMix (inherited) make their one-hot targets from
# data_preprocessor.num_classes, and a value other than the head's fails inside the loss; tools/train.py
# checks the two before training.
_base_ = ['../maformer_t_in1k.py']

num_classes = 3
model = dict(
    backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='checkpoints/maformer_t_in1k.pth', prefix='backbone.')),
    head=dict(num_classes=num_classes),
)
data_preprocessor = dict(num_classes=num_classes)
dataset = dict(_delete_=True, type='CustomDataset', data_root='data/my_cls')
train_dataloader = dict(batch_size=32, dataset=dict(**dataset, data_prefix='train', pipeline={{_base_.train_pipeline}}))
val_dataloader = dict(batch_size=32, dataset=dict(**dataset, data_prefix='val', pipeline={{_base_.test_pipeline}}))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1,))  # top-5 only means something with more than 5 classes
test_evaluator = val_evaluator

# 30 epochs at lr 1e-4 for batch 32 (8x less data per step than pretraining): 2 warm-up epochs, then cosine.
optim_wrapper = dict(optimizer=dict(lr=1e-4))
auto_scale_lr = dict(base_batch_size=32)
train_cfg = dict(max_epochs=30)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=2, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=True, begin=2),
]
