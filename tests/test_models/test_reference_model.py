"""Whole MAFormer forwards against the composition of the reference blocks (tests/reference), same weights."""

import pytest
import torch

from maformer_mm.layers import set_fused_attn
from maformer_mm.models import MAFormer
from tests import reference as ref
from tests.helpers import TINY_ARCH, TINY_CFG

F64 = dict(atol=1e-8, rtol=1e-6)


def _compare(model: MAFormer, images: torch.Tensor, fused: bool = True, **ref_kwargs) -> None:
    ref.randomize_(model.double()).eval()
    set_fused_attn(model, fused)
    with torch.no_grad():
        outs = model(images)
    expected = ref.maformer(images, model.state_dict(), **ref_kwargs)
    assert len(outs) == len(expected) and all(o.is_contiguous() for o in outs)
    for i, (out, exp) in enumerate(zip(outs, expected)):
        torch.testing.assert_close(out, exp, **F64, msg=lambda m, i=i: f'output {i}: {m}')


def _tiny_reference_args(**extra) -> dict:
    return dict(
        embed_dims=TINY_ARCH['embed_dims'],
        depths=TINY_ARCH['depths'],
        num_heads=TINY_ARCH['num_heads'],
        window_size=TINY_CFG['window_size'],
        pretrain_img_size=TINY_CFG['pretrain_img_size'],
        **extra,
    )


@pytest.mark.parametrize('hw, fused', [((64, 64), True), ((37, 93), True), ((150, 22), False), ((5, 3), True)])
def test_small_maformer(tiny_cfg, hw, fused):
    """Odd sizes pad the patch embedding, the windows and every merge; GLD grows one axis and shrinks the other."""
    model = MAFormer(**tiny_cfg, out_indices=(0, 1, 2, 3))
    _compare(model, torch.rand(2, 3, *hw, dtype=torch.float64), fused, **_tiny_reference_args())


def test_small_maformer_with_stage3_windows(tiny_cfg):
    model = MAFormer(**tiny_cfg, vit_window_size=3, vit_global_blocks=(1,), out_indices=(1, 3))
    images = torch.rand(1, 3, 118, 70, dtype=torch.float64)  # stage 3: 8 x 5, windows of 3 with padding
    _compare(model, images, **_tiny_reference_args(vit_window_size=3, vit_global_blocks=(1,), out_indices=(1, 3)))


def test_other_gld_ratio_and_pretraining_size(tiny_cfg):
    tiny_cfg.update(gld_ratio=0.3, pretrain_img_size=(48, 80))
    model = MAFormer(**tiny_cfg)
    images = torch.rand(1, 3, 61, 45, dtype=torch.float64)
    _compare(model, images, **_tiny_reference_args(gld_ratio=0.3) | dict(pretrain_img_size=(48, 80)))


@pytest.mark.parametrize('hw', [(64, 80), (230, 36)])
def test_maformer_t(hw):
    """MAFormer-T as the configs build it (window 7, GLD grids 56x56 -> 40x40 and 28x28 -> 20x20). 64x80 grows
    both axes to the GLD grids; 230x36 shrinks the rows (58 -> 56, 29 -> 28) and grows the columns."""
    model = MAFormer(arch='tiny', drop_path_rate=0.0)
    images = torch.rand(1, 3, *hw, dtype=torch.float64)
    _compare(model, images, embed_dims=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16))


def test_init_weights_fills_the_relative_position_tables(tiny_cfg):
    """Without init_weights every table is zero and the relative-position bias is silently absent."""
    model = MAFormer(**tiny_cfg)
    model.init_weights()
    tables = [m.attn.relative_position_bias_table for s in model.stages[:2] for m in s.blocks]
    for table in tables:
        assert table.abs().sum() > 0 and 0.01 < table.std() < 0.03  # truncated normal, std 0.02
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(0.01 < m.weight.std() < 0.03 and not m.bias.any() for m in linears if m.bias is not None)
