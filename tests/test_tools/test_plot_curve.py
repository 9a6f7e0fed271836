"""tools/plot_curve.py on work dirs written as mmengine's LocalVisBackend writes them: epoch- and iteration-based
runs, a resumed run, and the errors that name what is missing."""

import json
from pathlib import Path

import pytest
from PIL import Image

from maformer_mm.tools.plot_curve import main
from maformer_mm.visualization.curves import read_curve


def _log(work_dir: Path, run: str, records) -> None:
    folder = work_dir / run / 'vis_data'
    folder.mkdir(parents=True)
    (folder / 'scalars.json').write_text(''.join(json.dumps(r) + '\n' for r in records))


def test_epoch_based_validation_sits_at_the_epochs_last_iteration(tmp_path, capsys):
    _log(
        tmp_path,
        '20260101_000000',
        [
            dict(lr=0.1, loss=2.0, epoch=1, iter=1, step=1),
            dict(lr=0.1, loss=1.5, epoch=1, iter=2, step=2),
            {'coco/bbox_mAP': 0.1, 'coco/segm_mAP': 0.2, 'step': 1},
            dict(lr=0.1, loss=1.0, epoch=2, iter=3, step=3),
            dict(lr=0.1, loss=0.5, epoch=2, iter=4, step=4),
            {'coco/bbox_mAP': 0.3, 'coco/segm_mAP': 0.4, 'step': 2},
        ],
    )
    curve = main([str(tmp_path)])
    assert curve.loss == [(1, 2.0), (2, 1.5), (3, 1.0), (4, 0.5)]
    assert curve.metric_name == 'coco/bbox_mAP' and curve.metric == [(2, 0.1), (4, 0.3)]
    assert read_curve(str(tmp_path), 'coco/segm_mAP').metric == [(2, 0.2), (4, 0.4)]
    assert Image.open(tmp_path / 'curve.png').size == (800, 450)
    assert '4 loss points, 2 points of coco/bbox_mAP' in capsys.readouterr().out


def test_a_resumed_run_replaces_the_iterations_it_repeats(tmp_path):
    _log(tmp_path, '20260101_000000', [dict(loss=3.0, iter=i, step=i) for i in range(1, 6)] + [dict(mIoU=10.0, step=4)])
    _log(
        tmp_path, '20260102_000000', [dict(loss=1.0, iter=i, step=i) for i in range(5, 9)] + [dict(mIoU=20.0, step=8)]
    )  # resumed from iteration 4
    curve = read_curve(str(tmp_path))
    assert curve.loss == [(1, 3.0), (2, 3.0), (3, 3.0), (4, 3.0), (5, 1.0), (6, 1.0), (7, 1.0), (8, 1.0)]
    assert curve.metric_name == 'mIoU' and curve.metric == [(4, 10.0), (8, 20.0)]


def test_errors_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'no \*/vis_data/scalars.json'):
        read_curve(str(tmp_path))
    _log(tmp_path, 'run', [dict(loss=1.0, step=1), dict(mIoU=5.0, step=1)])
    with pytest.raises(ValueError, match="no validation metric 'accuracy/top1'; it has mIoU"):
        read_curve(str(tmp_path), 'accuracy/top1')
    (tmp_path / 'run' / 'vis_data' / 'scalars.json').write_text('{"loss": 1, "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match='line 2, is not a JSON record'):
        read_curve(str(tmp_path))
