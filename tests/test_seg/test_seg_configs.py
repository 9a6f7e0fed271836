"""Every segmentation config parses and builds; the ADE20K recipe is encoded; a loss step and a
predict step of UperNet MAFormer-T; whole-image and sliding-window inference on odd image sizes."""

from pathlib import Path

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401
from maformer_mm.models import MAFormer
from tests.helpers import assert_no_decay_on_norms_and_position_terms

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs'
CONFIGS = sorted(str(p) for p in CONFIG_DIR.glob('upernet_*.py'))
ARCH_OF = {'t': 'tiny', 's': 'small', 'b': 'base'}


def _build(cfg: Config) -> torch.nn.Module:
    from mmseg.registry import MODELS

    init_default_scope(cfg.default_scope)
    return revert_sync_batchnorm(MODELS.build(cfg.model))


def test_all_segmentation_configs_are_found():
    names = {Path(c).stem for c in CONFIGS}
    assert {f'upernet_maformer_{s}_512x512_160k_ade20k' for s in 'tsb'} | {'upernet_maformer_t_demo'} <= names


@pytest.mark.parametrize('config', CONFIGS, ids=lambda c: Path(c).stem)
def test_segmentation_config_builds(config):
    cfg = Config.fromfile(config)
    assert cfg.custom_imports == dict(imports=['maformer_mm'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmseg'
    model = _build(cfg)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert isinstance(model.backbone, MAFormer)
    size = Path(config).stem.split('_')[2]
    assert model.backbone.arch_settings == MAFormer.arch_zoo[ARCH_OF[size]]
    out_channels = list(model.backbone.out_channels)
    assert list(cfg.model.decode_head.in_channels) == out_channels
    assert cfg.model.auxiliary_head.in_channels == out_channels[2] and cfg.model.auxiliary_head.in_index == 2
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW' and optimizer.weight_decay == 0.01 and tuple(optimizer.betas) == (0.9, 0.999)
    assert set(cfg.optim_wrapper.paramwise_cfg.custom_keys) == {'norm', 'relative_position_bias_table', 'gld.fc.bias'}
    assert cfg.train_cfg.type == 'IterBasedTrainLoop'
    warmup, poly = cfg.param_scheduler
    assert warmup.type == 'LinearLR' and poly.type == 'PolyLR' and poly.power == 1.0 and poly.eta_min == 0
    assert poly.begin == warmup.end and poly.end == cfg.train_cfg.max_iters
    assert cfg.auto_scale_lr.enable is False
    if config.endswith('_demo.py'):
        assert cfg.model.backbone.init_cfg is None
        assert model.decode_head.num_classes == model.auxiliary_head.num_classes == 3
        assert cfg.train_dataloader.dataset.metainfo.classes == ('circle', 'square', 'triangle')
        assert cfg.train_dataloader.dataset.reduce_zero_label is True
        crop = cfg.train_dataloader.dataset.pipeline[3].crop_size
        assert tuple(cfg.model.data_preprocessor.size) == tuple(crop)
        return
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/maformer_{size}_in1k.pth')
    assert cfg.model.backbone.drop_path_rate == {'t': 0.2, 's': 0.4, 'b': 0.6}[size]
    assert model.decode_head.num_classes == model.auxiliary_head.num_classes == 150
    assert optimizer.lr == 6e-5
    assert cfg.train_cfg.max_iters == 160000 and (warmup.begin, warmup.end) == (0, 1500)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    assert tuple(cfg.model.data_preprocessor.size) == (512, 512)
    assert dict(type='RandomCrop', crop_size=(512, 512), cat_max_ratio=0.75) in cfg.train_dataloader.dataset.pipeline
    assert dict(type='Resize', scale=(2048, 512), keep_ratio=True) in cfg.test_dataloader.dataset.pipeline
    assert cfg.tta_model.type == 'SegTTAModel' and cfg.tta_pipeline[1].type == 'TestTimeAug'


def test_tta_swaps_in_the_multi_scale_flip_model(tmp_path):
    from maformer_mm.tools.test import build_config, parse_args

    ckpt = tmp_path / 'model.pth'
    ckpt.touch()
    config = str(CONFIG_DIR / 'upernet_maformer_t_512x512_160k_ade20k.py')
    cfg = build_config(parse_args([config, str(ckpt), '--tta']))
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.backbone.type == 'MAFormer'
    assert cfg.test_dataloader.dataset.pipeline[1].type == 'TestTimeAug'


def test_no_weight_decay_on_norms_and_position_terms():
    assert_no_decay_on_norms_and_position_terms(CONFIGS[0], 0.01)


@pytest.fixture(scope='module')
def segmentor():
    """UperNet MAFormer-T of the real config, SyncBN reverted, inputs padded to 64x64 in training;
    head widths cut to 128 / 64 channels (512 / 256) since the heads' convolutions would dominate the time."""
    cfg = Config.fromfile(str(CONFIG_DIR / 'upernet_maformer_t_512x512_160k_ade20k.py'))
    cfg.model.backbone.init_cfg = None
    cfg.model.backbone.drop_path_rate = 0.0
    cfg.model.decode_head.channels = 128
    cfg.model.auxiliary_head.channels = 64
    cfg.model.data_preprocessor.size = (64, 64)
    model = _build(cfg)
    model.init_weights()
    return model


def _batch(shapes, num_classes: int = 150, with_gt: bool = True) -> dict:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    inputs, samples = [], []
    for h, w in shapes:
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w)))
        if with_gt:
            sample.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def test_loss_step_and_predict_step(segmentor):
    from mmengine.optim import OptimWrapper

    segmentor.train()
    data = segmentor.data_preprocessor(_batch([(64, 64), (60, 52)]), True)
    assert data['inputs'].shape == (2, 3, 64, 64)  # padded to data_preprocessor.size
    losses = segmentor(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    loss, _ = segmentor.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in segmentor.backbone.parameters())
    segmentor.zero_grad()
    before = [p.detach().clone() for p in segmentor.decode_head.parameters()]
    segmentor.train_step(_batch([(64, 64), (48, 64)]), OptimWrapper(torch.optim.AdamW(segmentor.parameters(), lr=1e-4)))
    assert all(not torch.equal(b, p) for b, p in zip(before, segmentor.decode_head.parameters()))

    segmentor.eval()
    with torch.no_grad():
        (pred,) = segmentor.val_step(_batch([(64, 64)], with_gt=False))
    assert pred.seg_logits.data.shape == (150, 64, 64)
    assert pred.pred_sem_seg.data.shape == (1, 64, 64)
    assert torch.equal(pred.pred_sem_seg.data[0], pred.seg_logits.data.argmax(0))


