"""MAFormer forward and backward in fp32 and under fp16 / bf16 autocast, at a classification size and an
odd detection size: every output and gradient finite, and the SDPA path equal to the explicit path
within the precision's tolerance. On CUDA with MAFormer-T; the CPU stand-in runs the same check on a tiny
variant."""

from contextlib import nullcontext
from typing import Dict, List, Tuple

import pytest
import torch

from maformer_mm.layers import set_fused_attn
from maformer_mm.models import MAFormer
from tests.helpers import TINY_CFG
from tests.test_gpu import requires_cuda

# Relative error (norm of the difference over the norm) allowed between the SDPA and explicit paths:
# under autocast the explicit path rounds its logits to 16 bits, the fused kernels accumulate in fp32.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 1e-1}
CHECKED_GRADS = (
    'patch_embed.projection.weight',
    'stages.0.blocks.0.attn.relative_position_bias_table',
    'stages.0.blocks.0.gld.fc.weight',
    'stages.2.blocks.0.attn.qkv.weight',
)


def forward_backward(
    model: MAFormer, x: torch.Tensor, dtype: torch.dtype
) -> Tuple[List[torch.Tensor], Dict[str, torch.Tensor]]:
    """Outputs and gradients (as float32) of one training step under autocast to `dtype` (none for fp32)."""
    model.zero_grad(set_to_none=True)
    amp = nullcontext() if dtype is torch.float32 else torch.autocast(x.device.type, dtype=dtype)
    with amp:
        outs = model(x)
    probe_loss(outs).backward()
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return [o.detach().float() for o in outs], grads


def probe_loss(outs: List[torch.Tensor]) -> torch.Tensor:
    """A loss whose gradient reaches every input: fixed random projections of the outputs. (A plain
    mean or mean square of the LayerNorm'ed outputs is almost constant, its gradient mostly rounding.)"""
    gen = torch.Generator().manual_seed(0)
    return sum((o.float() * torch.randn(o.shape, generator=gen).to(o.device)).mean() for o in outs)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


def check_paths_agree(model: MAFormer, x: torch.Tensor, dtype: torch.dtype) -> None:
    outs, grads = forward_backward(set_fused_attn(model, True), x, dtype)
    ref_outs, ref_grads = forward_backward(set_fused_attn(model, False), x, dtype)
    assert len(grads) == sum(1 for _ in model.parameters())  # every parameter got a gradient
    for name, g in grads.items():
        assert torch.isfinite(g).all(), name
    for out, ref in zip(outs, ref_outs):
        assert torch.isfinite(out).all() and out.abs().max() > 0
        assert relative_error(out, ref) < TOLERANCE[dtype]
    for name in CHECKED_GRADS:
        assert relative_error(grads[name], ref_grads[name]) < 2 * TOLERANCE[dtype], name


@requires_cuda
@pytest.mark.parametrize('hw', [(224, 224), (511, 673)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_maformer_t_on_cuda(hw, dtype):
    model = MAFormer(arch='tiny', drop_path_rate=0.0).cuda().train()
    model.init_weights()
    check_paths_agree(model, torch.randn(2, 3, *hw, device='cuda'), dtype)


@pytest.mark.parametrize('hw', [(64, 64), (61, 83)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_cpu_stand_in(hw, dtype):
    model = MAFormer(**TINY_CFG).train()
    model.init_weights()
    check_paths_agree(model, torch.randn(2, 3, *hw), dtype)
