"""Checkpoints: reading them as data (never as code) from files, URLs and hub names, keeping the config texts they
carry from mmengine, finding the weights in them, loading them into a backbone or an inferencer, and
converting timm-style weights to this project's names."""

from .backbone import load_backbone_checkpoint, load_backbone_state_dict
from .config_text import defuse_config_texts, saved_gpu_ids
from .convert import convert_timm, convert_timm_head, dropped_timm_keys
from .inferencers import install_inferencer_checks
from .remote import fetch_url, install_mmengine_loaders, read_checkpoint
from .safe_load import UnsafeCheckpointError, check_checkpoint, load_mmengine_checkpoint, load_weights
from .state_dict import STATE_DICT_KEYS, backbone_state_dict, model_state_dict

__all__ = [
    'UnsafeCheckpointError',
    'load_weights',
    'load_mmengine_checkpoint',
    'check_checkpoint',
    'read_checkpoint',
    'fetch_url',
    'install_mmengine_loaders',
    'install_inferencer_checks',
    'saved_gpu_ids',
    'defuse_config_texts',
    'STATE_DICT_KEYS',
    'model_state_dict',
    'backbone_state_dict',
    'load_backbone_state_dict',
    'load_backbone_checkpoint',
    'convert_timm',
    'convert_timm_head',
    'dropped_timm_keys',
]