@pytest.mark.parametrize(
    'mode', [dict(mode='whole'), dict(mode='slide', crop_size=(48, 48), stride=(32, 32))], ids=lambda m: m['mode']
)
def test_inference_on_an_odd_image_size_keeps_the_size(segmentor, mode):
    segmentor.eval()
    segmentor.test_cfg = ConfigDict(mode)
    try:
        with torch.no_grad():
            (pred,) = segmentor.test_step(_batch([(67, 93)], with_gt=False))
    finally:
        segmentor.test_cfg = ConfigDict(mode='whole')
    assert pred.seg_logits.data.shape == (150, 67, 93)
    assert pred.pred_sem_seg.data.shape == (1, 67, 93)
    assert pred.seg_logits.data.isfinite().all()


def test_sliding_window_with_one_window_equals_whole_image(segmentor):
    """A window as large as the (odd-sized) image: slide and whole inference see the same input."""
    segmentor.eval()
    batch = _batch([(45, 71)], with_gt=False)
    results = {}
    for mode in (dict(mode='whole'), dict(mode='slide', crop_size=(64, 96), stride=(64, 96))):
        segmentor.test_cfg = ConfigDict(mode)
        with torch.no_grad():
            results[mode['mode']] = segmentor.test_step(batch)[0].seg_logits.data
    segmentor.test_cfg = ConfigDict(mode='whole')
    assert results['slide'].shape == (150, 45, 71)
    torch.testing.assert_close(results['slide'], results['whole'], rtol=1e-4, atol=1e-5)
