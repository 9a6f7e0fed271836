# MAFormer-S image classification, ImageNet-1K at 224, 300 epochs, 8 GPUs x 128 images (the spec's recipe).
# Its checkpoint (EMA weights) is what configs/mask_rcnn_maformer_s.py and
# configs/upernet_maformer_s_512x512_160k_ade20k.py read as checkpoints/maformer_s_in1k.pth.
_base_ = ['./_base_/maformer_in1k.py']

# Drop path 0.4: the widths and depths are CSWin-S's, and 0.4 is CSWin-S's ImageNet-1K value (Swin-S: 0.3).
# (The COCO fine-tuning config uses 0.3.)
model = dict(backbone=dict(arch='small', drop_path_rate=0.4), head=dict(in_channels=512))
