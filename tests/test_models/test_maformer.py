import copy
import math
from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from maformer_mm.layers import set_fused_attn
from maformer_mm.models import MAFormer


def _expected(hw, dims=(16, 32, 64, 128)):
    h, w = hw
    shapes = []
    for i, c in enumerate(dims):
        # ceil at every stage: patch embed pads to 4, each merge pads odd sizes
        h, w = (math.ceil(h / 4), math.ceil(w / 4)) if i == 0 else (math.ceil(h / 2), math.ceil(w / 2))
        shapes.append((2, c, h, w))
    return shapes


@pytest.mark.parametrize('hw', [(224, 224), (512, 512), (511, 511), (112, 137), (96, 200), (17, 9)])
def test_output_shapes_any_size(tiny_cfg, hw):
    model = MAFormer(**tiny_cfg).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *hw))
    assert [tuple(o.shape) for o in outs] == _expected(hw)
    assert all(torch.isfinite(o).all() for o in outs)


def test_tiny_variant_at_224_gives_strides_4_to_32():
    model = MAFormer(arch='t').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 224, 224))
    assert [tuple(o.shape) for o in outs] == [(1, 64, 56, 56), (1, 128, 28, 28), (1, 256, 14, 14), (1, 512, 7, 7)]
    assert model.out_channels == (64, 128, 256, 512) and model.out_strides == (4, 8, 16, 32)


@pytest.mark.parametrize('out_indices', [(0,), (1, 3), (3,), (-1,), (0, 1, 2, 3)])
def test_out_indices(tiny_cfg, out_indices):
    model = MAFormer(**tiny_cfg, out_indices=out_indices).eval()
    wanted = sorted(i % 4 for i in out_indices)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16 * 2**i for i in wanted]
    norms = sorted(int(name[4:]) for name, _ in model.named_children() if name.startswith('norm'))
    assert norms == wanted


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 2, 3, 4])
def test_frozen_stages_survive_train(tiny_cfg, frozen_stages):
    model = MAFormer(**tiny_cfg, frozen_stages=frozen_stages, drop_rate=0.1)
    model.train()
    frozen = []
    if frozen_stages >= 0:
        frozen.append(model.patch_embed)
    for i in range(max(frozen_stages, 0)):
        frozen += [model.stages[i], getattr(model, f'norm{i}')]
    for module in frozen:
        assert not any(p.requires_grad for p in module.parameters())
        assert all(not m.training for m in module.modules())
    for i in range(max(frozen_stages, 0), 4):
        assert all(p.requires_grad for p in model.stages[i].parameters())
        assert model.stages[i].training
    if frozen_stages == 4:
        assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('frozen_stages', [0, 2])
