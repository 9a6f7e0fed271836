"""BF16OptimWrapper's backbone-scoped autocast ends with the backbone call, also when it raises."""

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from maformer_mm.engine import BF16OptimWrapper


class _Backbone(nn.Linear):
    def __init__(self, fail: bool) -> None:
        super().__init__(4, 4)
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        assert y.dtype == torch.bfloat16  # the wrapper's autocast is on inside the backbone
        if self.fail:
            raise RuntimeError('backbone failed')
        return y


class _Detector(nn.Module):
    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.backbone = _Backbone(fail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _wrapper(model: nn.Module) -> BF16OptimWrapper:
    return BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device_type='cpu', scope='backbone')


@pytest.mark.parametrize('fail', [False, True], ids=['ok', 'backbone_raises'])
def test_bf16_backbone_scope_leaves_autocast_when_the_backbone_raises(fail):
    model = _Detector(fail)
    assert not torch.is_autocast_enabled('cpu')
    with pytest.raises(RuntimeError, match='backbone failed') if fail else nullcontext():
        with _wrapper(model).optim_context(model):
            out = model(torch.randn(2, 4))
            assert out.dtype == torch.float32  # handed on as float32, autocast off after the backbone
            assert not torch.is_autocast_enabled('cpu')
    assert not torch.is_autocast_enabled('cpu')
    x = torch.randn(3, 3)
    assert (x @ x).dtype == torch.float32  # the thread computes in float32 again


def test_bf16_backbone_autocast_is_off_as_soon_as_the_forward_raises():
    """The autocast ends with the failed backbone call, not only when the step's context is left."""
    model = _Detector(True)
    with _wrapper(model).optim_context(model):
        with pytest.raises(RuntimeError, match='backbone failed'):
            model(torch.randn(2, 4))
        assert not torch.is_autocast_enabled('cpu')
