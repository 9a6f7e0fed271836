"""The attention masks MAFormer hands to SDPA are laid out as torch 2.13's fused CUDA kernels need them, and the
CPU results stay bit-identical to the permuted-table bias they replace.

torch's own kernel checks (`torch.backends.cuda.can_use_efficient_attention`) return at their first test,
"All tensors need to be on cuda device", on this machine, also for fake CUDA tensors (the next test asks the
GPU's properties). So the rules are restated here from the ATen sources of torch 2.13, and checked on the masks:
- `check_last_dim_stride_equals_1_dense` (transformers/sdp_utils_cpp.h): on GPU backends the mask's last
  dimension must have stride 1, or the efficient, cuDNN and flash kernels are all rejected (math fallback).
- `_scaled_dot_product_efficient_attention` (transformers/cuda/attention.cu): a float bias must have the query's
  dtype (a bool mask is converted first).
- `check_attn_mask_shape`: 2-D, or 4-D with batch and head dimensions equal to the query's or 1.
- `preprocess_mask` (transformers/attention.cpp): the mask expanded to (B, h, L, S) must have every stride but
  the last a multiple of 8 (`aligned_tensor<8>`), or torch pads it, a copy on every call.
"""

from typing import List, Optional

import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from maformer_mm.layers import WindowAttention, bias_gather_index, relative_position_index
from maformer_mm.models import MAFormer
from tests.helpers import TINY_CFG

FUSED_MASK_ALIGN = 8  # aligned_tensor<mem_eff_alignment = 8> in preprocess_mask


def cuda_mask_problems(query: torch.Tensor, key: torch.Tensor, mask: Optional[torch.Tensor]) -> List[str]:
    """What torch 2.13's fused CUDA attention kernels hold against `mask` (see the module docstring); [] when the
    memory-efficient kernel takes it as it is."""
    if mask is None:
        return []
    problems = []
    if mask.dtype not in (torch.bool, query.dtype):
        problems.append(f'dtype {mask.dtype} for a {query.dtype} query')
    if mask.dim() not in (2, 4) or (
        mask.dim() == 4 and any(m not in (1, q) for m, q in zip(mask.shape[:2], query.shape[:2]))
    ):
        problems.append(f'shape {tuple(mask.shape)} for query {tuple(query.shape)}')
    if mask.stride(-1) != 1:
        problems.append(f'stride {mask.stride(-1)} in the last dimension (check_last_dim_stride_equals_1_dense)')
    expanded = mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
    if any(s % FUSED_MASK_ALIGN for s in expanded.stride()[:-1]):
        problems.append(f'strides {expanded.stride()} not multiples of {FUSED_MASK_ALIGN}: padded on every call')
    return problems


def permuted_bias(attn: WindowAttention, dtype: torch.dtype) -> torch.Tensor:
    """The bias as it was: a permuted view of the gathered table (last-dimension stride h), then cast."""
    n = attn.window_size**2
    table = attn.relative_position_bias_table[relative_position_index(attn.window_size).view(-1)]
    return table.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(dtype)


def test_the_old_layout_fails_the_gpu_check():
    """The reason for the layout: the permuted view has stride h in its last dimension."""
    attn = WindowAttention(24, 3, window_size=7)
    q = torch.randn(2, 3, 49, 8)
    old = permuted_bias(attn, torch.float32)
    assert old.stride() == (3, 1, 147, 3)
    assert any('check_last_dim_stride_equals_1_dense' in p for p in cuda_mask_problems(q, q, old))


