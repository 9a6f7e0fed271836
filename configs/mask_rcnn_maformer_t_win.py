# Mask R-CNN MAFormer-T, 1x, with ViTDet-style window attention in stage 3: 14x14 windows in its 21
# blocks except (0-based) 6, 13, 20, which stay global. Same weights as the global model (the ImageNet checkpoint
# loads unchanged); about half the backbone's FLOPs at detection sizes (README, "Dense-task cost").
_base_ = ['./mask_rcnn_maformer_t.py']

model = dict(backbone=dict(vit_window_size=14, vit_global_blocks=(6, 13, 20)))
