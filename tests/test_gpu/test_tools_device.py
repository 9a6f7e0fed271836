"""tools/test.py, tools/infer.py and the demos run on the GPU when one is present, and `--device cpu`
overrides. Each tool runs in this process through its `main(argv)`; the device it used is read from
the CUDA allocator: a run on the GPU makes CUDA allocations, a run on the CPU none.

The signal is the allocator's accumulated count of allocation requests, which only
`torch.cuda.reset_accumulated_memory_stats` resets. Peak bytes would not do: mmengine's log processor calls
`torch.cuda.reset_peak_memory_stats()` on every logged iteration whenever CUDA exists, also in a CPU run, and
memory freed meanwhile (an earlier runner collected) can make a peak difference negative."""

from typing import Callable, Dict

import pytest
import torch

from tests.helpers import REPO, make_det_workspace, run_tool
from tests.test_gpu import requires_cuda

ALLOCATIONS = 'allocation.all.allocated'  # accumulated: requests served since start (or the last accumulated reset)


def cuda_allocations_by(
    fn: Callable[[], object],
    stats: Callable[[], Dict[str, int]] = torch.cuda.memory_stats,
    synchronize: Callable[[], None] = torch.cuda.synchronize,
) -> int:
    """How many CUDA allocations `fn` made (0: it ran on the CPU alone)."""
    synchronize()
    before = stats().get(ALLOCATIONS, 0)
    fn()
    synchronize()
    return stats().get(ALLOCATIONS, 0) - before


class _FakeAllocator:
    """The CUDA caching allocator's statistics as torch keeps them: current, peak and accumulated counters."""

    def __init__(self) -> None:
        self.current = self.peak = self.allocated = 0

    def malloc(self, n: int = 1) -> None:
        self.current += n
        self.allocated += n
        self.peak = max(self.peak, self.current)

    def free(self, n: int = 1) -> None:
        self.current -= n

    def reset_peak(self) -> None:  # what mmengine's log processor calls every logged iteration
        self.peak = self.current

    def stats(self) -> Dict[str, int]:
        return {'allocation.all.current': self.current, 'allocation.all.peak': self.peak, ALLOCATIONS: self.allocated}


def test_allocation_count_ignores_peak_resets_and_frees():
    """CPU stand-in: a CPU run that resets the peak statistics and frees an earlier run's memory counts zero
    allocations, a GPU run counts its own, whatever it freed or reset."""
    alloc = _FakeAllocator()
    alloc.malloc(5)  # an earlier GPU runner, collected during the next run

    def cpu_run() -> None:
        alloc.free(5)
        alloc.reset_peak()

    def gpu_run() -> None:
        alloc.malloc(3)
        alloc.reset_peak()
        alloc.free(3)

    assert cuda_allocations_by(cpu_run, alloc.stats, lambda: None) == 0
    assert cuda_allocations_by(gpu_run, alloc.stats, lambda: None) == 3


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
    assert cuda_allocations_by(lambda: metrics.update(gpu=main([config, ckpt, '--work-dir', str(root / 'g')]))) > 0
    assert (
        cuda_allocations_by(
            lambda: metrics.update(cpu=main([config, ckpt, '--work-dir', str(root / 'c'), '--device', 'cpu']))
        )
        == 0
    )
    assert 'coco/bbox_mAP' in metrics['gpu'] and 'coco/bbox_mAP' in metrics['cpu']


@requires_cuda
def test_infer_tool_uses_the_gpu_unless_told(trained):
    from maformer_mm.tools.infer import main

    config, ckpt, root = trained
    images = str(root / 'data' / 'val')
    written = {}
    assert (
        cuda_allocations_by(lambda: written.update(gpu=main([images, config, ckpt, '--out-dir', str(root / 'ig')]))) > 0
    )
    assert (
        cuda_allocations_by(
            lambda: written.update(cpu=main([images, config, ckpt, '--out-dir', str(root / 'ic'), '--device', 'cpu']))
        )
        == 0
    )
    assert len(written['gpu'].vis) == len(written['cpu'].vis) == 2


@requires_cuda
@pytest.mark.parametrize('demo, length', [('demo', ['--epochs', '1']), ('demo_seg', ['--iters', '2'])])
def test_demos_use_the_gpu_unless_told(demo, length, tmp_path):
    import importlib

    main = importlib.import_module(f'maformer_mm.tools.{demo}').main
    common = ['--num-train', '8', '--num-val', '2', '--image-size', '96', '--num-vis', '1', *length]
    gpu = cuda_allocations_by(
        lambda: main(['--work-dir', str(tmp_path / 'g'), '--data-root', str(tmp_path / 'data'), *common])
    )
    cpu = cuda_allocations_by(
        lambda: main(
            ['--work-dir', str(tmp_path / 'c'), '--data-root', str(tmp_path / 'data'), *common, '--device', 'cpu']
        )
    )
    assert gpu > 0 and cpu == 0
