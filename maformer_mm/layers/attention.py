"""Multi-head attention modules of MAFormer: window self-attention, global self-attention and
the local-to-global cross-attention of the MAF block.

Every module computes attention through `F.scaled_dot_product_attention` (fused kernels on GPU)
unless its `fused_attn` flag is off; the explicit path beside it has identical semantics (same
scale, the additive bias added to the logits) and exists so that the two can be compared.
"""

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .export import is_exporting
from .rel_pos import bias_gather_index, resize_rel_pos_table

__all__ = ['Attention', 'WindowAttention', 'CrossAttention', 'use_fused_attn', 'set_fused_attn']


def use_fused_attn() -> bool:
    """Default for new modules: SDPA unless the environment sets MAFORMER_FUSED_ATTN=0."""
    return os.environ.get('MAFORMER_FUSED_ATTN', '1') != '0'


def set_fused_attn(model: nn.Module, enabled: bool) -> nn.Module:
    """Switches every attention module inside `model` to the SDPA (True) or explicit (False) path."""
    for module in model.modules():
        if isinstance(module, _AttentionCore):
            module.fused_attn = enabled
    return model


class _AttentionCore(nn.Module):
    """Shared head bookkeeping and the attention kernel (SDPA or explicit) of all variants."""

    def __init__(self, embed_dims: int, num_heads: int, attn_drop: float = 0.0) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
        self.num_heads = num_heads
        self.head_dim = embed_dims // num_heads
        self.scale = self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.fused_attn = use_fused_attn()

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """softmax(q k^T * scale + bias) v for q (B, h, N, d), k and v (B, h, M, d); bias broadcasts to (B, h, N, M)."""
        drop = self.attn_drop if self.training else 0.0
        if self.fused_attn:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop, scale=self.scale)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B, h, N, M
        if bias is not None:
            attn = attn + bias
        attn = F.dropout(attn.softmax(dim=-1), drop, self.training)
        return attn @ v

    def split_heads(self, x: torch.Tensor, parts: int) -> torch.Tensor:
        """(B, N, parts * C) -> (parts, B, h, N, d)."""
        b, n, _ = x.shape
        return x.reshape(b, n, parts, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)

    @staticmethod
    def merge_heads(x: torch.Tensor) -> torch.Tensor:
        """(B, h, N, d) -> (B, N, h * d).

        Eagerly a view when SDPA's output is laid out (B, N, h, d), as on the CPU, else one copy. An export
        graph copies always: the exporter replaces the SDPA kernel by its decomposition, whose output is laid
        out otherwise than the kernel's traced one, so a `view` decided at trace time would be invalid.
        """
        b, _, n, _ = x.shape
        x = x.transpose(1, 2)  # B, N, h, d
        if is_exporting():
            return x.clone(memory_format=torch.contiguous_format).view(b, n, -1)
        return x.reshape(b, n, -1)


class Attention(_AttentionCore):
    """Global multi-head self-attention over a token sequence (ViT blocks).

    Args:
        embed_dims: Channels C.
        num_heads: Heads; C must be divisible by it.
        qkv_bias: Bias in the qkv projection.
        attn_drop: Dropout on the attention weights.
        proj_drop: Dropout after the output projection.
    """

    def __init__(
        self, embed_dims: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__(embed_dims, num_heads, attn_drop)
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def get_attn_bias(self, dtype: torch.dtype) -> Optional[torch.Tensor]:
        """The additive logit bias of this attention (None for plain global attention)."""
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C)."""
        q, k, v = self.split_heads(self.qkv(x), 3)  # each B, h, N, d
        out = self.attend(q, k, v, self.get_attn_bias(q.dtype))
        return self.proj_drop(self.proj(self.merge_heads(out)))


class WindowAttention(Attention):
    """Self-attention inside one window with a learned Swin-style relative position bias.

    The bias table starts truncated-normal (std 0.02, as Swin's) and resizes itself (bicubic) when a
    checkpoint made with another window size is loaded. The bias handed to SDPA is gathered straight into the
    layout the fused CUDA kernels accept (see `bias_gather_index`): a permuted view of the table, stride h in the
    key dimension, would send every window to the math kernel on a GPU.

    Args:
        window_size: Side of the square window; inputs are (B * nW, window_size**2, C).
        Other args: as `Attention`.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        window_size: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__(embed_dims, num_heads, qkv_bias, attn_drop, proj_drop)
        self.window_size = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer('bias_index', bias_gather_index(window_size, num_heads), persistent=False)  # h, N, P
        self.register_load_state_dict_pre_hook(WindowAttention._resize_table_hook)
        self.reset_table()

    def reset_table(self) -> None:
        """Truncated-normal (std 0.02) initialisation of the relative-position bias table."""
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def get_attn_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """The relative position bias of every (query, key) pair of the window, (1, h, N, N) in `dtype`.

        One gather from the (small) table cast to `dtype`: stride 1 in the key dimension, rows padded to a multiple
        of 8 elements. The cast comes first because `.to()` of the sliced result would copy it into a contiguous
        (unaligned) layout.
        """
        n = self.window_size**2
        table = self.relative_position_bias_table.to(dtype).reshape(-1)  # (2w-1)^2 * h
        return table[self.bias_index][..., :n].unsqueeze(0)  # 1, h, N, N (row stride P)

    @staticmethod
    def _resize_table_hook(module: 'WindowAttention', state_dict: dict, prefix: str, *args) -> None:
        key = prefix + 'relative_position_bias_table'
        table = state_dict.get(key)
        if table is None or table.shape == module.relative_position_bias_table.shape:
            return
        if table.shape[1] != module.num_heads:
            return  # a real mismatch: leave it to load_state_dict to report
        state_dict[key] = resize_rel_pos_table(table, module.window_size)
        from mmengine.logging import print_log

        print_log(
            f'Resized {key} from {tuple(table.shape)} to {tuple(state_dict[key].shape)} '
            f'(window size {module.window_size})',
            logger='current',
        )


class CrossAttention(_AttentionCore):
    """Multi-head attention of N query tokens over M context tokens (no mask: every query sees every key).

    In a MAF block the queries are the local-branch tokens and the context is the GLD global tokens.
    """

    def __init__(
        self, embed_dims: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__(embed_dims, num_heads, attn_drop)
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x: (B, N, C), context: (B, M, C) -> (B, N, C)."""
        q = self.split_heads(self.q(x), 1)[0]  # B, h, N, d
        k, v = self.split_heads(self.kv(context), 2)  # each B, h, M, d
        out = self.attend(q, k, v)
        return self.proj_drop(self.proj(self.merge_heads(out)))
