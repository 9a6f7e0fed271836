"""ImageNet-style pretraining with tools/train.py on a generated image-folder set, run as a user runs it, and the
checkpoint it saves (EMA weights under `state_dict`) initialising a Mask R-CNN MAFormer backbone as it is."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint  # reads mmengine checkpoints as data
from tests.helpers import MIN_ARCH, REPO, backbone_override, run_tool

CLASSES = ('circle', 'square', 'stripes')

# A user's config outside the repository: inherits the real tiny config by path, shrinks the backbone, points at
# the generated set and trains 2 epochs of 2 iterations (1 warm-up epoch, then cosine), EMA on as in the recipe.
USER_CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
classes = {classes!r}
model = dict(
    {backbone},
    head=dict(num_classes=len(classes), in_channels=128))
data_preprocessor = dict(num_classes=len(classes))
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=dict(classes=classes)))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1),
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""
# The real pipelines, cropped to 64 instead of 224 (list entries can only be changed from the command line).
CROP_64 = [
    'train_dataloader.dataset.pipeline.1.scale=64',
    'val_dataloader.dataset.pipeline.1.scale=64',
    'val_dataloader.dataset.pipeline.2.crop_size=64',
]


def user_cls_config(root: str) -> str:
    """USER_CONFIG over configs/maformer_t_in1k.py for the image folders under `root`."""
    return USER_CONFIG.format(
        base=str(REPO / 'configs' / 'maformer_t_in1k.py'),
        root=root,
        classes=CLASSES,
        backbone=backbone_override(MIN_ARCH, 64),
    )


def write_image_folders(root: Path, per_split: dict) -> None:
    """mmpretrain's ImageNet layout, SPLIT/CLASS/NAME.png: 64x64 images, one colour per class plus noise."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for i in range(count):
            label = i % len(CLASSES)
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            image = np.full((64, 64, 3), 60 + 70 * label, dtype=np.int16) + rng.integers(-40, 40, (64, 64, 3))
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / f'{split}_{i}.png')


@pytest.fixture(scope='module')
def pretrained(tmp_path_factory):
    root = tmp_path_factory.mktemp('cls')
    write_image_folders(root / 'data', dict(train=8, val=4))
    config = root / 'user_config.py'
    config.write_text(user_cls_config(str(root / 'data')))
    work_dir = root / 'work'
    proc = run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', work_dir, '--cfg-options', *CROP_64], cwd=root)
    return work_dir, proc.stdout + proc.stderr


def test_pretraining_runs_validates_and_saves_ema_weights(pretrained):
    work_dir, log = pretrained
    assert re.search(r'Epoch\(train\) \[1\]\[1/2\]\s+base_lr: 1\.0000e-06', log)  # warm-up from lr x 1e-3
    assert re.search(r'Epoch\(train\) \[2\]\[2/2\].*loss: \d', log)
    assert re.search(r'Epoch\(val\) \[2\]\[1/1\]\s+accuracy/top1: [\d.]+', log)
    ckpt = load_mmengine_checkpoint(work_dir / 'epoch_2.pth', map_location='cpu')  # torch.load refuses it
    state, raw = ckpt['state_dict'], ckpt['ema_state_dict']
    assert ckpt['meta']['iter'] == 4
    assert set(raw) == {'steps'} | {'module.' + k for k in state}
    # EMAHook swaps at saving: the averaged weights are under `state_dict`, the trained ones under `ema_state_dict`.
    assert any(not torch.equal(v, raw['module.' + k]) for k, v in state.items() if k.startswith('backbone.'))


def test_checkpoint_initialises_the_detection_backbone_unchanged(pretrained, mm_log):
    from mmdet.registry import MODELS

    work_dir, _ = pretrained
    path = work_dir / 'weights' / 'epoch_2.pth'  # backbone weights are read as plain data: the weights alone
    run_tool([REPO / 'tools' / 'convert_checkpoint.py', work_dir / 'epoch_2.pth', path], cwd=work_dir)
    cfg = Config.fromfile(str(REPO / 'configs' / 'mask_rcnn_maformer_t.py'))
    cfg.model.backbone.arch = MIN_ARCH
    cfg.model.backbone.pretrain_img_size = 64
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(path))
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    init_default_scope('mmdet')
    detector = MODELS.build(cfg.model)
    detector.init_weights()

    state = torch.load(path, map_location='cpu')['state_dict']
    from_ckpt = {k[len('backbone.') :]: v for k, v in state.items() if k.startswith('backbone.')}
    loaded = detector.backbone.state_dict()
    assert from_ckpt and set(from_ckpt) <= set(loaded)
    for key, value in from_ckpt.items():
        assert torch.equal(loaded[key], value), key
    # The detection backbone's extra output norms are all it does not find, and the log says so.
    missing = sorted(set(loaded) - set(from_ckpt))
    assert missing == [f'norm{i}.{p}' for i in range(3) for p in ('bias', 'weight')]
    log = mm_log()
    assert f'Loaded {len(from_ckpt)}/{len(loaded)} backbone tensors from {path}' in log
    assert re.search(r'Missing in .*epoch_2\.pth \(left at init\): \[.*norm0\.weight', log)
    assert 'Unexpected in' not in log
