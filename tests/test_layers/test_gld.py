import torch

from maformer_mm.layers import GLD, MAFBlock, global_grid, resize_gld_fc, resize_to_grid


def test_global_grid_follows_the_ratio():
    assert global_grid((56, 56), 0.5) == (40, 40)
    assert global_grid((28, 28), 0.5) == (20, 20)
    assert global_grid((2, 2), 0.01) == (1, 1)


def test_gld_shapes_for_any_input_size():
    gld = GLD((16, 16), 0.5)
    assert gld.fc.weight.shape == (11 * 11, 256)
    for hw in [(16, 16), (8, 8), (33, 21), (5, 40)]:
        assert gld(torch.randn(2, *hw, 6)).shape == (2, 121, 6)


def test_resize_to_grid_area_pools_when_shrinking_and_skips_same_size():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert resize_to_grid(x, (4, 4)) is x
    torch.testing.assert_close(resize_to_grid(x, (2, 2)), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    assert resize_to_grid(x, (8, 3)).shape == (1, 1, 8, 3)


def test_gld_output_does_not_depend_on_window_padding():
    """The MAF block feeds GLD the unpadded map: padding the input to the window grid must not change it."""
    block = MAFBlock(16, 2, window_size=7, ref_hw=(8, 8)).eval()
    x = torch.randn(1, 10, 12, 16)  # pads to 14 x 14 for the windows
    captured = []
    block.gld.register_forward_hook(lambda m, i, o: captured.append((i[0].shape, o)))
    block(x)
    ((in_shape, out),) = captured
    assert in_shape == (1, 10, 12, 16)
    torch.testing.assert_close(out, block.gld(block.norm1(x)))


def test_gld_fc_interpolates_for_another_grid():
    src = GLD((16, 16), 0.5)
    dst = GLD((8, 8), 0.25)
    dst.load_state_dict(src.state_dict())
    assert dst.fc.weight.shape == (16, 64)
    # a uniform averaging FC stays a uniform averaging FC
    w, b = resize_gld_fc(torch.full((121, 256), 1 / 256), torch.zeros(121), (8, 8), (4, 4))
    torch.testing.assert_close(w, torch.full((16, 64), 1 / 64))
    assert b.shape == (16,)
