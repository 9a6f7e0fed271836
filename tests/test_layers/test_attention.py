import pytest
import torch

from maformer_mm.layers import Attention, CrossAttention, WindowAttention, relative_position_index, \
    resize_rel_pos_table, set_fused_attn


def _both_paths(module, *inputs):
    module.eval()
    set_fused_attn(module, True)
    fused = module(*inputs)
    set_fused_attn(module, False)
    explicit = module(*inputs)
    return fused, explicit


def test_window_attention_sdpa_matches_explicit_with_bias():
    attn = WindowAttention(32, 4, window_size=7)
    torch.nn.init.normal_(attn.relative_position_bias_table, std=1.)  # a bias that matters
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


def test_explicit_path_uses_the_head_scale():
    """A reference computed by hand: logits are scaled by d**-0.5, not multiplied by it."""
    attn = Attention(8, 1, qkv_bias=False).eval()
    set_fused_attn(attn, False)
    x = torch.randn(1, 5, 8)
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    ref = attn.proj(torch.softmax(q @ k.transpose(1, 2) / 8 ** 0.5, dim=-1) @ v)
    torch.testing.assert_close(attn(x), ref)


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
