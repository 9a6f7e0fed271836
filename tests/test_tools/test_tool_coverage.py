"""README promises of tools/test.py, run as a user runs them on generated data: `--show-dir` writes drawn images
(detection and segmentation), detection `--tta` runs the config's tta_model and tta_pipeline, `tools/dist_test.sh`
evaluates in two processes on CPU exactly as one process does, and a classification config prints top-1.

The checkpoints are the configs' own models as training starts (built and initialised here, no training): what these
tests check is the tools, and the predictions of a fixed set of weights are what they must reproduce."""

import pickle
import re
import subprocess
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope

import maformer_mm  # noqa: F401  (registers MAFormer; lets torch's safe loader read mmengine checkpoints)
from maformer_mm.datasets.synthetic import ShapesSet  # what tools/make_demo_data.py writes
from tests.helpers import (
    REPO,
    USER_ARCH,
    backbone_override,
    memoised_package_config_index,
    run_launcher,
    run_tool,
    widths,
)

TOOLS = REPO / 'tools'


def build_model(cfg: Config) -> torch.nn.Module:
    """The model of `cfg`, built as mmengine's Runner builds it (a top-level `data_preprocessor` joins the model)."""
    init_default_scope(cfg.default_scope)
    if cfg.get('data_preprocessor') is not None:
        cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(cfg.model)


def save_initial_checkpoint(config: Path, path: Path) -> Path:
    """Builds the model `config` describes, initialises it as training starts, and saves its weights in the form of
    an mmengine checkpoint (`meta`, `state_dict`)."""
    with memoised_package_config_index():
        model = build_model(Config.fromfile(str(config)))
    model.init_weights()
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return path


def _log(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def _metric(log: str, name: str) -> float:
    return float(re.search(re.escape(name) + r': (-?\d+\.\d+)', log).group(1))


# A user's Faster R-CNN config outside the repository: inherits ours by path, keeps its tta_model and tta_pipeline,
# points at generated COCO data (3 classes), shrinks the backbone and the heads. One image per batch, as each of the
# two dist_test processes gets.
FASTER_CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
metainfo = dict(classes=('circle', 'square', 'triangle'))
model = dict(
    {backbone},
    neck=dict(in_channels={widths}, out_channels=64),
    rpn_head=dict(in_channels=64, feat_channels=64),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=64),
                  bbox_head=dict(in_channels=64, fc_out_channels=128, num_classes=3)))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
