"""maformer_mm: the MAFormer backbone as an OpenMMLab plugin.

`import maformer_mm` (or `custom_imports=dict(imports=['maformer_mm'])` in a config) registers
`MAFormer` where mmdet, mmseg and mmpretrain find `type='MAFormer'`, and makes mmengine read local
checkpoint files as data (`checkpoint.safe_load`): its training checkpoints resume under torch's
weights-only loader, and torch's own allow-list stays as it was.
"""
from .version import __version__
from .engine import BF16OptimWrapper, InvalidLossHook
from .models import MAFormer
from .checkpoint import install_mmengine_loader

install_mmengine_loader()

__all__ = ['__version__', 'MAFormer', 'BF16OptimWrapper', 'InvalidLossHook']
