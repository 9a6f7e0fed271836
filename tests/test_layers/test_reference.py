"""Every layer of the package against the independent reference in tests/reference, with the same weights.

The weights are random and of order one (norms that are not the identity, non-zero biases and relative-position
tables), the inputs are not normalised, attention has several heads, and both attention paths (SDPA and
explicit) are checked. Comparisons run in float64 to a tolerance far below any change of the maths; one
float32 case per module checks the 1e-5 agreement at the precision users run.
"""

import contextlib

import pytest
import torch

from maformer_mm.layers import (
    GLD,
    Attention,
    BlockOptions,
    CrossAttention,
    MAFBlock,
    ViTBlock,
    WindowAttention,
    global_grid,
    resize_gld_fc,
    resize_rel_pos_table,
    resize_to_grid,
    set_fused_attn,
)
from maformer_mm.layers.export import export_forms
from maformer_mm.models.backbones.maformer import MAFormerStage
from tests import reference as ref

F64 = dict(atol=1e-9, rtol=1e-7)
F32 = dict(atol=1e-5, rtol=1e-5)
RESIZE = dict(atol=1e-6, rtol=1e-5)  # the resizing helpers (and the export forms' matrices) are float32
FUSED = pytest.mark.parametrize('fused', [True, False], ids=['sdpa', 'explicit'])
# the eager forms on both attention paths, and the branch-free forms of an export graph (`export_forms`)
FORMS = pytest.mark.parametrize(
    'fused, export', [(True, False), (False, False), (True, True)], ids=['sdpa', 'explicit', 'export']
)


def _prepare(module: torch.nn.Module, fused: bool = True, dtype: torch.dtype = torch.float64) -> dict:
    """Random weights, eval mode, the chosen attention path; returns the weights by state-dict name."""
    ref.randomize_(module.to(dtype)).eval()
    set_fused_attn(module, fused)
    return module.state_dict()


