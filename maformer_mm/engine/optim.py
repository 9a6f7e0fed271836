"""bf16 automatic mixed precision for any device, CPU included.

mmengine's AmpOptimWrapper refuses to start without a GPU (or NPU/MLU/MUSA). bf16 has fp32's range,
so it needs no loss scaling: this wrapper only runs the forward pass under `torch.autocast`.
mmcv's CPU kernels (nms, RoIAlign) take float32 only, so on CPU the autocast can be limited to the
backbone (`scope='backbone'`), whose outputs are handed to the neck and heads as float32.
`tools/train.py --amp` picks this wrapper with `scope='backbone'` when no GPU is present, and
mmengine's AmpOptimWrapper (fp16, dynamic loss scaling) when one is.
"""
from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

__all__ = ['BF16OptimWrapper']


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """OptimWrapper whose `optim_context` autocasts the forward pass to bfloat16.

    Args:
        device_type: 'cpu' or 'cuda'; by default 'cuda' when available, else 'cpu'.
        scope: 'model' autocasts the whole forward; 'backbone' only `model.backbone`.
        **kwargs: As `OptimWrapper`.
    """

    def __init__(self, device_type: Optional[str] = None, scope: str = 'model', **kwargs) -> None:
        super().__init__(**kwargs)
        if scope not in ('model', 'backbone'):
            raise ValueError(f"BF16OptimWrapper scope must be 'model' or 'backbone', got {scope!r}")
        self.device_type = device_type or ('cuda' if torch.cuda.is_available() else 'cpu')
        self.scope = scope

    def _autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device_type, dtype=torch.bfloat16)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        with super().optim_context(model):
            if self.scope == 'model':
                with self._autocast():
                    yield
                return
            module = model.module if is_model_wrapper(model) else model
            backbone = getattr(module, 'backbone', None)
            if backbone is None:
                raise AttributeError(f"BF16OptimWrapper(scope='backbone'): {type(module).__name__} has no backbone")
            active: List[torch.autocast] = []

            def enter(mod: nn.Module, args: tuple) -> None:
                active.append(self._autocast())
                active[-1].__enter__()

            def leave(mod: nn.Module, args: tuple, output):
                active.pop().__exit__(None, None, None)
                if output is None:  # the forward raised (`always_call`): only leave the autocast
                    return None
                return type(output)(o.float() for o in output) if isinstance(output, (tuple, list)) else output.float()

            # `always_call`: a backbone forward that raises still leaves its autocast, which would otherwise stay
            # on for the thread; the `finally` covers anything that ends the step between the two hooks.
            handles = [backbone.register_forward_pre_hook(enter),
                       backbone.register_forward_hook(leave, always_call=True)]
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()
                while active:
                    active.pop().__exit__(None, None, None)
