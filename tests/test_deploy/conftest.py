"""The deploy tests' trained tiny detectors, shared by their modules."""

from pathlib import Path

import pytest

from maformer_mm.datasets.synthetic import ShapesSet
from maformer_mm.tools import train as train_tool
from tests.test_deploy.tiny_detectors import write_configs


@pytest.fixture(scope='session')
def workspace(tmp_path_factory) -> dict:
    """The generated data set, a config a kind, and a trainer that trains each kind once (4 iterations) on demand."""
    root = tmp_path_factory.mktemp('whole_detectors')
    ShapesSet(num_train=4, num_val=4, size=(128, 96), class_hues=True).write_coco(str(root / 'data'))
    configs = write_configs(root, root / 'data')
    checkpoints = {}

    def checkpoint(kind: str) -> Path:
        if kind not in checkpoints:
            work_dir = root / kind
            train_tool.main([str(configs[kind]), '--work-dir', str(work_dir), '--device', 'cpu'])
            checkpoints[kind] = work_dir / 'epoch_2.pth'
        return checkpoints[kind]

    return dict(root=root, configs=configs, checkpoint=checkpoint)