def _map(*shape: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """An input that is far from normalised: a per-channel offset and scale."""
    c = shape[-1]
    return torch.randn(*shape, dtype=dtype) * torch.linspace(0.5, 2.0, c, dtype=dtype) + torch.linspace(
        -1.0, 1.0, c, dtype=dtype
    )


@FUSED
@pytest.mark.parametrize('window_size, heads', [(4, 3), (3, 2), (1, 4)])
def test_window_attention(fused, window_size, heads):
    attn = WindowAttention(24, heads, window_size)
    params = _prepare(attn, fused)
    windows = _map(5, window_size**2, 24)
    bias = ref.relative_position_bias(params['relative_position_bias_table'], window_size)
    expected = torch.stack([_self_attention(w, params, heads, bias) for w in windows])
    torch.testing.assert_close(attn(windows), expected, **F64)


def _self_attention(tokens, params, heads, bias=None):
    """The reference self-attention on a module's own state dict (names without a prefix)."""
    prefixed = {f'm.{k}': v for k, v in params.items()}
    return ref.self_attention(tokens, prefixed, 'm', heads, bias)


@FUSED
@pytest.mark.parametrize('n', [1, 17, 50])
def test_global_attention(fused, n):
    attn = Attention(24, 3)
    params = _prepare(attn, fused)
    x = _map(2, n, 24)
    torch.testing.assert_close(attn(x), torch.stack([_self_attention(t, params, 3) for t in x]), **F64)


@FUSED
@pytest.mark.parametrize('n, m', [(37, 11), (5, 40), (9, 1)])
def test_cross_attention(fused, n, m):
    attn = CrossAttention(24, 4)
    params = {f'c.{k}': v for k, v in _prepare(attn, fused).items()}
    x, context = _map(2, n, 24), _map(2, m, 24)
    expected = torch.stack([ref.cross_attention(a, b, params, 'c', 4) for a, b in zip(x, context)])
    torch.testing.assert_close(attn(x, context), expected, **F64)


def test_relative_position_bias_follows_the_swin_layout():
    """Two key positions at the same offset from their queries read the same table row; the zero offset reads
    the centre row; the layout is the one every Swin checkpoint uses."""
    window, heads = 3, 2
    attn = WindowAttention(8, heads, window)
    params = _prepare(attn)
    bias = ref.relative_position_bias(params['relative_position_bias_table'], window)
    table = params['relative_position_bias_table']
    assert torch.equal(bias[:, 0, 0], table[12])  # (0, 0) offset: centre of the 5 x 5 table
    assert torch.equal(bias[:, 0, 1], table[11])  # key one column right of the query: dx = -1
    assert torch.equal(bias[:, 0, 3], table[7])  # key one row below: dy = -1
    assert torch.equal(bias[:, 8, 0], table[24])  # query at (2, 2), key at (0, 0): dy = dx = 2
    zero_table = dict(params, relative_position_bias_table=torch.zeros_like(table))
    x = _map(2, 9, 8)
    assert not torch.allclose(_self_attention(x[0], params, heads, bias), _self_attention(x[0], zero_table, heads))


GLD_SIZES = [(8, 6), (11, 9), (5, 4), (13, 3), (3, 13), (1, 1), (8, 17)]


@pytest.mark.parametrize('hw', GLD_SIZES, ids=[f'{h}x{w}' for h, w in GLD_SIZES])
@pytest.mark.parametrize('ref_hw, ratio', [((8, 6), 0.5), ((7, 7), 0.3)])
@pytest.mark.parametrize('export', [False, True], ids=['eager', 'export'])
def test_gld(hw, ref_hw, ratio, export):
    gld = GLD(ref_hw, ratio)
    params = {f'g.{k}': v for k, v in _prepare(gld).items()}
    assert gld.global_hw == ref.global_grid(ref_hw, ratio)
    x = _map(2, *hw, 5)
    expected = torch.stack([ref.gld(m, params, 'g', ref_hw, ratio) for m in x])
    with export_forms() if export else contextlib.nullcontext():
        torch.testing.assert_close(gld(x), expected, **(RESIZE if export else F64))


def test_global_grid_matches_the_spec():
    for ref_hw in [(56, 56), (28, 28), (8, 6), (7, 7), (64, 48), (3, 2)]:
        for ratio in (0.5, 0.3, 0.01, 1.0):
            assert global_grid(ref_hw, ratio) == ref.global_grid(ref_hw, ratio)


@pytest.mark.parametrize(
    'src, dst', [((4, 4), (4, 4)), ((9, 7), (4, 3)), ((3, 5), (8, 11)), ((9, 3), (4, 8)), ((2, 7), (5, 7))]
)
def test_resize_to_grid_is_area_pooling_then_bilinear(src, dst):
    x = torch.randn(2, 3, *src, dtype=torch.float64)
    expected = ref.ops.resample(x, ref.ops.resize_matrix(src[0], dst[0]), ref.ops.resize_matrix(src[1], dst[1]))
    torch.testing.assert_close(resize_to_grid(x, dst), expected, **F64)


MAF_SIZES = [(8, 8), (9, 13), (4, 4), (3, 5), (17, 6), (12, 12)]


@FORMS
@pytest.mark.parametrize('hw', MAF_SIZES, ids=[f'{h}x{w}' for h, w in MAF_SIZES])
def test_maf_block(fused, export, hw):
    block = MAFBlock(24, 3, window_size=4, ref_hw=(8, 6), gld_ratio=0.5)
    params = {f'b.{k}': v for k, v in _prepare(block, fused).items()}
    x = _map(2, *hw, 24)
    expected = ref.batched(ref.maf_block, x, params, 'b', 3, 4, (8, 6), 0.5)
    with export_forms() if export else contextlib.nullcontext():
        torch.testing.assert_close(block(x), expected, **(RESIZE if export else F64))


VIT_CASES = {  # window size, map size
    'global': (0, (5, 7)),
    'windowed': (3, (7, 5)),
    'windowed-exact': (3, (6, 9)),
    'fits-in-one-window': (8, (7, 5)),
    'one-window-exactly': (4, (4, 4)),
    'one-axis-fits': (4, (3, 9)),
    'one-axis-equals-the-window': (4, (4, 3)),
    'other-axis-equals-the-window': (4, (3, 4)),
}


@FORMS
@pytest.mark.parametrize('case', sorted(VIT_CASES))
def test_vit_block(fused, export, case):
    window, hw = VIT_CASES[case]
    block = ViTBlock(24, 4, window_size=window)
    params = {f'b.{k}': v for k, v in _prepare(block, fused).items()}
    x = _map(2, *hw, 24)
    expected = ref.batched(ref.vit_block, x, params, 'b', 4, window)
    with export_forms() if export else contextlib.nullcontext():
        torch.testing.assert_close(block(x), expected, **(RESIZE if export else F64))


@pytest.mark.parametrize('hw', [(6, 8), (7, 5), (1, 1), (3, 2)])
def test_patch_merging_as_the_stages_use_it(hw):
    from mmcv.cnn.bricks.transformer import PatchMerging

    stage = MAFormerStage([], PatchMerging(in_channels=6, out_channels=12, norm_cfg=dict(type='LN'), padding='corner'))
    params = _prepare(stage)
    x = _map(2, *hw, 6)
    torch.testing.assert_close(stage(x), ref.batched(ref.patch_merging, x, params, 'downsample'), **F64)


@pytest.mark.parametrize(
    'make, inputs',
    [
        (lambda: WindowAttention(24, 3, 4), lambda: (_map(3, 16, 24, dtype=torch.float32),)),
        (
            lambda: CrossAttention(24, 3),
            lambda: (_map(2, 30, 24, dtype=torch.float32), _map(2, 7, 24, dtype=torch.float32)),
        ),
        (lambda: MAFBlock(24, 3, 4, (8, 8)), lambda: (_map(2, 9, 10, 24, dtype=torch.float32),)),
        (lambda: ViTBlock(24, 3, window_size=3), lambda: (_map(2, 7, 5, 24, dtype=torch.float32),)),
    ],
    ids=['window', 'cross', 'maf', 'vit-windowed'],
)
def test_float32_within_1e_5(make, inputs):
    """The float32 modules against the float64 reference of the same weights."""
    module = make()
    _prepare(module, True, torch.float32)
    args = inputs()
    with torch.no_grad():
        out = module(*args)
    double = make()
    double.load_state_dict(module.state_dict())
    set_fused_attn(double.double().eval(), False)
    with torch.no_grad():
        expected = double(*(a.double() for a in args))
    torch.testing.assert_close(out.double(), expected, **F32)


@pytest.mark.parametrize('src, dst', [(7, 12), (7, 4), (3, 5)])
def test_relative_position_table_resize_is_bicubic(src, dst):
    """A table with structure in it (a constant would survive any interpolation) against bicubic resizing
    written out in the test; loading a checkpoint of another window size gives the same table."""
    side = 2 * src - 1
    y, x = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing='ij')
    table = torch.stack([torch.sin(3 * x) + y**2, x * y - torch.cos(2 * y)], dim=-1).reshape(side * side, 2)
    table = (table + 0.1 * torch.randn(side * side, 2)).double()
    expected = ref.resize_rel_pos_table(table, dst)
    torch.testing.assert_close(resize_rel_pos_table(table, dst), expected, **RESIZE)

    source, target = WindowAttention(8, 2, src).double(), WindowAttention(8, 2, dst).double()
    source.relative_position_bias_table.data.copy_(table)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.relative_position_bias_table.data, expected, **RESIZE)


