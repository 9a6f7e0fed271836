"""Params and FLOPs with attention counted.

mmengine's FlopAnalyzer counts multiply-adds but returns 0 for `aten::scaled_dot_product_attention`;
`sdpa_flop_jit` counts it as the two matrix products it performs, exactly as the explicit path's
matmuls are counted, so both attention paths give the same total.
"""

from typing import Any, List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config
from torch import nn

from ..hosts import FLOP_SHAPES, TASKS, data_samples, takes_data_samples
from .sdpa import SDPA_OP, sdpa_flop_jit

__all__ = [
    'sdpa_flop_jit',
    'flop_analyzer',
    'complexity',
    'tensor_forward',
    'model_complexity',
    'backbone_rows',
    'config_complexity',
]


def flop_analyzer(model: nn.Module, inputs: Tuple[Any, ...]) -> FlopAnalyzer:
    """A FlopAnalyzer that also counts SDPA; quiet about ops it does not count (element-wise ones)."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle(SDPA_OP, sdpa_flop_jit)  # also where install_sdpa_flop_count has not run
    analyzer.unsupported_ops_warnings(False)
    analyzer.uncalled_modules_warnings(False)
    return analyzer


@torch.no_grad()
def complexity(model: nn.Module, inputs: Tuple[Any, ...]) -> Tuple[int, int]:
    """(FLOPs as multiply-adds, parameter count) of one forward of `model(*inputs)`."""
    was_training = model.training
    model.eval()
    try:
        flops = flop_analyzer(model, inputs).total()
    finally:
        model.train(was_training)
    return flops, parameter_count(model)['']


class _TensorForward(nn.Module):
    """Calls an OpenMMLab model in mode='tensor' with fixed data samples, so it can be traced."""

    def __init__(self, model: nn.Module, data_samples: Any) -> None:
        super().__init__()
        self.model = model
        self.data_samples = data_samples

    def forward(self, inputs: torch.Tensor) -> Any:
        head = getattr(self.model, 'decode_head', None)
        if takes_data_samples(head):
            # mmseg 1.2.2's EncoderDecoder in mode 'tensor' calls `decode_head.forward(x)`, which its MaskFormer and
            # Mask2Former heads refuse: they take the data samples too. Same computation, called as they need.
            return head.forward(self.model.extract_feat(inputs), self.data_samples)
        return self.model(inputs, self.data_samples, mode='tensor')


def tensor_forward(
    model: nn.Module, scope: str, hw: Tuple[int, int], in_channels: int = 3
) -> Tuple[nn.Module, torch.Tensor]:
    """A traceable forward of `model` on one synthetic (1, in_channels, H, W) image: whole detectors,
    segmentors and classifiers are wrapped to run in mode='tensor'; a bare backbone is returned as is."""
    inputs = torch.rand(1, in_channels, *hw)
    if scope in TASKS and hasattr(model, 'data_preprocessor'):
        wrapped = _TensorForward(model, data_samples(scope, hw))
        return wrapped.train(model.training), inputs  # a new module is in training mode: keep the model's
    return model, inputs


def model_complexity(model: nn.Module, scope: str, hw: Tuple[int, int], in_channels: int = 3) -> Tuple[int, int]:
    """(FLOPs, params) of a whole detector / segmentor / classifier (or a bare backbone) on one
    synthetic (1, in_channels, H, W) image, without a dataset."""
    runnable, inputs = tensor_forward(model, scope, hw, in_channels)
    return complexity(runnable, (inputs,))  # a wrapper holds exactly the model's parameters


def backbone_rows(archs: Sequence[str], hw: Tuple[int, int]) -> List[Tuple[str, float, float]]:
    """(arch, params in M, FLOPs in G) of each MAFormer variant at (H, W)."""
    from ..models import MAFormer

    rows = []
    for arch in archs:
        flops, params = model_complexity(MAFormer(arch=arch), 'backbone', hw)
        rows.append((arch, params / 1e6, flops / 1e9))
    return rows


def config_complexity(cfg: Config, hw: Optional[Tuple[int, int]] = None) -> Tuple[int, int, Tuple[int, int]]:
    """(FLOPs, params, (H, W)) of the model a config describes, at (H, W) or its task's usual size."""
    from mmengine.registry import MODELS, init_default_scope

    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    hw = hw or FLOP_SHAPES.get(scope, (224, 224))
    flops, params = model_complexity(model, scope, hw)
    return flops, params, hw
