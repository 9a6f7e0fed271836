# DINO (4 scales), MAFormer-B, COCO 2017, 12 epochs, fine-tuned with layer-wise lr decay 0.9 in place of the 0.1x
# backbone lr (docs/layer_decay.md).
_base_ = ['../dino_4scale_maformer_b_12e.py', '../_base_/maformer_layer_decay.py']

optim_wrapper = _base_.layer_decay_dino
