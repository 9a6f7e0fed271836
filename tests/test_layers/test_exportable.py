"""The changes that make MAFormer exportable leave its numbers as they were.

Each export form (the branch-free code an exporter traces, run eagerly inside `export_forms()`) is
compared with the eager form and with the code it replaced, copied here as it was, to 1e-6.
"""

import pytest
import torch
import torch.nn.functional as F

from maformer_mm.layers import (
    GLD,
    Attention,
    WindowAttention,
    adaptive_pool_weights,
    bilinear_weights,
    export_forms,
    pad_to_multiple,
    resize_to_grid,
    window_partition,
    window_unpartition,
)
from maformer_mm.layers import attention as attention_module
from maformer_mm.layers import blocks as blocks_module
from maformer_mm.models import MAFormer

# --- the code before the change, verbatim -------------------------------------------------------------------


def _old_merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


def _old_pad_to_multiple(x, multiple):
    _, h, w, _ = x.shape
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    return x, (h + pad_h, w + pad_w)


def _old_window_partition(x, window_size):
    x, (hp, wp) = _old_pad_to_multiple(x, window_size)
    b, _, _, c = x.shape
    x = x.view(b, hp // window_size, window_size, wp // window_size, window_size, c)
    windows = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window_size * window_size, c)
    return windows, (hp, wp)


