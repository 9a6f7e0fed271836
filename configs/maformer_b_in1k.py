# MAFormer-B image classification, ImageNet-1K at 224, 300 epochs, 8 GPUs x 128 images (the spec's recipe).
# Its checkpoint (EMA weights) is what configs/mask_rcnn_maformer_b.py and
# configs/upernet_maformer_b_512x512_160k_ade20k.py read as checkpoints/maformer_b_in1k.pth.
_base_ = ['./_base_/maformer_in1k.py']

# Drop path 0.5: the widths and depths are CSWin-B's, and 0.5 is CSWin-B's ImageNet-1K value (Swin-B's too).
model = dict(backbone=dict(arch='base', drop_path_rate=0.5), head=dict(in_channels=768))
