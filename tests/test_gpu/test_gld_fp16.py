"""GLD does not overflow in fp16 at 1333x800.

GLD first resizes any map to its fixed reference grid (area pooling and bilinear interpolation: convex
combinations, which never grow a value), then one FC sums over the reference tokens, channel by channel.
Its input is a LayerNorm output, whose elements are at most sqrt(C - 1) * |gamma| + |beta|. So for
any input size the largest fp16 value GLD can produce is bounded by its weights:
    max_g sum_r |W_gr| * M + max |b| + M    (the last M: the interpolated position term).
The CPU stand-in checks that bound for MAFormer-T's initial weights with a wide margin, attains it with
an adversarial input, and runs GLD at the 1333x800 map sizes in fp16 against fp32. The CUDA test runs
the whole backbone at 1333x800 under fp16 autocast."""

import math

import torch

from maformer_mm.layers import MAFBlock
from maformer_mm.models import MAFormer
from tests.test_gpu import requires_cuda

FP16_MAX = torch.finfo(torch.float16).max  # 65504
H, W = 800, 1333  # a 1333x800 detection image


def maf_blocks(model: MAFormer):
    return [m for m in model.modules() if isinstance(m, MAFBlock)]


def gld_bound(block: MAFBlock) -> float:
    """The largest |value| the block's GLD can output for any input, from its weights and its norm."""
    norm, fc = block.norm1, block.gld.fc
    m = math.sqrt(norm.normalized_shape[0] - 1) * norm.weight.abs().max().item() + norm.bias.abs().max().item()
    return fc.weight.abs().sum(1).max().item() * m + fc.bias.abs().max().item() + m


def test_gld_bound_and_fp16_at_1333x800_cpu_stand_in():
    model = MAFormer(arch='tiny')
    model.init_weights()
    blocks = maf_blocks(model)
    assert len(blocks) == 3  # stages 1-2 of MAFormer-T: depths 1 and 2
    for block in blocks:
        bound = gld_bound(block)
        assert bound < FP16_MAX / 64, bound  # at init: more than 64x headroom, whatever the image size

    block = blocks[0]  # stage 1: a 200 x 334 map at stride 4, 64 channels
    c = block.norm1.normalized_shape[0]
    h, w = math.ceil(H / 4), math.ceil(W / 4)
    with torch.no_grad():
        y = block.norm1(torch.randn(1, h, w, c) * 5 + 2)
        ref = block.gld(y)
        half = block.gld.half()(y.half()).float()
        block.gld.float()
        assert torch.isfinite(half).all()
        assert ((half - ref).norm() / ref.norm()).item() < 1e-2

        # adversarial: channel 0 of every reference token at +-M, signed like the FC row with the largest
        # |W| sum; the other channels at -+1/sqrt(C - 1), so each token is its own LayerNorm output
        fc = block.gld.fc
        row = fc.weight.abs().sum(1).argmax()
        signs = fc.weight[row].sign().view(1, *block.gld.ref_hw, 1)
        m = math.sqrt(c - 1)
        x = torch.cat([m * signs, (-signs / m).expand(-1, -1, -1, c - 1)], dim=-1)
        torch.testing.assert_close(block.norm1(x), x, atol=1e-4, rtol=1e-4)  # LayerNorm's eps
        worst = block.gld(x)[0, row, 0].item()
        worst_half = block.gld.half()(x.half())[0, row, 0].float().item()
        block.gld.float()
        peak = fc.weight[row].abs().sum().item() * m
        assert peak - abs(fc.bias[row].item()) - m <= worst <= gld_bound(block)  # the bound is attained
        assert math.isfinite(worst_half) and abs(worst_half - worst) < 1e-2 * abs(worst)


@requires_cuda
def test_maformer_t_fp16_at_1333x800_on_cuda():
    # no stochastic depth: the fp16 and the fp32 pass would drop different residual branches
    model = MAFormer(arch='tiny', drop_path_rate=0.0).cuda().train()
    model.init_weights()
    outputs = {}
    # the FC's output is the value held in fp16 under autocast (the position term adds in fp32)
    hooks = [
        b.gld.fc.register_forward_hook(lambda mod, args, out, i=i: outputs.setdefault(i, []).append(out))
        for i, b in enumerate(maf_blocks(model))
    ]
    x = torch.randn(2, 3, H, W, device='cuda')
    with torch.autocast('cuda', dtype=torch.float16):
        feats = model(x)
    sum(f.float().mean() for f in feats).backward()
    with torch.no_grad():
        model(x)  # fp32 reference
    for hook in hooks:
        hook.remove()
    for i, (half, full) in outputs.items():
        assert half.dtype == torch.float16 and torch.isfinite(half).all(), i
        assert ((half.float() - full).norm() / full.norm()).item() < 1e-2, i
    assert all(torch.isfinite(f).all() for f in feats)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
