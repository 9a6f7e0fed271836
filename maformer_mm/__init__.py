"""maformer_mm: the MAFormer backbone as an OpenMMLab plugin.

`import maformer_mm` (or `custom_imports=dict(imports=['maformer_mm'])` in a config) registers
`MAFormer` where mmdet, mmseg and mmpretrain find `type='MAFormer'`, and lets torch's safe loader
read the training checkpoints mmengine writes.
"""
from .version import __version__
from .engine import BF16OptimWrapper, InvalidLossHook
from .models import MAFormer
from .utils.serialization import allow_mmengine_checkpoints

allow_mmengine_checkpoints()

__all__ = ['__version__', 'MAFormer', 'BF16OptimWrapper', 'InvalidLossHook']
