# The MAFormer backbone as the query-based heads take it (DINO, Mask2Former). Holds no model: each head's base
# (./dino_maformer_*.py, ./mask2former_maformer_*.py) inherits mmdet's or mmseg's own config, replaces its ResNet
# with `dict(_base_.maformer_backbone, _delete_=True, ...)` and sets the widths that read the backbone
# (ChannelMapper, pixel decoder). Only this one name is defined here, so that this file can sit beside mmdet's and
# mmseg's configs in a `_base_` list (mmengine refuses a key that two bases define).
maformer_backbone = dict(
    type='MAFormer',
    arch='small',
    drop_path_rate=0.3,
    out_indices=(0, 1, 2, 3),  # every output gets its own LayerNorm (norm0..norm3): list only the levels a head reads
    vit_window_size=0,  # global attention in stages 3-4, as the paper and ImageNet pretraining
    with_cp=False,
    init_cfg=dict(type='Pretrained', checkpoint='checkpoints/maformer_s_in1k.pth'),
)
