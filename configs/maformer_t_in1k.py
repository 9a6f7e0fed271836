# MAFormer-T image classification, ImageNet-1K at 224, 300 epochs, 8 GPUs x 128 images (the spec's recipe).
# Its checkpoint (EMA weights) is what configs/mask_rcnn_maformer_t.py and
# configs/upernet_maformer_t_512x512_160k_ade20k.py read as checkpoints/maformer_t_in1k.pth.
_base_ = ['./_base_/maformer_in1k.py']

# Drop path 0.2: the widths and depths are CSWin-T's, and 0.2 is CSWin-T's ImageNet-1K value (Swin-T's too).
# (The COCO fine-tuning config uses 0.1.)
model = dict(backbone=dict(arch='tiny', drop_path_rate=0.2), head=dict(in_channels=512))