def test_relative_position_table_resize_in_float32_keeps_its_dtype():
    table = torch.randn(13 * 13, 3)
    resized = resize_rel_pos_table(table, 4)
    assert resized.dtype == torch.float32 and resized.shape == (7 * 7, 3)
    torch.testing.assert_close(resized.double(), ref.resize_rel_pos_table(table.double(), 4), **F32)
    assert resize_rel_pos_table(table, 7) is table  # same window: unchanged


@pytest.mark.parametrize(
    'src_ref, src_ratio, dst_ref, dst_ratio',
    [((16, 16), 0.5, (8, 8), 0.25), ((8, 8), 0.5, (12, 10), 0.5), ((6, 6), 1.0, (6, 6), 0.5)],
)
def test_gld_fc_resize(src_ref, src_ratio, dst_ref, dst_ratio):
    source, target = GLD(src_ref, src_ratio).double(), GLD(dst_ref, dst_ratio).double()
    ref.randomize_(source)
    weight, bias = source.fc.weight.data, source.fc.bias.data
    expected_w, expected_b = ref.resize_gld_fc(weight, bias, dst_ref, dst_ratio)
    w, b = resize_gld_fc(weight, bias, dst_ref, target.global_hw)
    torch.testing.assert_close(w, expected_w, **RESIZE)
    torch.testing.assert_close(b, expected_b, **RESIZE)
    target.load_state_dict(source.state_dict())
    torch.testing.assert_close(target.fc.weight.data, expected_w, **RESIZE)
    torch.testing.assert_close(target.fc.bias.data, expected_b, **RESIZE)


