# The 3x recipe's training pipeline, shared by the Mask R-CNN and Cascade Mask R-CNN 3x bases: multi-scale
# training (short side 480..800 step 32, long side <= 1333) with the DETR-style random-crop branch, as mmdet's Swin
# and ConvNeXt 3x configs. Only this one name is defined here, so that this file can sit beside a detector's base
# in a `_base_` list (mmengine refuses a key that two bases define).
ms_crop_3x_train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=[(1333, short) for short in range(480, 801, 32)], keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(4200, 400), (4200, 500), (4200, 600)], keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600), allow_negative_crop=True),
                dict(
                    type='RandomChoiceResize', scales=[(1333, short) for short in range(480, 801, 32)], keep_ratio=True
                ),
            ],
        ],
    ),
    dict(type='PackDetInputs'),
]
