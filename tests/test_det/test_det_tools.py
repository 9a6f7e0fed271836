"""The project's tools on generated COCO data, run as a user runs them: train, test, resume, infer,
mmdet's stock train.py, and a config outside the repository that inherits ours by path."""

import pickle
import re
from pathlib import Path

import pytest

from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint  # reads mmengine checkpoints as data
from tests.helpers import REPO, make_det_workspace, run_tool


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Generated data, a user config in a temp dir, and one epoch of training with tools/train.py."""
    root = tmp_path_factory.mktemp('det')
    config = make_det_workspace(root)
    work_dir = root / 'work'
    proc = run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', work_dir], cwd=root)
    return root, config, work_dir, proc.stdout + proc.stderr


def test_train_runs_logs_and_saves(trained):
    _, _, work_dir, log = trained
    assert re.search(r'Epoch\(train\) \[1\]\[2/2\].*loss: \d', log)
    assert 'coco/bbox_mAP' in log and 'coco/segm_mAP' in log
    assert (work_dir / 'epoch_1.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_1.pth')


def test_test_tool_prints_coco_metrics_and_dumps_results(trained):
    root, config, work_dir, _ = trained
    out = root / 'results.pkl'
    proc = run_tool(
        [REPO / 'tools' / 'test.py', config, work_dir / 'epoch_1.pth', '--out', out, '--work-dir', root / 'test_work'],
        cwd=root,
    )
    log = proc.stdout + proc.stderr
    for metric in ('coco/bbox_mAP', 'coco/segm_mAP'):
        value = float(re.search(re.escape(metric) + r': (-?[\d.]+)', log).group(1))
        assert -1 <= value <= 1
    assert 'Average Precision' in log  # pycocotools' table
    with open(out, 'rb') as f:
        results = pickle.load(f)
    assert len(results) == 2 and {'pred_instances', 'img_id'} <= set(results[0])


def test_resume_continues_from_the_checkpoint(trained, tmp_path):
    _, config, work_dir, _ = trained
    resumed_dir = tmp_path / 'resumed'
    resumed_dir.mkdir()
    proc = run_tool(
        [
            REPO / 'tools' / 'train.py',
            config,
            '--work-dir',
            resumed_dir,
            '--resume',
            work_dir / 'epoch_1.pth',
            '--cfg-options',
            'train_cfg.max_epochs=2',
        ],
        cwd=tmp_path,
    )
    log = proc.stdout + proc.stderr
    assert 'resumed epoch: 1' in log
    assert 'Epoch(train) [1]' not in log and 'Epoch(train) [2][2/2]' in log
    ckpt = load_mmengine_checkpoint(resumed_dir / 'epoch_2.pth', map_location='cpu')  # torch.load refuses it
    assert ckpt['meta']['epoch'] == 2 and ckpt['meta']['iter'] == 4
    assert (work_dir / 'epoch_1.pth').is_file()  # the original is untouched


def test_missing_resume_checkpoint_is_named(trained, tmp_path):
    _, config, _, _ = trained
    proc = run_tool([REPO / 'tools' / 'train.py', config, '--resume', tmp_path / 'nope.pth'], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and 'nope.pth' in proc.stderr


def test_mmdet_stock_train_script_runs_our_config(trained, tmp_path):
    import mmdet

    _, config, _, _ = trained
    stock = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    proc = run_tool([stock, config, '--work-dir', tmp_path / 'stock'], cwd=tmp_path)
    assert 'Epoch(train) [1][2/2]' in proc.stdout + proc.stderr


def test_infer_draws_predictions(trained, tmp_path):
    root, config, work_dir, _ = trained
    proc = run_tool(
        [
            REPO / 'tools' / 'infer.py',
            root / 'data' / 'val',
            config,
            work_dir / 'epoch_1.pth',
            '--out-dir',
            tmp_path / 'vis',
            '--score-thr',
            0.0,
        ],
        cwd=root,
    )
    drawn = sorted((tmp_path / 'vis' / 'vis').glob('*.png'))
    assert len(drawn) == 2 and 'wrote 2 images' in proc.stdout


def test_missing_pretrained_weights_fail_at_start_naming_the_path(trained, tmp_path):
    _, config, _, _ = trained
    missing = tmp_path / 'missing_in1k.pth'
    pretrained = tmp_path / 'pretrained.py'
    pretrained.write_text(
        f'_base_ = [{str(config)!r}]\n'
        f"model = dict(backbone=dict(init_cfg=dict(_delete_=True, type='Pretrained', checkpoint={str(missing)!r})))\n"
    )
    proc = run_tool([REPO / 'tools' / 'train.py', pretrained, '--work-dir', tmp_path / 'w'], cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert (
        f'pretrained checkpoint not found: {missing} (model.backbone.init_cfg of {pretrained}). Train from scratch '
        f'with --no-pretrained, point at your file with --cfg-options model.backbone.init_cfg.checkpoint=PATH'
    ) in proc.stderr
    assert 'Epoch(train)' not in proc.stdout + proc.stderr
