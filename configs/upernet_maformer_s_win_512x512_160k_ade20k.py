# UperNet MAFormer-S on ADE20K with ViTDet-style window attention in stage 3: 14x14 windows in its 32
# blocks except (0-based) 7, 15, 23, 31, which stay global. Same weights as the global model (the ImageNet checkpoint
# loads unchanged); less backbone compute at 2048x512 testing (README, "Dense-task cost").
_base_ = ['./upernet_maformer_s_512x512_160k_ade20k.py']

model = dict(backbone=dict(vit_window_size=14, vit_global_blocks=(7, 15, 23, 31)))