class _Zero(torch.nn.Module):
    """A drop path that drops every sample."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0


@pytest.mark.parametrize(
    'make, shape',
    [
        (lambda: MAFBlock(24, 3, 4, (8, 8), drop_path=0.1), (2, 9, 6, 24)),
        (lambda: ViTBlock(24, 3, drop_path=0.1), (2, 5, 4, 24)),
        (lambda: ViTBlock(24, 3, drop_path=0.1, window_size=2), (2, 5, 4, 24)),
    ],
    ids=['maf', 'vit', 'vit-windowed'],
)
def test_every_residual_branch_goes_through_drop_path(make, shape):
    """With every drop path dropping everything, a block is the identity; with drop path off (eval), it is not."""
    block = make()
    _prepare(block)
    x = _map(*shape)
    assert not torch.allclose(block(x), x)
    block.drop_path, block.ffn.dropout_layer = _Zero(), _Zero()
    torch.testing.assert_close(block(x), x, atol=0, rtol=0)


@pytest.mark.parametrize(
    'make, inputs',
    [
        # 12 samples: drop path keeps them all with odds 2^-12
        (
            lambda drop_path=0.0, **kw: MAFBlock(24, 3, 4, (8, 8), drop_path=drop_path, options=BlockOptions(**kw)),
            lambda: (_map(12, 9, 6, 24),),
        ),
        (
            lambda drop_path=0.0, **kw: ViTBlock(24, 3, drop_path=drop_path, options=BlockOptions(**kw)),
            lambda: (_map(12, 5, 4, 24),),
        ),
        (lambda **kw: Attention(24, 3, **kw), lambda: (_map(2, 7, 24),)),
        (lambda **kw: CrossAttention(24, 3, **kw), lambda: (_map(2, 7, 24), _map(2, 5, 24))),
        (lambda **kw: WindowAttention(24, 3, 3, **kw), lambda: (_map(2, 9, 24),)),
    ],
    ids=['maf', 'vit', 'attention', 'cross', 'window'],
)
@pytest.mark.parametrize('fused', [True, False], ids=['sdpa', 'explicit'])
def test_dropout_and_drop_path_act_in_training_only(make, inputs, fused):
    """By default nothing is random; each rate set > 0 makes training outputs random and leaves eval outputs
    those of the reference (which has no dropout)."""
    args = inputs()
    default = make()
    params = _prepare(default, fused)
    default.train()
    torch.testing.assert_close(default(*args), default(*args), atol=0, rtol=0)
    rates = (
        [dict(attn_drop=0.5), dict(proj_drop=0.5)]
        if isinstance(default, _ATTENTIONS)
        else [dict(attn_drop=0.5), dict(drop=0.5), dict(drop_path=0.5)]
    )
    for rate in rates:
        module = make(**rate).double()
        module.load_state_dict(params)
        set_fused_attn(module, fused)
        module.eval()
        torch.testing.assert_close(module(*args), default.eval()(*args), atol=0, rtol=0, msg=str(rate))
        if 'drop_path' in rate:
            module.ffn.dropout_layer = torch.nn.Identity()  # only the block's own drop path stays random
        module.train()
        assert not torch.equal(module(*args), module(*args)), rate
        default.train()


_ATTENTIONS = (Attention, CrossAttention)


def test_layer_shapes_follow_the_spec():
    """Parameter shapes of a MAF block and a ViT block: MLP ratio 4, a (2w-1)^2 x heads table, the GLD FC from the
    reference grid to the global grid, separate q and kv projections, biases in every projection."""
    c, heads, window = 24, 3, 4
    maf = {k: tuple(v.shape) for k, v in MAFBlock(c, heads, window, (8, 6), 0.5).state_dict().items()}
    gh, gw = ref.global_grid((8, 6), 0.5)
    norms = {f'{n}.{p}': (c,) for n in ('norm1', 'norm_q', 'norm_kv', 'norm2') for p in ('weight', 'bias')}
    assert maf == {
        **norms,
        'attn.qkv.weight': (3 * c, c),
        'attn.qkv.bias': (3 * c,),
        'attn.proj.weight': (c, c),
        'attn.proj.bias': (c,),
        'attn.relative_position_bias_table': ((2 * window - 1) ** 2, heads),
        'gld.fc.weight': (gh * gw, 8 * 6),
        'gld.fc.bias': (gh * gw,),
        'cross_attn.q.weight': (c, c),
        'cross_attn.q.bias': (c,),
        'cross_attn.kv.weight': (2 * c, c),
        'cross_attn.kv.bias': (2 * c,),
        'cross_attn.proj.weight': (c, c),
        'cross_attn.proj.bias': (c,),
        'ffn.layers.0.0.weight': (4 * c, c),
        'ffn.layers.0.0.bias': (4 * c,),
        'ffn.layers.1.weight': (c, 4 * c),
        'ffn.layers.1.bias': (c,),
    }
    vit = {k: tuple(v.shape) for k, v in ViTBlock(c, heads, window_size=3).state_dict().items()}
    assert vit == {
        k: v for k, v in maf.items() if k.split('.')[0] in ('norm1', 'norm2', 'attn', 'ffn') and 'relative' not in k
    }
    assert ViTBlock(c, heads, options=BlockOptions(qkv_bias=False)).attn.qkv.bias is None
    no_bias = MAFBlock(c, heads, window, (8, 8), options=BlockOptions(qkv_bias=False))
    assert no_bias.cross_attn.kv.bias is None and no_bias.cross_attn.q.bias is None and no_bias.attn.qkv.bias is None


def test_checkpoint_resizing_is_logged(mm_log):
    WindowAttention(8, 2, 4).load_state_dict(WindowAttention(8, 2, 7).state_dict())
    GLD((6, 6), 0.5).load_state_dict(GLD((8, 8), 0.5).state_dict())
    text = mm_log()
    assert 'Resized relative_position_bias_table from (169, 2) to (49, 2) (window size 4)' in text
    assert 'Resized fc.weight from (36, 64) to (16, 36) (reference grid (6, 6), global grid (4, 4))' in text


def test_gld_fc_from_a_non_square_grid_cannot_be_resized():
    with pytest.raises(ValueError, match='the checkpoint reference grid of 48 tokens is not a square grid'):
        GLD((8, 8), 0.5).load_state_dict(GLD((8, 6), 0.5).state_dict())
    with pytest.raises(ValueError, match='the checkpoint global grid of 24 tokens is not a square grid'):
        GLD((8, 8), 0.5).load_state_dict({'fc.weight': torch.zeros(24, 64), 'fc.bias': torch.zeros(24)})


def test_partial_state_dicts_skip_the_resize_hooks():
    """A state dict without a table, or with only half of a GLD FC, is not resized: load_state_dict reports it."""
    attn = WindowAttention(8, 2, 4)
    source = WindowAttention(8, 2, 7).state_dict()
    source.pop('relative_position_bias_table')
    attn.load_state_dict(source, strict=False)
    torch.testing.assert_close(attn.qkv.weight, source['qkv.weight'])
    other = GLD((16, 16), 0.5).state_dict()
    for key in ('fc.weight', 'fc.bias'):
        with pytest.raises(RuntimeError, match=f'size mismatch for {key}'):
            GLD((8, 8), 0.5).load_state_dict({key: other[key]}, strict=False)
    with pytest.raises(RuntimeError, match='size mismatch for relative_position_bias_table'):
        WindowAttention(8, 4, 4).load_state_dict(WindowAttention(8, 2, 7).state_dict())  # another head count


@pytest.mark.parametrize('n_in, n_out', [(9, 4), (4, 9), (6, 6), (1, 3)])
def test_export_resize_matrices_match_the_reference_and_the_device(n_in, n_out):
    """The GLD resize matrices of the export forms: the reference's sampling rules, built on the device asked for."""
    from maformer_mm.layers.gld import adaptive_pool_weights, bilinear_weights, resize_weights

    if n_out <= n_in:
        torch.testing.assert_close(adaptive_pool_weights(n_in, n_out).double(), ref.area_matrix(n_in, n_out), **F32)
    torch.testing.assert_close(bilinear_weights(n_in, n_out).double(), ref.linear_matrix(n_in, n_out), **F32)
    torch.testing.assert_close(resize_weights(n_in, n_out).double(), ref.ops.resize_matrix(n_in, n_out), **F32)
    meta = torch.device('meta')
    for build in (adaptive_pool_weights, bilinear_weights, resize_weights):
        assert build(n_in, n_out, device=meta).device == meta, build.__name__