@pytest.mark.parametrize('window, heads', [(7, 3), (4, 2), (12, 1), (5, 4)])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_window_bias_layout_and_values(window, heads, dtype):
    attn = WindowAttention(8 * heads, heads, window_size=window)
    torch.nn.init.normal_(attn.relative_position_bias_table)
    n = window * window
    bias = attn.get_attn_bias(dtype)
    assert bias.shape == (1, heads, n, n) and bias.dtype == dtype
    q = torch.randn(5, heads, n, 8).to(dtype)
    assert cuda_mask_problems(q, q, bias) == []
    padded = -(-n // FUSED_MASK_ALIGN) * FUSED_MASK_ALIGN
    assert bias.stride() == (heads * n * padded, n * padded, padded, 1)
    assert torch.equal(bias, permuted_bias(attn, dtype))  # the same numbers, bit for bit


def test_gather_index_shape_and_padding():
    index = bias_gather_index(7, 3)
    assert index.shape == (3, 49, 56) and index.dtype == torch.long
    table_rows = relative_position_index(7)
    assert torch.equal(index[:, :, :49], table_rows[None] * 3 + torch.arange(3)[:, None, None])
    assert torch.equal(index[:, :, 49:], torch.arange(3)[:, None, None].expand(3, 49, 7))  # entry 0 of each head
    assert bias_gather_index(4, 2).shape == (2, 16, 16)  # 16 is aligned already: no padding


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: List[str] = []
        self.numels: List[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(func.name().split('::')[-1].split('.')[0])
        self.numels.append(out.numel() if isinstance(out, torch.Tensor) else 0)
        return out


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_window_bias_is_one_gather_without_a_copy(dtype):
    """The bias is gathered once, straight into its final layout: no contiguous copy, no padding, and a cast
    only of the small table."""
    attn = WindowAttention(24, 3, window_size=7)
    with _Ops() as recorder:
        attn.get_attn_bias(dtype)
    copies = {'clone', 'contiguous', 'copy_', 'constant_pad_nd', '_to_copy'}
    assert recorder.ops.count('index') == 1
    made = [(op, numel) for op, numel in zip(recorder.ops, recorder.numels) if op in copies]
    assert made == ([] if dtype is torch.float32 else [('_to_copy', 13 * 13 * 3)])  # the (2w-1)^2 x h table


@pytest.mark.parametrize('training', [False, True], ids=['inference_cpu_flash', 'training_math'])
def test_window_attention_is_bit_identical_to_the_permuted_bias(training, monkeypatch):
    attn = WindowAttention(32, 4, window_size=7).train(training)
    torch.nn.init.normal_(attn.relative_position_bias_table, std=1.0)
    x = torch.randn(6, 49, 32)

    def step():
        attn.zero_grad(set_to_none=True)
        with torch.set_grad_enabled(training):
            out = attn(x)
        if training:
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), [p.grad for p in attn.parameters()]

    new_out, new_grads = step()
    monkeypatch.setattr(attn, 'get_attn_bias', lambda dtype: permuted_bias(attn, dtype))
    old_out, old_grads = step()
    assert torch.equal(new_out, old_out)
    for new, old in zip(new_grads, old_grads):
        assert (new is None and old is None) or torch.equal(new, old)


class _SDPAMasks(TorchFunctionMode):
    """Every `F.scaled_dot_product_attention` call's mask problems (as the fused CUDA kernels would see them)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: List[List[str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            query, key = args[0], args[1]
            mask = kwargs.get('attn_mask', args[3] if len(args) > 3 else None)
            self.calls.append(cuda_mask_problems(query, key, mask))
        return func(*args, **kwargs)


@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_every_mask_the_backbone_passes_to_sdpa_suits_the_cuda_kernels(dtype):
    """Window attention of MAF blocks (window 7: rows padded 49 -> 56), cross-attention, global and ViTDet-style
    windowed ViT blocks, on an odd size, in training and inference, in fp32 and under bf16 autocast."""
    model = MAFormer(**dict(TINY_CFG, window_size=7, vit_window_size=3)).train()
    x = torch.randn(1, 3, 61, 83)
    for grad in (True, False):
        with (
            _SDPAMasks() as masks,
            torch.set_grad_enabled(grad),
            torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype is torch.bfloat16),
        ):
            model(x)
        assert len(masks.calls) == 2 * 2 + 3  # window + cross in 2 MAF blocks (1 per stage), 2 + 1 ViT blocks
        assert masks.calls == [[]] * len(masks.calls)
