"""ImageNet-1K classification with mmpretrain: the registry finds MAFormer, the four configs encode the spec's
recipe and build, their optimizer leaves norms and position terms undecayed, and a loss step reaches every
parameter (nothing unused under DDP)."""

import contextlib
from pathlib import Path
from unittest import mock

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401  (registers MAFormer)
from maformer_mm.models import MAFormer
from tests.helpers import MIN_ARCH

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'
SIZES = {'t': ('tiny', 0.2, 512), 's': ('small', 0.4, 512), 'b': ('base', 0.5, 768), 'l': ('large', 0.5, 1152)}


def load(size: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / f'maformer_{size}_in1k.py'))


@contextlib.contextmanager
def skip_default_init():
    """Builds without torch's default (kaiming/uniform) parameter init: the large model builds in a third of the
    time, and these tests look at structure, not values."""
    keep = lambda tensor, *args, **kwargs: tensor  # noqa: E731
    with mock.patch.object(torch.nn.init, 'kaiming_uniform_', keep), mock.patch.object(torch.nn.init, 'uniform_', keep):
        yield


def small_classifier(num_classes: int = 1000):
    """The tiny config's classifier with a shrunk backbone, built from mmpretrain's registry as the Runner does."""
    from mmpretrain.registry import MODELS

    cfg = load('t')
    init_default_scope('mmpretrain')
    cfg.model.backbone.arch = MIN_ARCH
    cfg.model.backbone.pretrain_img_size = 64
    cfg.model.head.in_channels = 128
    cfg.model.head.num_classes = num_classes
    cfg.model.setdefault('data_preprocessor', dict(cfg.data_preprocessor, num_classes=num_classes))
    model = MODELS.build(cfg.model)
    model.init_weights()
    return cfg, model


def test_mmpretrain_registry_builds_maformer(tiny_cfg):
    from mmpretrain.registry import MODELS

    model = MODELS.build(dict(type='MAFormer', **tiny_cfg))
    assert type(model) is MAFormer


def test_all_classification_configs_are_found():
    assert {p.name for p in CONFIG_DIR.glob('maformer_*_in1k.py')} == {f'maformer_{s}_in1k.py' for s in SIZES}


@pytest.mark.parametrize('size', list(SIZES))
def test_classification_config_encodes_the_recipe_and_builds(size):
    from mmpretrain.registry import MODELS

    arch, drop_path, channels = SIZES[size]
    cfg = load(size)
    assert cfg.custom_imports == dict(imports=['maformer_mm'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain'
    model_cfg = cfg.model
    assert model_cfg.type == 'ImageClassifier' and model_cfg.neck.type == 'GlobalAveragePooling'
    backbone = model_cfg.backbone
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == ('MAFormer', arch, drop_path)
    assert tuple(backbone.out_indices) == (3,) and backbone.pretrain_img_size == 224
    head = model_cfg.head
    assert (head.type, head.num_classes, head.in_channels) == ('LinearClsHead', 1000, channels)
    assert head.loss == dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert [dict(a) for a in model_cfg.train_cfg.augments] == [
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0),
    ]
    # Optimizer and schedule: AdamW 1e-3 for 8 x 128 = 1024, wd 0.05, 20 warm-up epochs, cosine to 300.
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.weight_decay) == ('AdamW', 1e-3, 0.05)
    assert cfg.auto_scale_lr.base_batch_size == 1024 == 8 * cfg.train_dataloader.batch_size
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.end, warmup.convert_to_iter_based) == ('LinearLR', 20, True)
    assert (cosine.type, cosine.begin) == ('CosineAnnealingLR', 20)
    assert cfg.train_cfg.max_epochs == 300
    assert [h.type for h in cfg.custom_hooks] == ['EMAHook', 'InvalidLossHook']
    # Data: ImageNet at data/imagenet, RandomResizedCrop 224, RandAugment m9, RandomErasing 0.25.
    dataset = cfg.train_dataloader.dataset
    assert (dataset.type, dataset.data_root, dataset.split) == ('ImageNet', 'data/imagenet', 'train')
    steps = {t.type: t for t in dataset.pipeline}
    assert steps['RandomResizedCrop'].scale == 224
    assert steps['RandAugment'].magnitude_level == 9
    assert steps['RandomErasing'].erase_prob == 0.25
    assert cfg.val_dataloader.dataset.split == 'val'

    init_default_scope('mmpretrain')
    model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    with skip_default_init():
        model = MODELS.build(model_cfg)
    assert isinstance(model.backbone, MAFormer)
    assert model.backbone.arch_settings == MAFormer.arch_zoo[arch]
    assert model.backbone.out_channels == (channels,) == (model.head.fc.in_features,)
    assert model.head.fc.out_features == 1000
    assert [type(a).__name__ for a in model.data_preprocessor.batch_augments.augments] == ['Mixup', 'CutMix']


def test_no_weight_decay_on_norms_and_position_terms():
    from mmengine.optim import build_optim_wrapper

    cfg, model = small_classifier()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert optim_wrapper.clip_grad_kwargs == dict(max_norm=5.0)
    decay = {id(p): g['weight_decay'] for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    names = [n for n, _ in model.named_parameters()]
    assert any('relative_position_bias_table' in n for n in names) and any(n.endswith('gld.fc.bias') for n in names)
    for name, param in model.named_parameters():
        no_decay = 'norm' in name or 'relative_position_bias_table' in name or name.endswith('gld.fc.bias')
        assert decay[id(param)] == (0.0 if no_decay else 0.05), name


def test_loss_step_reaches_every_parameter():
    """With out_indices=(3,) the classifier has no unused parameter: DDP needs no find_unused_parameters."""
    from mmpretrain.structures import DataSample

    _, model = small_classifier(num_classes=3)
    model.train()
    data = dict(
        inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(4)],
        data_samples=[DataSample().set_gt_label(i % 3) for i in range(4)],
    )
    batch = model.data_preprocessor(data, training=True)
    assert batch['data_samples'][0].gt_score.shape == (3,)  # soft targets of Mixup/CutMix
    losses = model(**batch, mode='loss')
    losses['loss'].backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not unused
    assert [n for n, _ in model.backbone.named_children() if n.startswith('norm')] == ['norm3']
