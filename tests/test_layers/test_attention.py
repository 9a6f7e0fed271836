import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from maformer_mm.layers import (
    Attention,
    CrossAttention,
    WindowAttention,
    relative_position_index,
    resize_rel_pos_table,
    set_fused_attn,
)


def _both_paths(module, *inputs):
    module.eval()
    set_fused_attn(module, True)
    fused = module(*inputs)
    set_fused_attn(module, False)
    explicit = module(*inputs)
    return fused, explicit


def test_window_attention_sdpa_matches_explicit_with_bias():
    attn = WindowAttention(32, 4, window_size=7)
    torch.nn.init.normal_(attn.relative_position_bias_table, std=1.0)  # a bias that matters
    fused, explicit = _both_paths(attn, torch.randn(6, 49, 32))
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_global_attention_sdpa_matches_explicit():
    fused, explicit = _both_paths(Attention(32, 2), torch.randn(2, 50, 32))
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


def test_cross_attention_sdpa_matches_explicit_with_different_lengths():
    attn = CrossAttention(24, 3)
    fused, explicit = _both_paths(attn, torch.randn(2, 37, 24), torch.randn(2, 11, 24))
    assert fused.shape == (2, 37, 24)
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize('fused', [True, False])
def test_both_paths_use_the_head_scale(fused):
    """A reference computed by hand with 2 heads of width 4: logits are scaled by 4**-0.5 (the head width, not the
    embedding width 8), and divided by it, not multiplied."""
    attn = Attention(8, 2, qkv_bias=False).eval()
    torch.nn.init.normal_(attn.qkv.weight, std=1.0)  # logits of order one: a wrong scale shows
    set_fused_attn(attn, fused)
    x = torch.randn(1, 5, 8)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    heads = [
        torch.softmax(q[..., h : h + 4] @ k[..., h : h + 4].transpose(1, 2) / 4**0.5, dim=-1) @ v[..., h : h + 4]
        for h in (0, 4)
    ]
    ref = attn.proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attn(x), ref, atol=1e-5, rtol=1e-4)


class _SDPACounter(TorchDispatchMode):
    """Counts the scaled-dot-product-attention kernels run while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 'scaled_dot_product' in func.name()
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('value, fused', [('0', False), ('1', True), (None, True)])
def test_environment_variable_chooses_the_attention_path(monkeypatch, value, fused):
    """MAFORMER_FUSED_ATTN=0 makes every attention of a new model take the explicit path (no SDPA kernel runs);
    unset or 1, SDPA. Both give the same maps."""
    from maformer_mm.models import MAFormer

    if value is None:
        monkeypatch.delenv('MAFORMER_FUSED_ATTN', raising=False)
    else:
        monkeypatch.setenv('MAFORMER_FUSED_ATTN', value)
    model = MAFormer(
        arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(2, 2, 2, 2)), window_size=4, pretrain_img_size=32
    ).eval()
    x = torch.randn(1, 3, 40, 36)
    with _SDPACounter() as counter, torch.no_grad():
        outs = model(x)
    assert (counter.calls > 0) == fused
    assert counter.calls in (0, 2 * 2 + 2)  # window and cross attention in 2 MAF blocks, 2 ViT blocks
    with _SDPACounter() as counter, torch.no_grad():
        other = set_fused_attn(model, not fused)(x)
    assert (counter.calls > 0) != fused  # set_fused_attn switches every attention
    for a, b in zip(outs, other):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_relative_position_index_is_symmetric_offset():
    index = relative_position_index(3)
    assert index.shape == (9, 9)
    assert index.min() == 0 and index.max() == 24
    assert torch.all(index.diagonal() == 12)  # zero offset sits in the table centre


def test_rel_pos_table_resizes_on_load():
    src = WindowAttention(16, 2, window_size=7)
    dst = WindowAttention(16, 2, window_size=12)
    dst.load_state_dict(src.state_dict())
    assert dst.relative_position_bias_table.shape == (23 * 23, 2)
    constant = torch.full((13 * 13, 2), 0.5)
    torch.testing.assert_close(resize_rel_pos_table(constant, 12), torch.full((23 * 23, 2), 0.5))


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match='divisible by num_heads'):
        Attention(10, 3)
