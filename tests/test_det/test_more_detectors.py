"""Cascade Mask R-CNN (1x, 3x), Faster R-CNN and RetinaNet with MAFormer: every config parses, names its backbone
and shares the Mask R-CNN recipe; each family, built from its real config with a tiny backbone and narrow heads,
trains one iteration on generated images and predicts."""

import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401
from maformer_mm.models import MAFormer
from tests.helpers import REPO, TINY_ARCH, memoised_package_config_index

CONFIG_DIR = REPO / 'configs'
FAMILIES = ('cascade_mask_rcnn', 'faster_rcnn', 'retinanet')
CONFIGS = sorted(p for family in FAMILIES for p in CONFIG_DIR.glob(f'{family}_maformer_*.py'))
ARCH_OF = {'t': 'tiny', 's': 'small', 'b': 'base'}
DROP_PATH_OF = {'t': 0.1, 's': 0.3, 'b': 0.5}
DETECTOR_OF = {'cascade_mask_rcnn': 'CascadeRCNN', 'faster_rcnn': 'FasterRCNN', 'retinanet': 'RetinaNet'}
# What every MAFormer detector shares with Mask R-CNN (configs/_base_/mask_rcnn_maformer_fpn_1x_coco.py).
RECIPE_KEYS = ('custom_imports', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'custom_hooks', 'auto_scale_lr')


def _family(name: str) -> str:
    return next(f for f in FAMILIES if name.startswith(f + '_'))


def _size(name: str) -> str:
    return name.split('_maformer_')[1][0]


@pytest.fixture(scope='module')
def configs() -> dict:
    """Every new config and the Mask R-CNN T configs, parsed once (with mmdet's model index read once, not for
    every `mmdet::` base: seconds instead of a minute)."""
    with memoised_package_config_index():
        paths = CONFIGS + [CONFIG_DIR / 'mask_rcnn_maformer_t.py', CONFIG_DIR / 'mask_rcnn_maformer_t_3x.py']
        return {p.stem: Config.fromfile(str(p)) for p in paths}


def test_every_family_comes_in_t_s_b():
    names = {p.stem for p in CONFIGS}
    expected = {
        f'{family}_maformer_{size}{schedule}'
        for family in FAMILIES
        for size in 'tsb'
        for schedule in (('', '_3x') if family == 'cascade_mask_rcnn' else ('',))
    }
    assert names == expected


