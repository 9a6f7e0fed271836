"""The two block types of MAFormer, both on NHWC token maps (B, H, W, C).

MAFBlock (stages 1-2): window self-attention (local), GLD (global tokens) and a cross-attention in
which the local tokens query the global ones, then an MLP. ViTBlock (stages 3-4): pre-norm global
self-attention and MLP; with `window_size > 0` it attends inside windows instead (ViTDet style),
with the same parameters, so checkpoints trained with global attention load unchanged.
"""

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.drop import DropPath
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from .attention import Attention, CrossAttention, WindowAttention
from .gld import GLD
from .window import window_partition, window_unpartition

__all__ = ['BlockOptions', 'MAFBlock', 'ViTBlock']


@dataclass(frozen=True)
class BlockOptions:
    """What every block of a backbone shares, built once by the backbone.

    Args:
        mlp_ratio: MLP hidden width over C.
        qkv_bias: Bias in the q/k/v projections.
        drop: Dropout in the MLP and after the attention projections.
        attn_drop: Dropout on attention weights.
        norm_cfg: Norm layer config (LayerNorm by default).
        act_cfg: MLP activation config (GELU by default).
    """

    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop: float = 0.0
    attn_drop: float = 0.0
    norm_cfg: Optional[dict] = None
    act_cfg: Optional[dict] = None

    def norm(self, embed_dims: int) -> nn.Module:
        return build_norm_layer(self.norm_cfg or dict(type='LN'), embed_dims)[1]

    def ffn(self, embed_dims: int, drop_path: float) -> FFN:
        """mmcv's two-layer MLP with the residual added inside (call it with `identity=x`)."""
        return FFN(
            embed_dims=embed_dims,
            feedforward_channels=int(embed_dims * self.mlp_ratio),
            num_fcs=2,
            ffn_drop=self.drop,
            dropout_layer=dict(type='DropPath', drop_prob=drop_path) if drop_path else None,
            act_cfg=self.act_cfg or dict(type='GELU'),
            add_identity=True,
        )


class _PreNormBlock(nn.Module):
    """The frame of both blocks: `norm1` before the token mixing, which each block adds, then `add_mlp`'s
    `norm2`, MLP and stochastic depth (added last, so the parameters keep their order in checkpoints)."""

    def __init__(self, embed_dims: int, window_size: int, options: BlockOptions) -> None:
        super().__init__()
        self.window_size = window_size
        self.norm1 = options.norm(embed_dims)

    def add_mlp(self, embed_dims: int, drop_path: float, options: BlockOptions) -> None:
        self.norm2 = options.norm(embed_dims)
        self.ffn = options.ffn(embed_dims, drop_path)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()


class MAFBlock(_PreNormBlock):
    """Multi-scale Attention Fusion block.

    Args:
        embed_dims: Channels C.
        num_heads: Heads of the window attention and of the cross-attention.
        window_size: Side of the local attention windows (maps are padded to a multiple, then cropped).
        ref_hw: GLD reference grid of this stage.
        gld_ratio: N, global tokens per reference token.
        drop_path: Stochastic depth rate of every residual branch of this block.
        options: MLP ratio, biases, dropout rates, norm and activation.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        window_size: int,
        ref_hw: Tuple[int, int],
        gld_ratio: float = 0.5,
        drop_path: float = 0.0,
        options: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__(embed_dims, window_size, options)
        qkv_bias, attn_drop, drop = options.qkv_bias, options.attn_drop, options.drop
        self.attn = WindowAttention(embed_dims, num_heads, window_size, qkv_bias, attn_drop, drop)
        self.gld = GLD(ref_hw, gld_ratio)
        self.norm_q = options.norm(embed_dims)
        self.norm_kv = options.norm(embed_dims)
        self.cross_attn = CrossAttention(embed_dims, num_heads, qkv_bias, attn_drop, drop)
        self.add_mlp(embed_dims, drop_path, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        windows, pad_hw = window_partition(y, self.window_size)  # B*nW, ws*ws, C
        local = window_unpartition(self.attn(windows), self.window_size, pad_hw, (h, w))
        x = x + self.drop_path(local)
        glob = self.norm_kv(self.gld(y))  # B, G, C from the unpadded map
        fused = self.cross_attn(self.norm_q(x).reshape(b, h * w, c), glob)  # B, H*W, C
        x = x + self.drop_path(fused.view(b, h, w, c))
        return self.ffn(self.norm2(x), identity=x)


class ViTBlock(_PreNormBlock):
    """Pre-norm transformer block: global self-attention (or windowed, ViTDet style) and MLP.

    Args:
        embed_dims: Channels C.
        num_heads: Attention heads.
        drop_path: Stochastic depth rate of both residual branches.
        window_size: 0 for global attention; > 0 attends inside non-overlapping windows of this side
            with the same weights (no extra parameters). A map that fits in one window attends globally
            (the same tokens, without padding).
        options: As `MAFBlock`.
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        drop_path: float = 0.0,
        window_size: int = 0,
        options: BlockOptions = BlockOptions(),
    ) -> None:
        super().__init__(embed_dims, window_size, options)
        self.attn = Attention(embed_dims, num_heads, options.qkv_bias, options.attn_drop, options.drop)
        self.add_mlp(embed_dims, drop_path, options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        if self.window_size and (h > self.window_size or w > self.window_size):
            windows, pad_hw = window_partition(y, self.window_size)
            y = window_unpartition(self.attn(windows), self.window_size, pad_hw, (h, w))
        else:
            y = self.attn(y.reshape(b, h * w, c)).view(b, h, w, c)
        x = x + self.drop_path(y)
        return self.ffn(self.norm2(x), identity=x)