def test_frozen_stages_stay_fixed_through_optimizer_steps(tiny_cfg, frozen_stages):
    """AdamW with weight decay over all parameters (as mmengine builds it): the frozen part neither moves nor
    draws dropout, and everything after it trains."""
    tiny_cfg.update(drop_rate=0.2, drop_path_rate=0.2)
    model = MAFormer(**tiny_cfg, frozen_stages=frozen_stages).train()
    frozen = (
        ['patch_embed.'] + [f'stages.{i}.' for i in range(frozen_stages)] + [f'norm{i}.' for i in range(frozen_stages)]
    )
    before = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.5)
    x = torch.randn(2, 3, 64, 64)
    # random projections: a plain sum of LayerNorm outputs has no gradient below the norm
    targets = [torch.randn(2, 16 * 2**i, 16 // 2**i, 16 // 2**i) for i in range(4)]
    for _ in range(2):
        optimizer.zero_grad()
        sum((o * t).sum() for o, t in zip(model(x), targets)).backward()
        optimizer.step()
        model.train()  # as the runner does every epoch: must not unfreeze
    for name, value in model.state_dict().items():
        is_frozen = any(name.startswith(p) for p in frozen)
        assert torch.equal(value, before[name]) == is_frozen, name
    with torch.no_grad():  # frozen stages run in eval mode: no dropout, the same maps twice
        first, second = model(x), model(x)
    for i in range(4):
        assert torch.equal(first[i], second[i]) == (i < frozen_stages), i


def test_every_parameter_receives_a_gradient(tiny_cfg):
    model = MAFormer(**tiny_cfg).train()
    outs = model(torch.randn(2, 3, 70, 50))
    # random projections: the mean of a LayerNorm's output has no gradient (only rounding noise) below the norm
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_with_cp_matches_outputs_and_gradients(tiny_cfg):
    tiny_cfg['drop_path_rate'] = 0.2  # random drop path must replay identically under checkpointing
    ref = MAFormer(**tiny_cfg).train()
    cp = MAFormer(**tiny_cfg, with_cp=True).train()
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 48)
    outs = []
    for model in (ref, cp):
        torch.manual_seed(1)
        out = model(x)
        sum((o * o).mean() for o in out).backward()
        outs.append(out)
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b)
    for (name, p), q in zip(ref.named_parameters(), cp.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops run while active (forward and backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.name()] += 1
        return func(*args, **(kwargs or {}))


def test_with_cp_keeps_attention_and_recomputes_the_rest(tiny_cfg):
    x = torch.randn(1, 3, 64, 64)
    counts = []
    for with_cp in (False, True):
        model = MAFormer(**tiny_cfg, with_cp=with_cp).train()
        with _OpCounter() as counter:
            sum(o.mean() for o in model(x)).backward()
        counts.append(counter.counts)
    plain, cp = counts
    flash = 'aten::_scaled_dot_product_flash_attention_for_cpu'
    assert plain[flash] > 0
    assert cp[flash] == plain[flash]  # the kept attention kernels never run twice
    assert cp['aten::addmm'] > plain['aten::addmm']  # projections and MLPs are recomputed


def test_sdpa_path_equals_explicit_path(tiny_cfg):
    model = MAFormer(**tiny_cfg).eval()
    x = torch.randn(2, 3, 72, 56)
    with torch.no_grad():
        fused = model(x)
        explicit = set_fused_attn(model, False)(x)
    for a, b in zip(fused, explicit):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_bf16_autocast_forward_on_cpu(tiny_cfg):
    model = MAFormer(**tiny_cfg).eval()
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        outs = model(torch.randn(1, 3, 80, 64))
    assert outs[0].dtype == torch.bfloat16
    assert all(torch.isfinite(o.float()).all() for o in outs)


def test_forward_stores_no_state(tiny_cfg):
    model = MAFormer(**tiny_cfg).eval()
    attrs = lambda: {id(m): dict(vars(m)) for m in model.modules()}  # noqa: E731
    before = {k: {a: v for a, v in d.items() if not a.startswith('_')} for k, d in attrs().items()}
    model(torch.randn(1, 3, 40, 72))
    after = {k: {a: v for a, v in d.items() if not a.startswith('_')} for k, d in attrs().items()}
    assert before == after


def test_drop_path_rises_linearly_to_the_rate():
    model = MAFormer(
        arch=dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 1, 1, 1)), pretrain_img_size=32, drop_path_rate=0.4
    )
    rates = [
        blk.ffn.dropout_layer.drop_prob if hasattr(blk.ffn.dropout_layer, 'drop_prob') else 0.0
        for stage in model.stages
        for blk in stage.blocks
    ]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_gld_reference_grid_follows_pretrain_img_size():
    model = MAFormer(arch='tiny', pretrain_img_size=(256, 192))
    assert model.stages[0].blocks[0].gld.ref_hw == (64, 48)
    assert model.stages[1].blocks[0].gld.ref_hw == (32, 24)


def test_vit_window_mode_keeps_weights_and_changes_attention(tiny_cfg):
    glob = MAFormer(**tiny_cfg).eval()
    win = MAFormer(**tiny_cfg, vit_window_size=2, vit_global_blocks=(1,)).eval()
    assert [b.window_size for b in win.stages[2].blocks] == [2, 0]
    win.load_state_dict(glob.state_dict())  # strict: same keys and shapes
    x = torch.randn(1, 3, 128, 128)
    assert not torch.allclose(glob(x)[2], win(x)[2])


@pytest.mark.parametrize(
    'kwargs, message',
    [
        (dict(arch='huge'), r"arch 'huge' is not a MAFormer variant; choose one of \['b', 'base', 'l'"),
        (dict(arch=dict(embed_dims=32, depths=(1, 1, 1, 1))), r"missing \['num_heads'\]"),
        (dict(arch=dict(embed_dims=32, depths=(1, 1, 1), num_heads=(1, 1, 1, 1))), 'depths must be 4 positive ints'),
        (dict(arch=dict(embed_dims=30, depths=(1, 1, 1, 1), num_heads=(4, 1, 1, 1))), 'not divisible by 4 heads'),
        (dict(arch=5), 'arch must be a str or a dict'),
        (dict(out_indices=(4,)), 'out_indices entry 4 is out of range'),
        (dict(out_indices=(1, -3)), 'name a stage twice'),
        (dict(frozen_stages=5), r'frozen_stages must be in \[-1, 4\]'),
        (dict(gld_ratio=0.0), r'gld_ratio must be in \(0, 1\]'),
        (dict(window_size=0), 'window_size must be a positive int'),
        (dict(drop_path_rate=1.5), 'drop_path_rate'),
        (dict(vit_window_size=-1), 'vit_window_size'),
        (dict(vit_window_size=7, vit_global_blocks=(30,)), 'must index the 21 stage-3 blocks'),
    ],
)
def test_invalid_arguments_raise_with_messages(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        MAFormer(**kwargs)


def test_wrong_channel_count_is_named(tiny_cfg):
    model = MAFormer(**tiny_cfg)
    with pytest.raises(ValueError, match=r'expects images of shape \(B, 3, H, W\), got \(1, 4, 32, 32\)'):
        model(torch.randn(1, 4, 32, 32))


def test_arch_aliases_match():
    for short, long in [('t', 'tiny'), ('s', 'small'), ('b', 'base'), ('l', 'large')]:
        assert MAFormer.arch_zoo[short] == MAFormer.arch_zoo[long]
