"""tools/test.py, tools/infer.py and the demos run on the GPU when one is present, and `--device cpu`
overrides. Each tool runs in this process through its `main(argv)`; the device it used is read from
the CUDA allocator: a run on the GPU allocates CUDA memory, a run on the CPU none."""
from typing import Callable

import pytest
import torch

from tests.helpers import REPO, make_det_workspace, run_tool
from tests.test_gpu import requires_cuda


def cuda_bytes_allocated_by(fn: Callable[[], object]) -> int:
    """Peak CUDA memory that `fn` allocated above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """(config, checkpoint, folder) of a small Mask R-CNN MAFormer trained by tools/train.py on its default
    device (the GPU)."""
    root = tmp_path_factory.mktemp('device')
    config = make_det_workspace(root, num_train=4, num_val=2, epochs=1)
    run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', root / 'work'], cwd=root)
    return str(config), str(root / 'work' / 'epoch_1.pth'), root


@requires_cuda
def test_test_tool_uses_the_gpu_unless_told(trained):
    from maformer_mm.tools.test import main
    config, ckpt, root = trained
    metrics = {}
    assert cuda_bytes_allocated_by(lambda: metrics.update(gpu=main([config, ckpt, '--work-dir', str(root / 'g')]))) > 0
    assert cuda_bytes_allocated_by(lambda: metrics.update(
        cpu=main([config, ckpt, '--work-dir', str(root / 'c'), '--device', 'cpu']))) == 0
    assert 'coco/bbox_mAP' in metrics['gpu'] and 'coco/bbox_mAP' in metrics['cpu']


@requires_cuda
def test_infer_tool_uses_the_gpu_unless_told(trained):
    from maformer_mm.tools.infer import main
    config, ckpt, root = trained
    images = str(root / 'data' / 'val')
    written = {}
    assert cuda_bytes_allocated_by(lambda: written.update(gpu=main([images, config, ckpt, '--out-dir',
                                                                    str(root / 'ig')]))) > 0
    assert cuda_bytes_allocated_by(lambda: written.update(cpu=main([images, config, ckpt, '--out-dir',
                                                                    str(root / 'ic'), '--device', 'cpu']))) == 0
    assert len(written['gpu'].vis) == len(written['cpu'].vis) == 2


@requires_cuda
@pytest.mark.parametrize('demo, length', [('demo', ['--epochs', '1']), ('demo_seg', ['--iters', '2'])])
def test_demos_use_the_gpu_unless_told(demo, length, tmp_path):
    import importlib
    main = importlib.import_module(f'maformer_mm.tools.{demo}').main
    common = ['--num-train', '8', '--num-val', '2', '--image-size', '96', '--num-vis', '1', *length]
    gpu = cuda_bytes_allocated_by(lambda: main(['--work-dir', str(tmp_path / 'g'), '--data-root',
                                                str(tmp_path / 'data'), *common]))
    cpu = cuda_bytes_allocated_by(lambda: main(['--work-dir', str(tmp_path / 'c'), '--data-root',
                                                str(tmp_path / 'data'), *common, '--device', 'cpu']))
    assert gpu > 0 and cpu == 0
