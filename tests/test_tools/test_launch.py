"""The process group that a distributed run joins is destroyed when the run ends, also when it fails."""
import pytest
import torch.distributed as dist

from maformer_mm.tools.launch import closing_process_group


def _join_alone(tmp_path) -> None:
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)


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
    with closing_process_group():
        pass
    assert not dist.is_initialized()
