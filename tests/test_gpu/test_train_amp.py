"""`tools/train.py CFG --amp` on CUDA: mmengine's AmpOptimWrapper (fp16, dynamic loss scaling) trains
Mask R-CNN MAFormer-T for a few iterations with finite losses; the checkpoint holds its loss scaler."""
import json
import math

import torch

import maformer_mm  # noqa: F401  (torch's safe loader reads mmengine checkpoints)
from tests.helpers import DEMO_DET_CONFIG, REPO, run_tool
from tests.test_gpu import requires_cuda

CONFIG = '''
_base_ = [{base!r}]
data_root = {root!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=2, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
'''


@requires_cuda
def test_train_amp_on_cuda(tmp_path):
    run_tool([REPO / 'tools' / 'make_demo_data.py', 'coco', '--out', tmp_path / 'data', '--train', 8, '--val', 4,
              '--size', 160, 160], cwd=REPO)
    config = tmp_path / 'amp.py'
    config.write_text(CONFIG.format(base=str(DEMO_DET_CONFIG), root=str(tmp_path / 'data') + '/'))
    work = tmp_path / 'work'
    proc = run_tool([REPO / 'tools' / 'train.py', config, '--amp', '--work-dir', work], cwd=tmp_path)
    assert proc.returncode == 0 and "type='AmpOptimWrapper'" in next(work.glob('*/*.log')).read_text()
    scalars = [json.loads(line) for line in next(work.glob('*/vis_data/scalars.json')).read_text().splitlines()]
    losses = [s['loss'] for s in scalars if 'loss' in s]
    assert len(losses) == 8 and all(math.isfinite(v) for v in losses)  # 2 epochs x 4 iterations
    ckpt = torch.load(work / 'epoch_2.pth', map_location='cpu')
    assert 'loss_scaler' in ckpt['optimizer'] and ckpt['optimizer']['loss_scaler']['scale'] > 0
    assert ckpt['meta']['iter'] == 8
