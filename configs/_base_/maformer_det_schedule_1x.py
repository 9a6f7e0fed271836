# The training recipe shared by every MAFormer detector base (Mask R-CNN, Cascade Mask R-CNN, Faster R-CNN,
# RetinaNet): mmdet's 1x schedule and default runtime with AdamW 1e-4, weight decay 0.05 (none on norms,
# relative-position tables and GLD position biases), 1000-iteration linear warm-up, lr x0.1 at epochs 8 and 11,
# 8 GPUs x 2 images, and the invalid-loss hook. Holds no model: each detector's base adds it.
_base_ = [
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['maformer_mm'], allow_failed_imports=False)
# mmengine's CheckpointHook, but atomic saves, and a resume that deletes nothing the checkpoint names
# (docs/checkpoints_and_safety.md)
default_hooks = dict(checkpoint=dict(type='SafeCheckpointHook'))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'norm': dict(decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'gld.fc.bias': dict(decay_mult=0.0),  # one learned offset per global-token position
        }
    ),
)
# Stop on a NaN/inf loss before a checkpoint with broken weights is written.
custom_hooks = [dict(type='InvalidLossHook')]
# 8 GPUs x 2 images; `tools/train.py --auto-scale-lr` rescales the lr to the batch actually used.
auto_scale_lr = dict(enable=False, base_batch_size=16)
