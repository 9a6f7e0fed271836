# Cascade Mask R-CNN + FPN, MAFormer-B, COCO 2017, 3x schedule, fine-tuned with layer-wise lr decay 0.9 at lr 2e-4
# (docs/layer_decay.md).
_base_ = ['../cascade_mask_rcnn_maformer_b_3x.py', '../_base_/maformer_layer_decay.py']

optim_wrapper = _base_.layer_decay_cascade
