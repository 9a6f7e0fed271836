"""bf16 automatic mixed precision for any device, CPU included.

mmengine's AmpOptimWrapper refuses to start without a GPU (or NPU/MLU/MUSA). bf16 has fp32's range,
so it needs no loss scaling: this wrapper only runs the forward pass under `torch.autocast`.
No kernel of mmcv 2.1.0 takes bf16 (its CPU and CUDA ops dispatch float, double and at most half; nms reads
float only), so the autocast can be limited to the backbone (`scope='backbone'`), whose outputs are handed to
the neck and heads as float32. `tools/train.py --amp` picks this wrapper with `scope='backbone'` on the CPU,
and mmengine's AmpOptimWrapper (fp16, dynamic loss scaling) on CUDA.
"""

from contextlib import contextmanager
from typing import Iterator, List, Optional

import torch
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from ..hosts import bf16_unsafe_types

__all__ = ['BF16OptimWrapper', 'bf16_unsafe_modules']


def bf16_unsafe_modules(model: nn.Module, device_type: str) -> List[str]:
    """'name (Type)' of each submodule of `model` that would pass bf16 tensors to an mmcv kernel lacking bf16."""
    types = bf16_unsafe_types(device_type)
    return [
        f'{name} ({type(module).__name__})'
        for name, module in model.named_modules()
        if isinstance(module, types) and getattr(module, 'use_sigmoid', True)
    ]


@OPTIM_WRAPPERS.register_module()
class BF16OptimWrapper(OptimWrapper):
    """OptimWrapper whose `optim_context` autocasts the forward pass to bfloat16.

    Args:
        device_type: 'cpu' or 'cuda', the device the forward runs on; by default the device of the model's
            parameters (not merely whether a GPU exists: a `--device cpu` run on a GPU machine needs 'cpu',
            or the autocast would not touch its tensors).
        scope: 'model' autocasts the whole forward; 'backbone' only `model.backbone`. 'model' refuses a model
            with mmcv ops that have no bf16 kernel (RoIAlign of two-stage detectors, mmdet's FocalLoss on
            CUDA): they would fail in the kernel.
        **kwargs: As `OptimWrapper`.
    """

    def __init__(self, device_type: Optional[str] = None, scope: str = 'model', **kwargs) -> None:
        super().__init__(**kwargs)
        if scope not in ('model', 'backbone'):
            raise ValueError(f"BF16OptimWrapper scope must be 'model' or 'backbone', got {scope!r}")
        if device_type not in (None, 'cpu', 'cuda'):
            raise ValueError(f"BF16OptimWrapper device_type must be 'cpu' or 'cuda' (or None), got {device_type!r}")
        self.device_type = device_type
        self.scope = scope
        self._checked: Optional[int] = None  # id of the model whose ops were checked for scope='model'

    def autocast_device(self, model: nn.Module) -> str:
        """`device_type` if given, else the device type of the model's first parameter ('cpu' without any)."""
        if self.device_type is not None:
            return self.device_type
        param = next(model.parameters(), None)
        return 'cpu' if param is None else param.device.type

    def _check_model_scope(self, module: nn.Module, device_type: str) -> None:
        if self._checked == id(module):
            return
        unsafe = bf16_unsafe_modules(module, device_type)
        if unsafe:
            raise ValueError(
                f"BF16OptimWrapper(scope='model') would run bfloat16 through mmcv ops without a bfloat16 {device_type} "
                f"kernel: {', '.join(unsafe)}. Use scope='backbone' (as tools/train.py --amp does on the CPU)"
                + (', or AmpOptimWrapper (fp16) on CUDA' if device_type == 'cuda' else '')
                + '.'
            )
        self._checked = id(module)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        module = model.module if is_model_wrapper(model) else model
        device_type = self.autocast_device(module)
        with super().optim_context(model):
            if self.scope == 'model':
                self._check_model_scope(module, device_type)
                with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                    yield
                return
            backbone = getattr(module, 'backbone', None)
            if backbone is None:
                raise AttributeError(f"BF16OptimWrapper(scope='backbone'): {type(module).__name__} has no backbone")
            active: List[torch.autocast] = []

            def enter(mod: nn.Module, args: tuple) -> None:
                active.append(torch.autocast(device_type=device_type, dtype=torch.bfloat16))
                active[-1].__enter__()

            def leave(mod: nn.Module, args: tuple, output):
                active.pop().__exit__(None, None, None)
                if output is None:  # the forward raised (`always_call`): only leave the autocast
                    return None
                return type(output)(o.float() for o in output) if isinstance(output, (tuple, list)) else output.float()

            # `always_call`: a backbone forward that raises still leaves its autocast, which would otherwise stay
            # on for the thread; the `finally` covers anything that ends the step between the two hooks.
            handles = [
                backbone.register_forward_pre_hook(enter),
                backbone.register_forward_hook(leave, always_call=True),
            ]
            try:
                yield
            finally:
                for handle in handles:
                    handle.remove()
                while active:
                    active.pop().__exit__(None, None, None)
