"""`tools/train.py CFG --amp` on CUDA: mmengine's AmpOptimWrapper (fp16, dynamic loss scaling) trains
Mask R-CNN MAFormer-T for a few iterations with finite losses; the checkpoint holds its loss scaler."""

import json
import math
import pickle

import pytest
import torch

from maformer_mm.checkpoint import load_mmengine_checkpoint
from tests.helpers import DEMO_DET_CONFIG, REPO, run_tool
from tests.test_gpu import requires_cuda

CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
"""


@requires_cuda
def test_train_amp_on_cuda(tmp_path):
    run_tool(
        [
            REPO / 'tools' / 'make_demo_data.py',
            'coco',
            '--out',
            tmp_path / 'data',
            '--train',
            8,
            '--val',
            4,
            '--size',
            160,
            160,
        ],
        cwd=REPO,
    )
    config = tmp_path / 'amp.py'
    config.write_text(CONFIG.format(base=str(DEMO_DET_CONFIG), root=str(tmp_path / 'data') + '/'))
    work = tmp_path / 'work'
    proc = run_tool([REPO / 'tools' / 'train.py', config, '--amp', '--work-dir', work], cwd=tmp_path)
    assert proc.returncode == 0 and "type='AmpOptimWrapper'" in next(work.glob('*/*.log')).read_text()
    scalars = [json.loads(line) for line in next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    losses = [s['loss'] for s in scalars if 'loss' in s]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)  # 2 epochs x 4 iterations
    # torch.load refuses the message hub of an mmengine checkpoint (weights_only); the project's loader admits it
    ckpt = load_mmengine_checkpoint(work / 'epoch_2.pth', map_location='cpu')
    assert 'loss_scaler' in ckpt['optimizer'] and ckpt['optimizer']['loss_scaler']['scale'] > 0
    assert ckpt['meta']['iter'] == 8


def test_amp_checkpoint_reads_cpu_stand_in(tmp_path):
    """What the CUDA test reads back: an mmengine checkpoint with its message hub and the AmpOptimWrapper's loss
    scaler. torch.load (weights only) refuses the hub's HistoryBuffers; load_mmengine_checkpoint reads it all."""
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance('amp_checkpoint_stand_in')
    hub.update_scalar('train/loss', 1.5)
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    path = tmp_path / 'epoch_2.pth'
    torch.save(
        dict(
            meta=dict(iter=8),
            state_dict={},
            message_hub=hub.state_dict(),
            optimizer=dict(state={}, param_groups=[], loss_scaler=scaler.state_dict()),
        ),
        path,
    )
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu')
    ckpt = load_mmengine_checkpoint(path, map_location='cpu')
    assert ckpt['optimizer']['loss_scaler']['scale'] == 1024.0 and ckpt['meta']['iter'] == 8
