"""The spec's block equations, one image at a time, on (H, W, C) maps.

Weights are read from a state dict by name, with the layout that the checkpoints define:
`qkv.weight` stacks the q, k and v projections (rows [0, C), [C, 2C), [2C, 3C)); `kv.weight` stacks k and v;
head h owns channels [h d, (h + 1) d) of each, d = C / heads; a relative-position table row
(dy + w - 1) (2w - 1) + (dx + w - 1) holds the bias of a key dy rows and dx columns before its query.
"""

import math
from typing import Callable, Optional, Tuple

import torch

from .ops import Params, bilinear, gelu, layer_norm, linear, resample, resize_matrix, softmax


def multi_head_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """softmax(q_h k_h^T / sqrt(d) + bias_h) v_h for each head h, concatenated: q (N, C), k and v (M, C)."""
    d = q.shape[-1] // num_heads
    outs = []
    for h in range(num_heads):
        q_h, k_h, v_h = (t[:, h * d : (h + 1) * d].contiguous() for t in (q, k, v))
        logits = q_h @ k_h.T / math.sqrt(d)
        if bias is not None:
            logits = logits + bias[h]
        outs.append(softmax(logits) @ v_h)
    return torch.cat(outs, dim=-1)


def self_attention(
    tokens: torch.Tensor, params: Params, name: str, num_heads: int, bias: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """Multi-head self-attention over (N, C) tokens with the `name.qkv` and `name.proj` layers."""
    c = tokens.shape[-1]
    qkv = linear(tokens, params, f'{name}.qkv')
    q, k, v = qkv[:, :c], qkv[:, c : 2 * c], qkv[:, 2 * c :]
    return linear(multi_head_attention(q, k, v, num_heads, bias), params, f'{name}.proj')


def cross_attention(
    queries: torch.Tensor, context: torch.Tensor, params: Params, name: str, num_heads: int
) -> torch.Tensor:
    """Q = X_L W_Q, K = X_G W_K, V = X_G W_V, softmax(Q K^T / sqrt(d)) V, then the output projection."""
    c = queries.shape[-1]
    q = linear(queries, params, f'{name}.q')
    kv = linear(context, params, f'{name}.kv')
    return linear(multi_head_attention(q, kv[:, :c], kv[:, c:], num_heads), params, f'{name}.proj')


def relative_position_bias(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """(heads, w*w, w*w): the table row of every (query, key) offset inside a w x w window."""
    side = 2 * window_size - 1
    rows = []
    for query in range(window_size**2):
        qy, qx = divmod(query, window_size)
        for key in range(window_size**2):
            ky, kx = divmod(key, window_size)
            rows.append((qy - ky + window_size - 1) * side + (qx - kx + window_size - 1))
    n = window_size**2
    return table[torch.tensor(rows)].reshape(n, n, -1).permute(2, 0, 1)


def in_windows(x: torch.Tensor, window_size: int, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Applies `fn` to the (w*w, C) tokens of each w x w window of a zero-padded (H, W, C) map; crops back."""
    h, w, c = x.shape
    hp, wp = math.ceil(h / window_size) * window_size, math.ceil(w / window_size) * window_size
    padded = x.new_zeros(hp, wp, c)
    padded[:h, :w] = x
    out = torch.empty_like(padded)
    for top in range(0, hp, window_size):
        for left in range(0, wp, window_size):
            window = padded[top : top + window_size, left : left + window_size].reshape(-1, c)
            out[top : top + window_size, left : left + window_size] = fn(window).reshape(window_size, window_size, c)
    return out[:h, :w]


def window_attention(x: torch.Tensor, params: Params, name: str, num_heads: int, window_size: int) -> torch.Tensor:
    """Self-attention inside each window with the learned relative-position bias `name.relative_position_bias_table`."""
    bias = relative_position_bias(params[f'{name}.relative_position_bias_table'], window_size)
    return in_windows(x, window_size, lambda t: self_attention(t, params, name, num_heads, bias))


def global_grid(ref_hw: Tuple[int, int], ratio: float) -> Tuple[int, int]:
    """(round(H_r sqrt(N)), round(W_r sqrt(N))), at least one token per axis."""
    return max(1, round(ref_hw[0] * math.sqrt(ratio))), max(1, round(ref_hw[1] * math.sqrt(ratio)))


def gld(x: torch.Tensor, params: Params, name: str, ref_hw: Tuple[int, int], ratio: float) -> torch.Tensor:
    """Global Learning with Down-sampling: (H, W, C) -> (G, C).

    The map is resized to the reference grid (area pooling on a shrinking axis, linear interpolation on a
    growing one), the FC `name.fc` maps its H_r W_r tokens to G_h G_w along the token axis for every
    channel, and the resized map bilinearly interpolated to the global grid is added as the position term.
    """
    h, w, c = x.shape
    ref = resample(x.permute(2, 0, 1), resize_matrix(h, ref_hw[0]), resize_matrix(w, ref_hw[1]))  # C, H_r, W_r
    tokens = linear(ref.reshape(c, -1), params, f'{name}.fc')  # C, G
    position = bilinear(ref, global_grid(ref_hw, ratio)).reshape(c, -1)  # C, G
    return (tokens + position).T


def mlp(x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
    """Linear, GELU, linear (mmcv FFN's layer names)."""
    return linear(gelu(linear(x, params, f'{name}.layers.0.0')), params, f'{name}.layers.1')


def maf_block(
    x: torch.Tensor, params: Params, name: str, num_heads: int, window_size: int, ref_hw: Tuple[int, int], ratio: float
) -> torch.Tensor:
    """h = LN(x); x_l = x + WinAttn(h); g = GLD(h); x = x_l + CrossAttn(LN(x_l), LN(g)); x = x + MLP(LN(x))."""
    h, w, c = x.shape
    y = layer_norm(x, params, f'{name}.norm1')
    x_local = x + window_attention(y, params, f'{name}.attn', num_heads, window_size)
    glob = layer_norm(gld(y, params, f'{name}.gld', ref_hw, ratio), params, f'{name}.norm_kv')
    queries = layer_norm(x_local, params, f'{name}.norm_q').reshape(h * w, c)
    x = x_local + cross_attention(queries, glob, params, f'{name}.cross_attn', num_heads).reshape(h, w, c)
    return x + mlp(layer_norm(x, params, f'{name}.norm2'), params, f'{name}.ffn')


def vit_block(x: torch.Tensor, params: Params, name: str, num_heads: int, window_size: int = 0) -> torch.Tensor:
    """x = x + MHSA(LN(x)); x = x + MLP(LN(x)). MHSA is global, or inside windows (no bias) when
    `window_size` > 0 and the map does not fit in one window."""
    h, w, c = x.shape
    y = layer_norm(x, params, f'{name}.norm1')
    attend = lambda t: self_attention(t, params, f'{name}.attn', num_heads)  # noqa: E731
    if window_size and (h > window_size or w > window_size):
        x = x + in_windows(y, window_size, attend)
    else:
        x = x + attend(y.reshape(h * w, c)).reshape(h, w, c)
    return x + mlp(layer_norm(x, params, f'{name}.norm2'), params, f'{name}.ffn')


def patch_embed(image: torch.Tensor, params: Params, name: str, patch_size: int) -> torch.Tensor:
    """(3, H, W) -> (ceil(H/p), ceil(W/p), C): zero-pad bottom/right, each p x p patch times the conv kernel, LN."""
    cin, h, w = image.shape
    gh, gw = math.ceil(h / patch_size), math.ceil(w / patch_size)
    padded = image.new_zeros(cin, gh * patch_size, gw * patch_size)
    padded[:, :h, :w] = image
    patches = padded.reshape(cin, gh, patch_size, gw, patch_size).permute(1, 3, 0, 2, 4).reshape(gh, gw, -1)
    kernel = params[f'{name}.projection.weight']
    x = patches @ kernel.reshape(kernel.shape[0], -1).T + params[f'{name}.projection.bias']
    return layer_norm(x, params, f'{name}.norm')


def patch_merging(x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
    """(H, W, C) -> (ceil(H/2), ceil(W/2), C'): zero-pad to even sizes; each 2x2 neighbourhood becomes 4C
    features ordered channel-major (c, then top-left, top-right, bottom-left, bottom-right, as mmcv's
    unfold orders them); LN; linear reduction."""
    h, w, c = x.shape
    padded = x.new_zeros(h + h % 2, w + w % 2, c)
    padded[:h, :w] = x
    corners = [padded[0::2, 0::2], padded[0::2, 1::2], padded[1::2, 0::2], padded[1::2, 1::2]]
    merged = torch.stack(corners, dim=-1).flatten(-2)  # H/2, W/2, C * 4
    return linear(layer_norm(merged, params, f'{name}.norm'), params, f'{name}.reduction')


def batched(fn: Callable[..., torch.Tensor], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """Applies a one-image reference function to each element of a batch."""
    return torch.stack([fn(item, *args, **kwargs) for item in x])
