# UperNet, MAFormer-B, ADE20K, 512x512 crops, 160k iterations, fine-tuned with stage-wise lr decay 0.9 at lr 1e-4
# (docs/layer_decay.md).
_base_ = ['../upernet_maformer_b_512x512_160k_ade20k.py', '../_base_/maformer_layer_decay.py']

optim_wrapper = _base_.layer_decay_upernet
