"""Checkpoints: reading them as data (never as code), finding the weights in them, loading them into a
backbone, and converting timm-style weights to this project's names."""
from .backbone import load_backbone_checkpoint, load_backbone_state_dict
from .convert import convert_timm, convert_timm_head, dropped_timm_keys
from .safe_load import (UnsafeCheckpointError, check_checkpoint, install_mmengine_loader, load_mmengine_checkpoint,
                        load_weights)
from .state_dict import STATE_DICT_KEYS, backbone_state_dict, model_state_dict

__all__ = ['UnsafeCheckpointError', 'load_weights', 'load_mmengine_checkpoint', 'check_checkpoint',
           'install_mmengine_loader', 'STATE_DICT_KEYS', 'model_state_dict', 'backbone_state_dict',
           'load_backbone_state_dict', 'load_backbone_checkpoint', 'convert_timm', 'convert_timm_head',
           'dropped_timm_keys']
