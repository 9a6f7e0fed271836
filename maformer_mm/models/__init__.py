"""Importing this registers MAFormer in mmengine's root MODELS registry, which mmdet, mmseg and
mmpretrain all search for an unscoped `type='MAFormer'`."""

from .backbones import MAFormer

__all__ = ['MAFormer']
