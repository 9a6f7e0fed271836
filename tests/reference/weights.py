"""Weights that make every term of the equations visible in the outputs."""

import math

import torch
from torch import nn


def randomize_(module: nn.Module, seed: int = 0) -> nn.Module:
    """Fills every parameter with seeded random values of a size that keeps activations of order one.

    A model's own init leaves biases at zero, LayerNorms at identity and relative-position tables near zero,
    which hides a wrong bias, norm or table; here norm scales are 1 +- 0.3, biases +- 0.3, tables of
    standard deviation 1, and weight matrices scaled by 1 / sqrt(fan-in).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith('relative_position_bias_table'):
                param.normal_(0.0, 1.0, generator=gen)
            elif param.dim() == 1:
                param.normal_(1.0 if 'norm' in name and name.endswith('weight') else 0.0, 0.3, generator=gen)
            else:
                param.normal_(0.0, 1 / math.sqrt(param[0].numel()), generator=gen)
    return module
