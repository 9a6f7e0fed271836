import pytest
import torch

from maformer_mm.layers import pad_to_multiple, window_partition, window_unpartition


@pytest.mark.parametrize('hw', [(14, 14), (13, 17), (3, 5), (7, 22)])
def test_partition_unpartition_is_identity(hw):
    x = torch.randn(2, *hw, 6)
    windows, pad_hw = window_partition(x, 7)
    assert pad_hw == (-(-hw[0] // 7) * 7, -(-hw[1] // 7) * 7)
    assert windows.shape == (2 * pad_hw[0] * pad_hw[1] // 49, 49, 6)
    assert torch.equal(window_unpartition(windows, 7, pad_hw, hw), x)


def test_partition_groups_each_window():
    x = torch.arange(16.0).view(1, 4, 4, 1)
    windows, _ = window_partition(x, 2)
    assert windows[0, :, 0].tolist() == [0.0, 1.0, 4.0, 5.0]
    assert windows[1, :, 0].tolist() == [2.0, 3.0, 6.0, 7.0]


def test_pad_to_multiple_pads_bottom_right_with_zeros():
    x = torch.ones(1, 5, 6, 2)
    padded, hw = pad_to_multiple(x, 4)
    assert hw == (8, 8)
    assert padded[:, :5, :6].eq(1).all() and padded[:, 5:].eq(0).all() and padded[:, :, 6:].eq(0).all()
    same, _ = pad_to_multiple(torch.ones(1, 8, 8, 2), 4)
    assert same.shape == (1, 8, 8, 2)
