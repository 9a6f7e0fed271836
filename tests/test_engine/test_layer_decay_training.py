"""One training iteration of each layer-decay recipe kind through tools/train.py (in this process): the recipe's
pipeline at 64 px, optimiser, schedule and hooks, with a tiny MAFormer and narrow heads on generated data. The
optimiser the run built holds the documented table (every parameter's lr before the scheduler moved it, and its
weight decay), and every backbone parameter was stepped."""

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from maformer_mm.datasets.synthetic import ShapesSet
from maformer_mm.tools import train
from tests.helpers import TINY_ARCH
from tests.query_heads import (
    SIZE,
    TINY_WIDTHS,
    WIDTH,
    ade_run_config,
    coco_run_config,
    scale_pipeline,
    shrink_dino,
    shrink_mask2former_head,
    tiny_backbone,
    unformatted_config_text,
)
from tests.test_engine.test_layer_decay import CLS_RECIPE, RECIPE_DIR, RECIPES, check_groups

NUM_BLOCKS = sum(TINY_ARCH['depths'])


def _shrink_rcnn(cfg: Config) -> None:
    model = cfg.model
    tiny_backbone(model.backbone)
    model.neck.update(in_channels=TINY_WIDTHS, out_channels=WIDTH)
    model.rpn_head.update(in_channels=WIDTH, feat_channels=WIDTH)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = WIDTH
    for head in roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]:
        head.update(in_channels=WIDTH, conv_out_channels=WIDTH, fc_out_channels=2 * WIDTH, num_classes=3)
    roi.mask_head.update(in_channels=WIDTH, conv_out_channels=WIDTH, num_classes=3)
    for stage in model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn]:
        stage.sampler.num = 64


def _shrink_mask2former(cfg: Config) -> None:
    tiny_backbone(cfg.model.backbone)
    head = cfg.model.decode_head
    shrink_mask2former_head(head)
    head.update(num_classes=3)
    head.loss_cls.class_weight = [1.0] * 3 + [0.1]
    head.train_cfg.num_points = 256


def _shrink_upernet(cfg: Config) -> None:
    tiny_backbone(cfg.model.backbone)
    cfg.model.decode_head.update(in_channels=TINY_WIDTHS, channels=WIDTH, num_classes=3)
    cfg.model.auxiliary_head.update(in_channels=TINY_WIDTHS[2], channels=WIDTH // 2, num_classes=3)


# kind -> (T recipe, data, nominal image size of its pipeline, shrink)
KINDS = {
    'mask_rcnn': ('mask_rcnn_maformer_t_3x.py', 'coco', 800, _shrink_rcnn),
    'cascade_mask_rcnn': ('cascade_mask_rcnn_maformer_t_3x.py', 'coco', 800, _shrink_rcnn),
    'dino_4scale': ('dino_4scale_maformer_t_12e.py', 'coco', 800, lambda cfg: shrink_dino(cfg.model)),
    'mask2former': ('mask2former_maformer_t_512x512_160k_ade20k.py', 'ade', 512, _shrink_mask2former),
    'upernet': ('upernet_maformer_t_512x512_160k_ade20k.py', 'ade', 512, _shrink_upernet),
}


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('layer_decay_data')
    ShapesSet(num_train=2, num_val=1, size=(SIZE, SIZE)).write_coco(str(root / 'coco'))
    ShapesSet(num_train=2, num_val=1, size=(SIZE, SIZE)).write_ade(str(root / 'ade'))
    return dict(coco=root / 'coco', ade=root / 'ade')


def _train(cfg: Config, work_dir: Path):
    """tools/train.py on `cfg` written out as a file, without validation; returns the Runner."""
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg', 'test_dataloader', 'test_evaluator'):
        cfg[key] = None
    path = work_dir / 'config.py'
    cfg.dump(str(path))
    return train.main([str(path), '--work-dir', str(work_dir / 'work'), '--device', 'cpu'])


def _assert_trained_with_the_table(runner, rate: float, decay_type: str, lr: float, wd: float, head_keys=()) -> None:
    optimizer = runner.optim_wrapper.optimizer
    check_groups(runner.model, optimizer.param_groups, rate, decay_type, lr, wd, head_keys)
    stepped = [p in optimizer.state for p in runner.model.backbone.parameters()]
    assert all(stepped), f'{stepped.count(False)} backbone parameters were not stepped'
    assert np.isfinite(runner.message_hub.get_scalar('train/loss').current())


@pytest.mark.parametrize('kind', list(KINDS))
def test_recipe_trains_one_iteration_through_the_train_tool(data, tmp_path, kind):
    name, dataset, nominal, shrink = KINDS[kind]
    make: Callable = coco_run_config if dataset == 'coco' else ade_run_config
    with unformatted_config_text():
        cfg = make(RECIPE_DIR / name, data[dataset], tmp_path / 'work', nominal)
        shrink(cfg)
        runner = _train(cfg, tmp_path)
    rate, decay_type, lr, wd, head_keys = RECIPES[kind]
    _assert_trained_with_the_table(runner, rate, decay_type, lr, wd, head_keys)
    layers = NUM_BLOCKS + 2 if decay_type == 'layer_wise' else 6
    assert len(runner.optim_wrapper.optimizer.param_groups) == 2 * layers


def test_mmpretrain_recipe_trains_one_iteration_through_the_train_tool(tmp_path):
    rng = np.random.default_rng(0)
    for i, label in enumerate(('ball', 'box', 'wedge')):
        (tmp_path / 'my_cls' / 'train' / label).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(
            tmp_path / 'my_cls' / 'train' / label / f'{i}.jpg'
        )
    cfg = Config.fromfile(str(CLS_RECIPE))
    tiny_backbone(cfg.model.backbone)
    cfg.model.head.in_channels = TINY_WIDTHS[3]
    scale_pipeline(cfg.train_dataloader.dataset.pipeline, SIZE / 224)
    cfg.train_dataloader.update(batch_size=3, num_workers=0, persistent_workers=False)
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'my_cls')
    cfg.train_cfg.update(max_epochs=3, val_interval=3)  # one iteration an epoch; the cosine decay starts at epoch 2
    cfg.default_hooks.checkpoint.interval = 3
    runner = _train(cfg, tmp_path)
    _assert_trained_with_the_table(runner, 0.9, 'layer_wise', cfg.optim_wrapper.optimizer.lr, 0.05)
