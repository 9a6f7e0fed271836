"""The project's tools on a generated ADE20K-layout set, run as a user runs them: train, test (per-class
IoU and mIoU, --tta, --out), infer, mmseg's stock train.py, and a user config outside the repository
that inherits ours by path; mmseg's inference API on odd image sizes, whole-image and sliding-window."""

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO, USER_ARCH, backbone_override, run_tool, widths

TOOLS = REPO / 'tools'
DEMO_CONFIG = REPO / 'configs' / 'upernet_maformer_t_demo.py'

# A user's own config, outside the repository: inherits the demo config by path, points at small data,
# shrinks the backbone, the heads and the crops.
USER_CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
crop_size = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop_size),
    {backbone},
    decode_head=dict(in_channels={widths}, channels=32),
    auxiliary_head=dict(in_channels=128, channels=16))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(64, 64), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""


def user_seg_config(base: str, root: str) -> str:
    """USER_CONFIG for `base` and the data under `root`."""
    return USER_CONFIG.format(base=base, root=root, backbone=backbone_override(img=64), widths=widths(USER_ARCH))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Generated data, a user config in a temp dir, and two iterations of training with tools/train.py."""
    root = tmp_path_factory.mktemp('seg')
    run_tool(
        [TOOLS / 'make_demo_data.py', 'ade', '--out', root / 'data', '--train', 4, '--val', 2, '--size', 64, 64],
        cwd=REPO,
    )
    config = root / 'user_config.py'
    config.write_text(user_seg_config(str(DEMO_CONFIG), str(root / 'data') + '/'))
    work_dir = root / 'work'
    proc = run_tool([TOOLS / 'train.py', config, '--work-dir', work_dir, '--auto-scale-lr'], cwd=root)
    return root, config, work_dir, proc.stdout + proc.stderr


def _miou(log: str) -> float:
    return float(re.search(r'mIoU: (\d+\.\d+)', log).group(1))


def test_train_runs_logs_evaluates_and_saves(trained):
    _, _, work_dir, log = trained
    assert re.search(r'Iter\(train\) \[2/2\].*decode\.loss_ce: \d', log)
    assert 'Scaling the original LR by 0.25' in log  # --auto-scale-lr: batch 2 against the demo's 8
    assert 0 <= _miou(log) <= 100
    assert (work_dir / 'iter_2.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')


def test_test_tool_prints_per_class_iou_and_miou(trained):
    root, config, work_dir, _ = trained
    out = root / 'results.pkl'
    proc = run_tool(
        [TOOLS / 'test.py', config, work_dir / 'iter_2.pth', '--out', out, '--work-dir', root / 'test_work'], cwd=root
    )
    log = proc.stdout + proc.stderr
    assert 'per class results' in log
    for name in ('circle', 'square', 'triangle'):
        assert re.search(rf'\|\s+{name}\s+\|\s+(\d+\.\d+|nan)\s+\|', log), name
    assert 0 <= _miou(log) <= 100
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2 and results[0]['pred_sem_seg']['data'].shape == (1, 64, 64)


def test_test_tool_with_tta(trained, tmp_path):
    _, config, work_dir, _ = trained
    proc = run_tool([TOOLS / 'test.py', config, work_dir / 'iter_2.pth', '--tta', '--work-dir', tmp_path], cwd=tmp_path)
    assert 0 <= _miou(proc.stdout + proc.stderr) <= 100


def test_mmseg_stock_train_script_runs_our_config(trained, tmp_path):
    import mmseg

    _, config, _, _ = trained
    stock = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    proc = run_tool([stock, config, '--work-dir', tmp_path / 'stock'], cwd=tmp_path)
    assert 'Iter(train) [2/2]' in proc.stdout + proc.stderr
    assert (tmp_path / 'stock' / 'iter_2.pth').is_file()


def test_infer_draws_predictions(trained, tmp_path):
    root, config, work_dir, _ = trained
    proc = run_tool(
        [
            TOOLS / 'infer.py',
            root / 'data' / 'images' / 'validation',
            config,
            work_dir / 'iter_2.pth',
            '--out-dir',
            tmp_path / 'vis',
        ],
        cwd=root,
    )
    drawn = sorted((tmp_path / 'vis' / 'vis').glob('*.jpg'))
    assert len(drawn) == 2 and 'wrote 2 images' in proc.stdout
    assert Image.open(drawn[0]).size == (64, 64)


@pytest.mark.parametrize(
    'test_cfg', [dict(mode='whole'), dict(mode='slide', crop_size=(48, 48), stride=(32, 32))], ids=lambda c: c['mode']
)
def test_inference_api_on_an_odd_image_size(trained, tmp_path, test_cfg):
    """mmseg's own API with the trained checkpoint: the prediction has exactly the image's size."""
    from mmseg.apis import inference_model, init_model

    import maformer_mm  # noqa: F401

    _, config, work_dir, _ = trained
    image = tmp_path / 'odd.jpg'
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (67, 93, 3), dtype=np.uint8)).save(image)
    model = init_model(
        str(config), str(work_dir / 'iter_2.pth'), device='cpu', cfg_options=dict(model=dict(test_cfg=test_cfg))
    )
    assert model.test_cfg.mode == test_cfg['mode']
    result = inference_model(model, str(image))
    assert result.pred_sem_seg.data.shape == (1, 67, 93)
    assert result.seg_logits.data.shape == (3, 67, 93)
    assert set(result.pred_sem_seg.data.unique().tolist()) <= {0, 1, 2}
