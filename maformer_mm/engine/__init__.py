"""Training-loop pieces registered in mmengine's root registries (found from mmdet, mmseg, mmpretrain)."""

from .checkpointing import SafeCheckpointHook, use_safe_checkpoints
from .hooks import InvalidLossHook
from .layer_decay import LayerDecayOptimWrapperConstructor
from .optim import BF16OptimWrapper

__all__ = [
    'InvalidLossHook',
    'BF16OptimWrapper',
    'LayerDecayOptimWrapperConstructor',
    'SafeCheckpointHook',
    'use_safe_checkpoints',
]
