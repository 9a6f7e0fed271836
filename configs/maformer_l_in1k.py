# MAFormer-L image classification, ImageNet-1K at 224, 300 epochs, 8 GPUs x 128 images (the spec's recipe).
# 180M parameters: if 128 images do not fit on a GPU, keep the total batch of 1024 (16 GPUs x 64), or add
# --amp, or set model.backbone.with_cp=True (activation checkpointing).
_base_ = ['./_base_/maformer_in1k.py']

# Drop path 0.5: neither Swin-L nor CSWin-L was trained on ImageNet-1K alone; 0.5 is what ConvNeXt-L (198M)
# used for its 1K-only 300-epoch training and what B uses here. More regularisation than B is a possible
# refinement (e.g. 0.6), untested.
model = dict(backbone=dict(arch='large', drop_path_rate=0.5), head=dict(in_channels=1152))
