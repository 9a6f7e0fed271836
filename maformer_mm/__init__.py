"""maformer_mm: the MAFormer backbone as an OpenMMLab plugin.

`import maformer_mm` (or `custom_imports=dict(imports=['maformer_mm'])` in a config) registers
`MAFormer` where mmdet, mmseg and mmpretrain find `type='MAFormer'`, and makes mmengine read local
checkpoint files as data (`checkpoint.safe_load`): its training checkpoints resume under torch's
weights-only loader, and torch's own allow-list stays as it was. It also lets configs inherit this package's
configs as `maformer_mm::maformer/NAME.py` (`zoo`).
"""
from .version import __version__
from .engine import BF16OptimWrapper, InvalidLossHook
from .models import MAFormer
from .checkpoint import install_mmengine_loader
from .zoo import register_config_package

install_mmengine_loader()
register_config_package()

__all__ = ['__version__', 'MAFormer', 'BF16OptimWrapper', 'InvalidLossHook']
