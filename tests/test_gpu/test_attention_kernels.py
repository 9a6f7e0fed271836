"""Which SDPA kernel each MAFormer attention runs, and that selective `with_cp` keeps those kernels'
outputs instead of running them again (the math fallback is recomputed, as the other ops are)."""

from collections import Counter

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.cuda_benchmark import attention_kernels
from maformer_mm.layers import set_fused_attn
from maformer_mm.models import MAFormer
from maformer_mm.models.backbones.maformer import _KEPT_OPS
from tests.helpers import TINY_CFG
from tests.test_gpu import requires_cuda
from tests.test_gpu.test_backbone_precision import probe_loss

FUSED_ON_CUDA = {
    '_scaled_dot_product_flash_attention',
    '_scaled_dot_product_efficient_attention',
    '_scaled_dot_product_cudnn_attention',
}
# CUDA flash attention takes no attention mask: the window attention's float bias (with its gradient)
# needs the memory-efficient kernel (or cuDNN's).
BIAS_ON_CUDA = {'_scaled_dot_product_efficient_attention', '_scaled_dot_product_cudnn_attention'}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops run while active (forward and backward alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[func.name().split('::')[-1]] += 1
        return func(*args, **(kwargs or {}))


def train_step_counts(model: MAFormer, x: torch.Tensor, dtype: torch.dtype = torch.float32):
    """(op counts, outputs, gradients) of one forward + backward."""
    model.zero_grad(set_to_none=True)
    with OpCounter() as counter:
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not torch.float32):
            outs = model(x)
        probe_loss(outs).backward()
    return counter.counts, outs, [p.grad.clone() for p in model.parameters()]


def assert_same_step(plain, cp, atol=1e-5, rtol=1e-4) -> None:
    for a, b in zip([*plain[1], *plain[2]], [*cp[1], *cp[2]]):
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


def test_every_fused_kernel_is_kept():
    names = {op.name().split('::')[-1] for op in _KEPT_OPS}
    assert {'_scaled_dot_product_flash_attention_for_cpu', *FUSED_ON_CUDA} <= names


def test_cpu_kernels_and_the_math_fallback():
    model = MAFormer(**TINY_CFG).train()
    x = torch.randn(1, 3, 64, 64)
    flash = {'_scaled_dot_product_flash_attention_for_cpu'}
    with torch.no_grad():  # inference: CPU flash attention takes the window attention's float bias
        assert attention_kernels(model, x) == {'window': flash, 'cross': flash, 'global': flash}
    # training: the bias needs a gradient, which CPU flash attention cannot give, so SDPA falls back to math
    assert attention_kernels(model, x) == {'window': {'math'}, 'cross': flash, 'global': flash}
    with sdpa_kernel(SDPBackend.MATH):
        assert attention_kernels(model, x) == {'window': {'math'}, 'cross': {'math'}, 'global': {'math'}}
    set_fused_attn(model, False)
    with torch.no_grad():
        assert attention_kernels(model, x) == {'window': {'math'}, 'cross': {'math'}, 'global': {'math'}}


@pytest.mark.parametrize('path', ['sdpa-math', 'explicit'])
def test_with_cp_recomputes_the_math_fallback(path):
    plain_model = MAFormer(**TINY_CFG).train()
    cp_model = MAFormer(**TINY_CFG, with_cp=True).train()
    cp_model.load_state_dict(plain_model.state_dict())
    x = torch.randn(1, 3, 64, 64)
    if path == 'explicit':
        set_fused_attn(plain_model, False), set_fused_attn(cp_model, False)
    with sdpa_kernel(SDPBackend.MATH):
        plain, cp = train_step_counts(plain_model, x), train_step_counts(cp_model, x)
    assert_same_step(plain, cp)
    softmax = [op for op in plain[0] if 'softmax' in op and 'backward' not in op]
    assert softmax and not any(op.startswith('_scaled_dot_product') for op in plain[0])
    # the N x M attention weights are not kept: the softmax runs again in the backward pass
    assert sum(cp[0][op] for op in softmax) == 2 * sum(plain[0][op] for op in softmax)


@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_kernels(dtype):
    model = MAFormer(arch='tiny', drop_path_rate=0.0).cuda().train()
    with torch.autocast('cuda', dtype=dtype, enabled=dtype is not torch.float32):
        kernels = attention_kernels(model, torch.randn(2, 3, 224, 224, device='cuda'))
    assert set(kernels) == {'window', 'cross', 'global'}
    assert kernels['window'] <= BIAS_ON_CUDA, kernels  # a fused kernel despite the float bias
    assert kernels['cross'] <= FUSED_ON_CUDA and kernels['global'] <= FUSED_ON_CUDA, kernels  # never math


@requires_cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_with_cp_on_cuda_keeps_the_kernel_outputs(dtype):
    cfg = dict(TINY_CFG, arch=dict(embed_dims=64, depths=(1, 1, 2, 1), num_heads=(2, 2, 4, 8)))
    plain_model = MAFormer(**cfg).cuda().train()
    cp_model = MAFormer(**cfg, with_cp=True).cuda().train()
    cp_model.load_state_dict(plain_model.state_dict())
    x = torch.randn(2, 3, 96, 80, device='cuda')
    plain, cp = train_step_counts(plain_model, x, dtype), train_step_counts(cp_model, x, dtype)
    tol = dict(atol=1e-4, rtol=1e-3) if dtype is torch.float32 else dict(atol=2e-2, rtol=2e-2)
    assert_same_step(plain, cp, **tol)
    kernels = [op for op in plain[0] if op in FUSED_ON_CUDA]
    assert kernels and '_scaled_dot_product_efficient_attention' in kernels  # the biased window attention
    for op in kernels:
        assert cp[0][op] == plain[0][op], op  # kept: never run a second time
    assert cp[0]['addmm'] + cp[0]['mm'] > plain[0]['addmm'] + plain[0]['mm']  # the projections are recomputed
