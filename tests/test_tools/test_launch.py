"""The process group that a distributed run joins is destroyed when the run ends, also when it fails, and
gloo's worker threads end with it (a thread left for interpreter shutdown can abort the process)."""

import gc
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from maformer_mm.engine.launch import closing_process_group, gloo_worker_threads


def _join_alone(tmp_path) -> None:
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)


def _named_gloo_threads(expected: int, within: float = 10.0) -> int:
    """gloo_worker_threads() once it is `expected` (a new thread takes its name when it first runs) or time is up."""
    deadline = time.time() + within
    while gloo_worker_threads() != expected and time.time() < deadline:
        time.sleep(0.01)
    return gloo_worker_threads()


def _ddp_runner() -> SimpleNamespace:
    """A stand-in for mmengine's Runner: `model` is a DDP wrapper that has run one step and a collective."""
    model = DistributedDataParallel(torch.nn.Linear(4, 2))
    model(torch.randn(3, 4)).sum().backward()
    total = torch.ones(2)
    dist.all_reduce(total)
    return SimpleNamespace(model=model)


def test_the_group_is_destroyed_after_the_run(tmp_path):
    _join_alone(tmp_path)
    with closing_process_group():
        assert dist.is_initialized() and dist.get_world_size() == 1
    assert not dist.is_initialized()


def test_the_group_is_destroyed_when_the_run_fails(tmp_path):
    _join_alone(tmp_path)
    with pytest.raises(RuntimeError, match='training failed'), closing_process_group():
        raise RuntimeError('training failed')
    assert not dist.is_initialized()


def test_without_a_group_nothing_happens():
    with closing_process_group() as hold:
        runner = hold(SimpleNamespace(model=torch.nn.Linear(2, 2)))
    assert not dist.is_initialized() and isinstance(runner.model, torch.nn.Linear)


def test_the_held_runner_lets_go_of_ddp_and_gloo_threads_are_joined(tmp_path):
    _join_alone(tmp_path)
    with closing_process_group() as hold:
        runner = hold(_ddp_runner())
        assert _named_gloo_threads(2) == 2  # ProcessGroupGloo's default
    assert not dist.is_initialized()
    assert type(runner.model) is torch.nn.Linear  # the wrapped model stays usable
    assert gloo_worker_threads() == 0


def test_a_group_that_stays_referenced_keeps_its_threads_and_a_warning_says_so(tmp_path, mm_log):
    """The fault the hold avoids: destroy_process_group alone leaves the threads of a group DDP still holds."""
    _join_alone(tmp_path)
    runner = _ddp_runner()  # not held
    assert _named_gloo_threads(2) == 2
    with closing_process_group():
        pass
    assert not dist.is_initialized()
    assert gloo_worker_threads() == 2
    assert '2 gloo worker threads outlive the process group' in mm_log()
    del runner
    gc.collect()
    assert gloo_worker_threads() == 0
