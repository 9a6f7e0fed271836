"""Every detection config parses and builds; a loss step and a predict step of Mask R-CNN MAFormer-T."""

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401
from maformer_mm.models import MAFormer
from tests.helpers import assert_no_decay_on_norms_and_position_terms

CONFIGS = sorted(str(p) for p in (Path(__file__).resolve().parents[2] / 'configs').glob('mask_rcnn_*.py'))
ARCH_OF = {'t': 'tiny', 's': 'small', 'b': 'base'}


def test_all_detection_configs_are_found():
    names = {Path(c).stem for c in CONFIGS}
    assert {f'mask_rcnn_maformer_{s}{r}' for s in 'tsb' for r in ('', '_3x')} <= names


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: Path(c).stem)
def test_detection_config_builds(config):
    from mmdet.registry import MODELS

    cfg = Config.fromfile(config)
    assert cfg.custom_imports == dict(imports=['maformer_mm'], allow_failed_imports=False)
    init_default_scope(cfg.default_scope)
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, MAFormer)
    size = Path(config).stem.split('_')[3]
    assert model.backbone.arch_settings == MAFormer.arch_zoo[ARCH_OF[size]]
    assert list(cfg.model.neck.in_channels) == list(model.backbone.out_channels)
    assert cfg.optim_wrapper.optimizer.type == 'AdamW' and cfg.optim_wrapper.optimizer.weight_decay == 0.05
    if not config.endswith('_demo.py'):
        assert cfg.model.backbone.init_cfg.checkpoint == f'checkpoints/maformer_{size}_in1k.pth'
        milestones = cfg.param_scheduler[1].milestones
        assert milestones == ([27, 33] if config.endswith('_3x.py') else [8, 11])
        assert cfg.model.backbone.drop_path_rate == {'t': 0.1, 's': 0.3, 'b': 0.5}[size]


def test_no_weight_decay_on_norms_and_position_terms():
    assert_no_decay_on_norms_and_position_terms(CONFIGS[0], 0.05)


@pytest.fixture(scope='module')
def detector():
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(Path(CONFIGS[0]).with_name('mask_rcnn_maformer_t.py')))
    init_default_scope('mmdet')
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.drop_path_rate = 0.0
    cfg.model.roi_head.bbox_head.num_classes = 3
    cfg.model.roi_head.mask_head.num_classes = 3
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model


def test_loss_step_and_predict_step(detector):
    from mmdet.testing import demo_mm_inputs
    from mmengine.optim import OptimWrapper

    torch.manual_seed(0)
    packed = demo_mm_inputs(2, [[3, 96, 128], [3, 100, 90]], num_items=[2, 1], num_classes=3, with_mask=True)
    detector.train()
    optim = OptimWrapper(torch.optim.AdamW(detector.parameters(), lr=1e-4))
    before = {n: p.detach().clone() for n, p in detector.backbone.named_parameters()}
    losses = detector.train_step(packed, optim)
    assert {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    assert all(torch.isfinite(v).all() for k, v in losses.items() if k.startswith('loss'))
    unchanged = [n for n, p in detector.backbone.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged  # the step reached every backbone parameter

    detector.eval()
    with torch.no_grad():
        results = detector.val_step(demo_mm_inputs(1, [[3, 96, 128]], with_mask=True))
    pred = results[0].pred_instances
    assert pred.bboxes.shape[1] == 4 and len(pred.scores) == len(pred.labels) == len(pred.masks)
    assert pred.masks.shape[1:] == (96, 128)
