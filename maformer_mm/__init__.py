"""maformer_mm: the MAFormer backbone as an OpenMMLab plugin.

`import maformer_mm` (or `custom_imports=dict(imports=['maformer_mm'])` in a config) registers `MAFormer` where
mmdet, mmseg and mmpretrain find `type='MAFormer'`, and makes mmengine read every checkpoint as data
(`checkpoint.remote`: local files, URLs, hub names), never run the config texts checkpoints carry
(`checkpoint.config_text`), and build inferencers' heads for the checkpoint's classes (`checkpoint.inferencers`).
torch's own allow-list stays as it was. See docs/checkpoints_and_safety.md. It also lets configs inherit this
package's configs as `maformer_mm::maformer/NAME.py` (`zoo`), and makes mmengine's FLOP counter count
scaled-dot-product attention in this process (`analysis.sdpa`; the host tools' `get_flops.py` count MAFormer right).
"""

from .analysis.sdpa import install_sdpa_flop_count
from .checkpoint import install_inferencer_checks, install_mmengine_loaders
from .config.zoo import register_config_package
from .engine import BF16OptimWrapper, InvalidLossHook
from .models import MAFormer
from .version import __version__

install_mmengine_loaders()
install_inferencer_checks()
register_config_package()
install_sdpa_flop_count()

__all__ = ['__version__', 'MAFormer', 'BF16OptimWrapper', 'InvalidLossHook']