@pytest.mark.parametrize('name', [p.stem for p in CONFIGS])
def test_config_names_its_detector_backbone_and_weights(configs, name):
    cfg, size = configs[name], _size(name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.model.type == DETECTOR_OF[_family(name)]
    backbone = cfg.model.backbone
    assert backbone.type == 'MAFormer' and backbone.arch == ARCH_OF[size]
    assert backbone.drop_path_rate == DROP_PATH_OF[size] and backbone.vit_window_size == 0
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/maformer_{size}_in1k.pth')
    widths = [MAFormer.arch_zoo[backbone.arch]['embed_dims'] * 2**i for i in range(4)]
    assert list(cfg.model.neck.in_channels) == [widths[i] for i in backbone.out_indices]
    reference = configs['mask_rcnn_maformer_t_3x' if name.endswith('_3x') else 'mask_rcnn_maformer_t']
    for key in RECIPE_KEYS:
        assert cfg[key] == reference[key], key


def test_cascade_3x_is_the_1x_model_with_the_mask_rcnn_3x_pipeline(configs):
    reference = configs['mask_rcnn_maformer_t_3x']
    for size in 'tsb':
        cfg = configs[f'cascade_mask_rcnn_maformer_{size}_3x']
        assert cfg.train_dataloader.dataset.pipeline == reference.train_dataloader.dataset.pipeline
        assert cfg.model == configs[f'cascade_mask_rcnn_maformer_{size}'].model


def test_cascade_uses_the_swin_and_convnext_box_heads(configs):
    heads = configs['cascade_mask_rcnn_maformer_s'].model.roi_head.bbox_head
    assert len(heads) == 3
    assert [h.bbox_coder.target_stds for h in heads] == [
        [0.1, 0.1, 0.2, 0.2],
        [0.05, 0.05, 0.1, 0.1],
        [0.033, 0.033, 0.067, 0.067],
    ]
    for head in heads:
        assert (head.type, head.num_shared_convs, head.num_shared_fcs) == ('ConvFCBBoxHead', 4, 1)
        assert head.loss_bbox.type == 'GIoULoss' and head.reg_decoded_bbox


def test_box_detectors_carry_a_tta_model_and_mask_detectors_none(configs):
    for name, cfg in configs.items():
        if name.startswith(('faster_rcnn', 'retinanet')):
            assert cfg.tta_model.type == 'DetTTAModel' and cfg.tta_pipeline[1].type == 'TestTimeAug'
        else:  # mmdet 3.3's DetTTAModel merges boxes only and asserts on masks
            assert 'tta_model' not in cfg


def test_retinanet_backbone_feeds_stages_2_to_4_into_a_five_level_fpn(configs):
    """As mmdet's RetinaNet Swin config: the backbone returns only what the FPN uses (each output has its own norm,
    an unused one would get no gradient), the FPN starts at its first input and adds P6/P7 from stage 4."""
    from mmdet.registry import MODELS

    cfg = configs['retinanet_maformer_t']
    init_default_scope('mmdet')
    backbone = MODELS.build(cfg.model.backbone)
    assert backbone.out_indices == (1, 2, 3) and backbone.out_channels == (128, 256, 512)
    assert not hasattr(backbone, 'norm0')
    neck = cfg.model.neck
    assert (neck.start_level, neck.num_outs, neck.add_extra_convs) == (0, 5, 'on_input')
    assert cfg.model.bbox_head.anchor_generator.strides == [8, 16, 32, 64, 128]


WIDTH = 32  # FPN and head channels (256 in the real configs)


def _shrink(cfg: Config) -> dict:
    """The config's model with a tiny MAFormer, narrow FPN and heads, 3 classes and few sampled RoIs."""
    model = cfg.model
    model.backbone.update(arch=TINY_ARCH, pretrain_img_size=64, window_size=4, drop_path_rate=0.0, init_cfg=None)
    model.neck.update(
        in_channels=[TINY_ARCH['embed_dims'] * 2**i for i in model.backbone.out_indices], out_channels=WIDTH
    )
    if 'bbox_head' in model:  # one-stage
        model.bbox_head.update(in_channels=WIDTH, feat_channels=WIDTH, num_classes=3)
        model.test_cfg.score_thr = 0.0  # untrained scores are low: keep every box
        return model
    model.rpn_head.update(in_channels=WIDTH, feat_channels=WIDTH)
    roi = model.roi_head
    roi.bbox_roi_extractor.out_channels = WIDTH
    for head in roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]:
        head.update(in_channels=WIDTH, conv_out_channels=WIDTH, fc_out_channels=2 * WIDTH, num_classes=3)
    if 'mask_head' in roi:
        roi.mask_roi_extractor.out_channels = WIDTH
        roi.mask_head.update(in_channels=WIDTH, conv_out_channels=WIDTH, num_classes=3)
    for stage in model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn]:
        stage.sampler.num = 64
    model.test_cfg.rcnn.score_thr = 0.0  # untrained scores are low: keep every box
    return model


LOSSES = {
    'cascade_mask_rcnn': {'loss_rpn_cls', 'loss_rpn_bbox'}
    | {f's{i}.{loss}' for i in range(3) for loss in ('loss_cls', 'loss_bbox', 'loss_mask')},
    'faster_rcnn': {'loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox'},
    'retinanet': {'loss_cls', 'loss_bbox'},
}


@pytest.mark.parametrize('family', FAMILIES)
def test_family_trains_one_iteration_and_predicts(configs, family):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper

    cfg = copy.deepcopy(configs[f'{family}_maformer_t'])
    with_mask = family == 'cascade_mask_rcnn'
    init_default_scope('mmdet')
    detector = MODELS.build(_shrink(cfg))
    detector.init_weights()
    detector = revert_sync_batchnorm(detector)  # what the Runner does without distributed training
    optim = build_optim_wrapper(detector, cfg.optim_wrapper)  # the config's AdamW with its no-decay keys
    decay = {id(p): g['weight_decay'] for g in optim.optimizer.param_groups for p in g['params']}
    assert all(decay[id(p)] == 0.0 for n, p in detector.backbone.named_parameters() if 'norm' in n)

    torch.manual_seed(0)
    batch = demo_mm_inputs(2, [[3, 96, 128], [3, 100, 90]], num_items=[2, 1], num_classes=3, with_mask=with_mask)
    before = {n: p.detach().clone() for n, p in detector.backbone.named_parameters()}
    detector.train()
    losses = detector.train_step(batch, optim)
    assert {k for k in losses if 'loss_' in k} == LOSSES[family]
    assert all(torch.isfinite(v).all() for v in losses.values())
    unchanged = [n for n, p in detector.backbone.named_parameters() if torch.equal(p, before[n])]
    assert not unchanged  # the step reached every backbone parameter

    detector.eval()
    with torch.no_grad():
        pred = detector.val_step(demo_mm_inputs(1, [[3, 96, 128]], with_mask=with_mask))[0].pred_instances
    assert pred.bboxes.ndim == 2 and pred.bboxes.shape[1] == 4 and len(pred.bboxes) == len(pred.scores) > 0
    assert ('masks' in pred) == with_mask
    if with_mask:
        assert pred.masks.shape[1:] == (96, 128)