def test_defaults_are_the_specs():
    """Built with their defaults, in training mode: GLD ratio 0.5, global ViT attention, biases in every projection,
    no dropout; each module equals the reference."""
    gld = GLD((8, 6))
    assert gld.global_hw == ref.global_grid((8, 6), 0.5)
    maf, vit = MAFBlock(24, 3, 4, (8, 6)), ViTBlock(24, 3)
    attentions = [WindowAttention(24, 3, 4), Attention(24, 3), CrossAttention(24, 3)]
    for module in [maf, vit, *attentions]:
        assert all(m.bias is not None for m in module.modules() if isinstance(m, torch.nn.Linear)), module
    x = _map(2, 9, 6, 24)
    params = {f'b.{k}': v for k, v in _prepare(maf).items()}
    torch.testing.assert_close(maf.train()(x), ref.batched(ref.maf_block, x, params, 'b', 3, 4, (8, 6), 0.5), **F64)
    params = {f'b.{k}': v for k, v in _prepare(vit).items()}
    torch.testing.assert_close(vit.train()(x), ref.batched(ref.vit_block, x, params, 'b', 3, 0), **F64)
    tokens, context = _map(2, 16, 24), _map(2, 5, 24)
    window, glob, cross = attentions
    bias = ref.relative_position_bias(_prepare(window)['relative_position_bias_table'], 4)
    torch.testing.assert_close(
        window.train()(tokens), torch.stack([_self_attention(t, window.state_dict(), 3, bias) for t in tokens]), **F64
    )
    params = _prepare(glob)
    torch.testing.assert_close(
        glob.train()(tokens), torch.stack([_self_attention(t, params, 3) for t in tokens]), **F64
    )
    params = {f'c.{k}': v for k, v in _prepare(cross).items()}
    torch.testing.assert_close(
        cross.train()(tokens, context),
        torch.stack([ref.cross_attention(a, b, params, 'c', 3) for a, b in zip(tokens, context)]),
        **F64,
    )


@pytest.mark.parametrize('rate', ['attn_drop', 'drop'])
def test_block_rates_reach_every_sublayer(rate):
    """`attn_drop` reaches the window, cross and global attention; `drop` also their output projections and the
    MLP."""
    options = BlockOptions(**{rate: 0.5})
    maf = MAFBlock(24, 3, 4, (8, 8), options=options).train()
    vit = ViTBlock(24, 3, options=options).train()
    windows, tokens, context = (
        _map(4, 16, 24, dtype=torch.float32),
        _map(2, 7, 24, dtype=torch.float32),
        _map(2, 5, 24, dtype=torch.float32),
    )
    random = lambda f, *args: not torch.equal(f(*args), f(*args))  # noqa: E731
    assert random(maf.attn, windows) and random(maf.cross_attn, tokens, context) and random(vit.attn, tokens)
    assert random(maf.ffn, tokens) == random(vit.ffn, tokens) == (rate == 'drop')