"""
# The config's TTA pipeline (three scales x flip) at the generated images' size instead of COCO's.
TTA_SCALES = [f'tta_pipeline.1.transforms.0.{i}.scale=({s},{s})' for i, s in enumerate((128, 64, 192))]


@pytest.fixture(scope='module')
def faster(tmp_path_factory):
    """Generated COCO data (2 val images, 96x96), the user's Faster R-CNN config, its checkpoint, and one
    `tools/test.py --tta --show-dir --out` run on them."""
    root = tmp_path_factory.mktemp('faster')
    ShapesSet(num_train=2, num_val=2, size=(96, 96)).write_coco(str(root / 'data'))
    config = root / 'faster_config.py'
    config.write_text(
        FASTER_CONFIG.format(
            base=str(REPO / 'configs' / 'faster_rcnn_maformer_t.py'),
            root=str(root / 'data') + '/',
            widths=widths(USER_ARCH),
            backbone=backbone_override(drop_path_rate=0.0, init_cfg=None),
        )
    )
    ckpt = save_initial_checkpoint(config, root / 'faster.pth')
    proc = run_tool(
        [
            TOOLS / 'test.py',
            config,
            ckpt,
            '--tta',
            '--show-dir',
            root / 'vis',
            '--out',
            root / 'one.pkl',
            '--work-dir',
            root / 'one',
            '--cfg-options',
            *TTA_SCALES,
        ],
        cwd=root,
    )
    return root, config, ckpt, _log(proc)


def test_detection_tta_runs_the_configs_tta_model_and_prints_metrics(faster):
    root, _, _, log = faster
    assert "type='DetTTAModel'" in log  # the model the runner was built from
    assert 0 <= _metric(log, 'coco/bbox_mAP') <= 1 and 'Average Precision' in log
    with open(root / 'one.pkl', 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2
    for result in results:
        assert 'flip' in result  # a meta key that only the tta_pipeline packs
        assert 0 < len(result['pred_instances']['bboxes']) <= 100  # merged: tta_model's max_per_img
        assert result['pred_instances']['bboxes'].max() <= 96  # in the original image's frame


def test_show_dir_writes_the_drawn_detections(faster):
    root, _, _, _ = faster
    drawn = sorted((root / 'vis').glob('*.jpg')) + sorted((root / 'vis').glob('*.png'))
    assert sorted(p.stem for p in drawn) == sorted(p.stem for p in (root / 'data' / 'val').iterdir())
    from PIL import Image

    assert Image.open(drawn[0]).size[1] == 96  # ground truth and prediction side by side, at the image's size


def test_dist_test_in_two_processes_gives_the_single_process_results(faster):
    """tools/dist_test.sh: torchrun starts two test.py processes (gloo on CPU), each tests one image; the gathered
    predictions and the metrics are those of the single-process run."""
    root, config, ckpt, single_log = faster
    proc = run_launcher(
        [
            TOOLS / 'dist_test.sh',
            config,
            ckpt,
            '2',
            '--tta',
            '--out',
            root / 'two.pkl',
            '--work-dir',
            root / 'two',
            '--cfg-options',
            *TTA_SCALES,
        ],
        root,
    )
    log = _log(proc)
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed training: True' in log and 'GPU number: 2' in log  # mmengine's name for world size
    assert re.search(r'Epoch\(test\) \[1/1\]', log)  # 2 images, one per process
    with open(root / 'one.pkl', 'rb') as f:
        one = pickle.load(f)
    with open(root / 'two.pkl', 'rb') as f:
        two = pickle.load(f)
    assert [r['img_id'] for r in two] == [r['img_id'] for r in one] and len(two) == 2
    for a, b in zip(one, two):
        assert len(a['pred_instances']['bboxes']) > 0
        torch.testing.assert_close(b['pred_instances']['bboxes'], a['pred_instances']['bboxes'])
        torch.testing.assert_close(b['pred_instances']['scores'], a['pred_instances']['scores'])
    for metric in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert _metric(log, metric) == _metric(single_log, metric), metric


# A user's UperNet config outside the repository: the seg tests' shrunk demo config (tests/test_seg/test_seg_tools.py).
def test_show_dir_writes_the_drawn_segmentation(tmp_path):
    from tests.test_seg.test_seg_tools import DEMO_CONFIG, user_seg_config

    ShapesSet(num_train=2, num_val=2, size=(64, 64)).write_ade(str(tmp_path / 'data'))
    config = tmp_path / 'seg_config.py'
    config.write_text(user_seg_config(str(DEMO_CONFIG), str(tmp_path / 'data') + '/'))
    ckpt = save_initial_checkpoint(config, tmp_path / 'seg.pth')
    proc = run_tool(
        [TOOLS / 'test.py', config, ckpt, '--show-dir', tmp_path / 'vis', '--work-dir', tmp_path / 'w'], cwd=tmp_path
    )
    assert 0 <= _metric(_log(proc), 'mIoU') <= 100
    drawn = sorted((tmp_path / 'vis').rglob('*.png'))
    names = sorted(p.stem for p in (tmp_path / 'data' / 'images' / 'validation').iterdir())
    assert len(drawn) == 2 and all(any(n in p.name for p in drawn) for n in names)


def test_classification_test_prints_the_top1_of_its_predictions(tmp_path):
    """tools/test.py on an ImageNet-style config (mmpretrain) and a generated image-folder set prints top-1, and it
    is the share of images whose predicted class, computed here with the same weights, is right."""
    from mmengine.runner import Runner

    from tests.test_cls.test_cls_pretrain import CROP_64, user_cls_config, write_image_folders

    write_image_folders(tmp_path / 'data', dict(val=6))
    config = tmp_path / 'cls_config.py'
    config.write_text(user_cls_config(str(tmp_path / 'data')))
    ckpt = save_initial_checkpoint(config, tmp_path / 'cls.pth')
    proc = run_tool(
        [TOOLS / 'test.py', config, ckpt, '--work-dir', tmp_path / 'w', '--cfg-options', *CROP_64], cwd=tmp_path
    )
    top1 = _metric(_log(proc), 'accuracy/top1')

    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict({key: int(value) for key, value in (arg.split('=') for arg in CROP_64)})  # crops at 64
    model = build_model(cfg)
    model.load_state_dict(torch.load(ckpt, map_location='cpu')['state_dict'])
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for batch in Runner.build_dataloader(cfg.test_dataloader):
            for sample in model.test_step(batch):
                correct += int(sample.pred_label == sample.gt_label)
                total += 1
    assert total == 6
    assert top1 == pytest.approx(100 * correct / total, abs=0.01)
