"""Several runs in one process (the demos train then test; notebooks and these tests run many): each run logs
into its own work dir, although mmdet's runtime base names one visualizer for the whole process."""

import json
from pathlib import Path

from maformer_mm.tools import train
from maformer_mm.visualization.curves import read_curve
from tests.helpers import make_det_workspace


def _scalars(work_dir: Path) -> list:
    paths = sorted(work_dir.glob('*/vis_data/scalars.json'))
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


def test_each_run_logs_its_scalars_into_its_own_work_dir(tmp_path):
    config = make_det_workspace(tmp_path, num_train=2, num_val=1)
    first, second = tmp_path / 'first', tmp_path / 'second'
    runners = [train.main([str(config), '--work-dir', str(w), '--device', 'cpu']) for w in (first, second)]
    assert runners[0].visualizer is not runners[1].visualizer
    for work_dir in (first, second):
        records = _scalars(work_dir)
        assert [r['iter'] for r in records if 'loss' in r] == [1], work_dir  # one iteration, logged once here
        assert any('coco/bbox_mAP' in r for r in records)
        assert len(read_curve(str(work_dir)).loss) == 1
