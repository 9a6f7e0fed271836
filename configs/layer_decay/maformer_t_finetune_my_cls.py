# MAFormer-T fine-tuned for your own classes (../examples/maformer_t_finetune_my_cls.py) with layer-wise lr decay 0.9
# through mmpretrain's own constructor, which asks the classifier, and the classifier its backbone, for
# get_layer_depth: the rate and the no-decay keys of mmpretrain's Swin fine-tuning recipe (SimMIM), at the example's
# lr (docs/layer_decay.md).
_base_ = ['../examples/maformer_t_finetune_my_cls.py']

optim_wrapper = dict(
    constructor='LearningRateDecayOptimWrapperConstructor',
    paramwise_cfg=dict(
        _delete_=True,
        layer_decay_rate=0.9,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'.relative_position_bias_table': dict(decay_mult=0.0)},
    ),
)
