# Mask2Former, MAFormer-T, ADE20K semantic segmentation, 512x512 crops, 160k iterations, fine-tuned with layer-wise lr
# decay 0.9 in place of the 0.1x backbone lr (docs/layer_decay.md).
_base_ = ['../mask2former_maformer_t_512x512_160k_ade20k.py', '../_base_/maformer_layer_decay.py']

optim_wrapper = _base_.layer_decay_mask2former
