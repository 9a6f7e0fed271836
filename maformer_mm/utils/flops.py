"""Params and FLOPs with attention counted.

mmengine's FlopAnalyzer counts multiply-adds but returns 0 for `aten::scaled_dot_product_attention`;
`sdpa_flop_jit` counts it as the two matrix products it performs, exactly as the explicit path's
matmuls are counted, so both attention paths give the same total.
"""

import inspect
from collections import Counter
from typing import Any, List, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.analysis.jit_handles import get_shape
from torch import nn

__all__ = ['sdpa_flop_jit', 'flop_analyzer', 'complexity', 'tensor_forward', 'model_complexity']


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> Counter:
    """Multiply-adds of softmax(q k^T) v for q (..., N, d), k (..., M, d), v (..., M, dv)."""
    q, k, v = (get_shape(t) for t in inputs[:3])
    batch = 1
    for dim in q[:-2]:
        batch *= dim
    n, d = q[-2:]
    m, dv = k[-2], v[-1]
    return Counter({'scaled_dot_product_attention': batch * n * m * (d + dv)})


def flop_analyzer(model: nn.Module, inputs: Tuple[Any, ...]) -> FlopAnalyzer:
    """A FlopAnalyzer that also counts SDPA; quiet about ops it does not count (element-wise ones)."""
    analyzer = FlopAnalyzer(model, inputs)
    analyzer.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
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
        if head is not None and 'batch_data_samples' in inspect.signature(head.forward).parameters:
            # mmseg 1.2.2's EncoderDecoder in mode 'tensor' calls `decode_head.forward(x)`, which its MaskFormer and
            # Mask2Former heads refuse: they take the data samples too. Same computation, called as they need.
            return head.forward(self.model.extract_feat(inputs), self.data_samples)
        return self.model(inputs, self.data_samples, mode='tensor')


def _data_samples(scope: str, hw: Tuple[int, int]) -> Any:
    meta = dict(img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw, scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample

        return [DetDataSample(metainfo=meta)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample

        return [SegDataSample(metainfo=meta)]
    return None


def tensor_forward(
    model: nn.Module, scope: str, hw: Tuple[int, int], in_channels: int = 3
) -> Tuple[nn.Module, torch.Tensor]:
    """A traceable forward of `model` on one synthetic (1, in_channels, H, W) image: whole detectors,
    segmentors and classifiers are wrapped to run in mode='tensor'; a bare backbone is returned as is."""
    inputs = torch.rand(1, in_channels, *hw)
    if scope in ('mmdet', 'mmseg', 'mmpretrain') and hasattr(model, 'data_preprocessor'):
        wrapped = _TensorForward(model, _data_samples(scope, hw))
        return wrapped.train(model.training), inputs  # a new module is in training mode: keep the model's
    return model, inputs


def model_complexity(model: nn.Module, scope: str, hw: Tuple[int, int], in_channels: int = 3) -> Tuple[int, int]:
    """(FLOPs, params) of a whole detector / segmentor / classifier (or a bare backbone) on one
    synthetic (1, in_channels, H, W) image, without a dataset."""
    runnable, inputs = tensor_forward(model, scope, hw, in_channels)
    return complexity(runnable, (inputs,))  # a wrapper holds exactly the model's parameters
