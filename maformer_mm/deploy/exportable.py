"""Stand-ins for host-library modules that an ONNX export at dynamic sizes cannot take as they are."""

from typing import List

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from ..layers import adaptive_pool_weights, is_exporting

__all__ = ['ExportableAdaptiveAvgPool2d', 'make_exportable']


class ExportableAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """`nn.AdaptiveAvgPool2d` that an export graph computes as `P_h @ x @ P_w^T`, with pooling matrices built
    from the (symbolic) input size. ONNX has no adaptive pooling, and torch.export's decomposition of it
    freezes the bins of the traced size (UperNet's pyramid pooling then fails at any other size). Eagerly it
    is the parent module, unchanged."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = _pair(self.output_size)
        if not is_exporting() or out_h is None or out_w is None:
            return super().forward(x)
        rows = adaptive_pool_weights(x.shape[-2], out_h, x.device).to(x.dtype)  # out_h, H
        cols = adaptive_pool_weights(x.shape[-1], out_w, x.device).to(x.dtype)  # out_w, W
        return rows @ x @ cols.T


def make_exportable(module: nn.Module) -> List[str]:
    """Replaces, in place, every `nn.AdaptiveAvgPool2d` inside `module` by `ExportableAdaptiveAvgPool2d`
    (same output size, no state); returns the replaced modules' names."""
    replaced = []
    for name, child in list(module.named_modules()):
        if type(child) is nn.AdaptiveAvgPool2d:
            parent_name, _, attr = name.rpartition('.')
            setattr(module.get_submodule(parent_name), attr, ExportableAdaptiveAvgPool2d(child.output_size))
            replaced.append(name)
    return replaced