def _old_window_unpartition(windows, window_size, pad_hw, hw):
    hp, wp = pad_hw
    h, w = hw
    c = windows.shape[-1]
    x = windows.view(-1, hp // window_size, wp // window_size, window_size, window_size, c)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, c)
    if hp != h or wp != w:
        x = x[:, :h, :w, :]
    return x


def _use_old_code(monkeypatch) -> None:
    """Puts the replaced functions back, so that a model computes what it computed before the change."""
    monkeypatch.setattr(attention_module._AttentionCore, 'merge_heads', staticmethod(_old_merge_heads))
    monkeypatch.setattr(blocks_module, 'window_partition', _old_window_partition)
    monkeypatch.setattr(blocks_module, 'window_unpartition', _old_window_unpartition)


# --- the pieces -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('n_in, n_out', [(56, 56), (100, 56), (57, 56), (13, 5), (200, 28), (7, 16), (3, 40)])
def test_pooling_matrix_is_adaptive_avg_pool(n_in, n_out):
    x = torch.randn(2, 3, n_in, n_in + 5)
    rows, cols = adaptive_pool_weights(n_in, n_out), adaptive_pool_weights(n_in + 5, n_out + 2)
    expected = F.adaptive_avg_pool2d(x, (n_out, n_out + 2))
    torch.testing.assert_close(rows @ x @ cols.T, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('n_in, n_out', [(3, 16), (7, 40), (13, 56), (37, 56), (55, 56), (20, 28)])
def test_bilinear_matrix_has_the_kernels_weights(n_in, n_out):
    """Bit-identical weights: the matrix applied to unit vectors is what F.interpolate gives for them."""
    eye = torch.eye(n_in).view(n_in, 1, n_in, 1)
    kernel = F.interpolate(eye, size=(n_out, 1), mode='bilinear', align_corners=False).view(n_in, n_out).T
    assert torch.equal(bilinear_weights(n_in, n_out), kernel)


@pytest.mark.parametrize(
    'hw',
    [(16, 16), (64, 40), (17, 16), (7, 9), (40, 9), (5, 100), (1, 1)],
    ids=['same', 'shrink', 'shrink-by-one', 'grow', 'shrink-h-grow-w', 'grow-h-shrink-w', 'one-pixel'],
)
def test_resize_export_form_matches_pooling_and_interpolation(hw):
    x = torch.randn(2, 8, *hw)
    eager = resize_to_grid(x, (16, 16))
    with export_forms():
        exported = resize_to_grid(x, (16, 16))
    assert exported.shape == (2, 8, 16, 16)
    torch.testing.assert_close(exported, eager, atol=1e-6, rtol=0)


def test_gld_export_form_matches_eager():
    gld = GLD((16, 16), 0.5)
    for hw in [(16, 16), (33, 21), (5, 40)]:
        x = torch.randn(2, *hw, 6)
        with export_forms():
            exported = gld(x)
        torch.testing.assert_close(exported, gld(x), atol=1e-6, rtol=0)


def test_merge_heads_is_the_old_flatten():
    q, k, v = torch.randn(3, 2, 4, 50, 8).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v)  # the non-contiguous layout SDPA returns on the CPU
    merged = Attention.merge_heads(out)
    assert merged.shape == (2, 50, 32) and merged.is_contiguous()
    assert torch.equal(merged, _old_merge_heads(out))


@pytest.mark.parametrize('hw', [(14, 14), (15, 9), (3, 5)])
def test_window_partition_export_form_matches_the_old_one(hw):
    x = torch.randn(2, *hw, 4)
    old_windows, old_pad = _old_window_partition(x, 7)
    for forced in (False, True):
        with export_forms() if forced else torch.no_grad():
            windows, pad = window_partition(x, 7)
            back = window_unpartition(windows, 7, pad, hw)
        assert pad == old_pad and torch.equal(windows, old_windows)
        assert torch.equal(back, _old_window_unpartition(old_windows, 7, old_pad, hw))
    with export_forms():  # the export graph pads always, by zero rows where none are needed
        padded, _ = pad_to_multiple(torch.randn(1, 14, 7, 2), 7)
    assert padded.shape == (1, 14, 7, 2)


def test_window_attention_initialises_its_own_table():
    """The table starts truncated-normal at std 0.02 without the backbone reaching in; the bias getter is renamed."""
    attn = WindowAttention(16, 4, window_size=7)
    table = attn.relative_position_bias_table
    assert 0.015 < table.std().item() < 0.025 and abs(table.mean().item()) < 0.005
    assert attn.get_attn_bias(torch.float32).shape == (1, 4, 49, 49)
    assert not hasattr(Attention, 'bias')


# --- whole models ---------------------------------------------------------------------------------------------


def _outputs(model, x):
    with torch.no_grad():
        return [o.clone() for o in model(x)]


@pytest.mark.parametrize('vit_window', [0, 2])
def test_tiny_maformer_matches_the_old_code_path(tiny_cfg, monkeypatch, vit_window):
    """Eager outputs are those of the old code, bit for bit; the export forms agree to 1e-6 of each output's
    scale (float32 rounding: a few units in the last place, the matrix products and the memory layouts being
    different), at the pretraining size, at odd sizes (window and patch-merging padding) and at sizes whose
    maps shrink or grow to the GLD grids."""
    model = MAFormer(**tiny_cfg, vit_window_size=vit_window).eval()
    sizes = [(64, 64), (61, 47), (96, 130), (33, 29), (40, 200)]
    inputs = [torch.randn(1, 3, *hw) for hw in sizes]
    new = [_outputs(model, x) for x in inputs]
    with export_forms():
        exported = [_outputs(model, x) for x in inputs]
    with monkeypatch.context() as patch:
        _use_old_code(patch)
        old = [_outputs(model, x) for x in inputs]
    for hw, before, after, export_form in zip(sizes, old, new, exported):
        for a, b, c in zip(before, after, export_form):
            assert torch.equal(a, b), hw  # eager: bit for bit
            assert c.shape == a.shape
            assert (c - a).abs().max() <= 1e-6 * a.abs().max(), hw


def test_checkpoint_keys_are_unchanged(tiny_cfg):
    """No new persistent state: the state dict holds exactly the parameters (the relative-position index is a
    non-persistent buffer), so checkpoints made before these changes load strictly."""
    model = MAFormer(**tiny_cfg)
    assert set(model.state_dict()) == {name for name, _ in model.named_parameters()}
    MAFormer(**tiny_cfg).load_state_dict(model.state_dict(), strict=True)
