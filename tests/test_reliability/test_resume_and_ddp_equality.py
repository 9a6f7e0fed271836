"""Resuming gives the run that was never interrupted, and DDP keeps every rank's weights equal.

Two real two-process CPU runs of `tools/dist_train.sh` on a generated image-folder set, with a user config
that inherits the ImageNet recipe and makes training deterministic: a fixed seed, no random augmentation (no
crop, flip, RandAugment, Mixup or CutMix), no dropout or drop path, a classifier head (no proposal sampling).
After the seeded data order nothing draws random numbers, so mmengine's checkpoints (which do not store the
RNG state) are enough to continue exactly. Run A trains 2 epochs; run B resumes A's epoch-1 checkpoint in
another work dir. A user hook saves each rank's weights and optimizer state when training ends.
"""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.runner import CheckpointLoader

import maformer_mm  # noqa: F401  (registers MAFormer and how mmengine reads its checkpoints)
from tests.helpers import MIN_ARCH, REPO, backbone_override, run_launcher

CLASSES = ('dark', 'light')

USER_CONFIG = """
_base_ = [{base!r}]
custom_imports = dict(imports=['maformer_mm', 'rank_dump'], allow_failed_imports=False)
randomness = dict(seed=0)
data_root = {root!r}
classes = {classes!r}
model = dict(
    {backbone},
    head=dict(num_classes=len(classes), in_channels=128),
    train_cfg=None)  # no Mixup / CutMix
data_preprocessor = dict(num_classes=len(classes))
pipeline = [dict(type='LoadImageFromFile'), dict(type='PackInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=pipeline))
val_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(topk=(1, ))
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=100)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1, convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=1, convert_to_iter_based=True),
]
custom_hooks = [dict(type='EMAHook', momentum=0.1, priority='ABOVE_NORMAL'), dict(type='InvalidLossHook'),
                dict(type='DumpRankState')]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
"""

RANK_DUMP = '''
import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class DumpRankState(Hook):
    """Saves this rank's model weights and optimizer state when training ends, and the images it trained on."""

    def before_train(self, runner):
        self.images = []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.images += [sample.metainfo['img_path'] for sample in data_batch['data_samples']]

    def after_train(self, runner):
        model = runner.model.module if hasattr(runner.model, 'module') else runner.model
        torch.save(dict(model=model.state_dict(), optimizer=runner.optim_wrapper.state_dict()),
                   f'{runner.work_dir}/rank{get_rank()}.pth')
        with open(f'{runner.work_dir}/rank{get_rank()}_images.txt', 'w') as f:
            f.write(' '.join(self.images))
'''


def _write_images(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (('train', 8), ('val', 2)):
        for i in range(count):
            folder = root / split / CLASSES[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            image = rng.integers(0, 120, (32, 32, 3)) + 120 * (i % 2)
            Image.fromarray(image.astype(np.uint8)).save(folder / f'{i}.png')


def _dist_train(workspace: Path, work_dir: Path, *extra: str) -> str:
    proc = run_launcher(
        [REPO / 'tools' / 'dist_train.sh', workspace / 'config.py', '2', '--work-dir', work_dir, *extra],
        workspace,
        dict(PYTHONPATH=str(workspace)),
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-4000:]
    return text


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    workspace = tmp_path_factory.mktemp('resume_ddp')
    _write_images(workspace / 'data')
    (workspace / 'rank_dump.py').write_text(RANK_DUMP)
    (workspace / 'config.py').write_text(
        USER_CONFIG.format(
            base=str(REPO / 'configs' / 'maformer_t_in1k.py'),
            root=str(workspace / 'data'),
            classes=CLASSES,
            backbone=backbone_override(MIN_ARCH, 32, drop_path_rate=0.0),
        )
    )
    whole, resumed = workspace / 'whole', workspace / 'resumed'
    log_whole = _dist_train(workspace, whole)
    log_resumed = _dist_train(workspace, resumed, '--resume', str(whole / 'epoch_1.pth'))
    # The checkpoints' configs import the hook module: mmengine's loader (as maformer_mm sets it up) wants it
    # imported by the reader first, as a sign of trust.
    sys.path.insert(0, str(workspace))
    try:
        importlib.import_module('rank_dump')
    finally:
        sys.path.remove(str(workspace))
    return whole, resumed, log_whole, log_resumed


def _load(path: Path) -> dict:
    return CheckpointLoader.load_checkpoint(str(path), map_location='cpu')  # mmengine's loader, as a resume reads it


def _assert_equal(a, b, where: str) -> None:
    """Nested dicts/lists of tensors and numbers, equal bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_equal(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f'{where}[{i}]')
    else:
        assert a == b, where


def test_both_runs_are_distributed_and_b_resumes_from_epoch_1(runs):
    _, _, log_whole, log_resumed = runs
    for log in (log_whole, log_resumed):
        assert 'Distributed training: True' in log and "'backend': 'gloo'" in log
        assert 'Epoch(train) [2][2/2]' in log  # 8 images, 2 per rank and iteration, 2 ranks
    assert 'Epoch(train) [1][1/2]' in log_whole
    assert 'resumed epoch: 1, iter: 2' in log_resumed and 'Epoch(train) [1]' not in log_resumed


def test_resumed_run_equals_the_uninterrupted_one(runs):
    whole, resumed, _, _ = runs
    a, b = _load(whole / 'epoch_2.pth'), _load(resumed / 'epoch_2.pth')
    assert a['meta']['epoch'] == b['meta']['epoch'] == 2 and a['meta']['iter'] == b['meta']['iter'] == 4
    for part in ('state_dict', 'ema_state_dict', 'optimizer', 'param_schedulers'):
        _assert_equal(a[part], b[part], part)
    adam = a['optimizer']['state']
    assert adam and all(int(s['step']) == 4 for s in adam.values())
    # the comparison has something to find: epoch 2 moved the weights, and EMA differs from them
    epoch_1 = _load(whole / 'epoch_1.pth')['state_dict']
    assert any(not torch.equal(v, epoch_1[k]) for k, v in a['state_dict'].items() if k.startswith('backbone.'))
    assert any(not torch.equal(v, a['ema_state_dict']['module.' + k]) for k, v in a['state_dict'].items())


def test_every_rank_holds_the_same_weights_and_optimizer_state(runs):
    whole, resumed, _, _ = runs
    final = {}
    for run in (whole, resumed):
        ranks = [_load(run / f'rank{r}.pth') for r in (0, 1)]
        _assert_equal(ranks[0], ranks[1], f'{run.name} rank 0 vs rank 1')
        final[run.name] = ranks[0]
    _assert_equal(final['whole'], final['resumed'], 'uninterrupted vs resumed, at the end')
    # the ranks trained on different images (so their gradients differed and DDP averaged them)
    seen = [(whole / f'rank{r}_images.txt').read_text().split() for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 8  # 2 epochs x 2 iterations x 2 images
    assert not set(seen[0][:4]) & set(seen[1][:4])  # epoch 1: disjoint halves of the 8 images
