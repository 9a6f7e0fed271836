"""Finding the weights inside a checkpoint: the one place that knows where trainers keep them.

Pure functions, no I/O. Every reader of weights (the backbone loader, tools/convert_checkpoint.py) unwraps through
`model_state_dict`, so they all accept the same forms; the checks of a whole model's checkpoint (`classes`) see what
mmengine's loader will load (`loadable_state_dict`).
"""

from typing import Any, Dict, Mapping, Optional

import torch

__all__ = [
    'STATE_DICT_KEYS',
    'EMA_KEYS',
    'WRAPPER_PREFIXES',
    'model_state_dict',
    'loadable_state_dict',
    'strip_prefix',
    'backbone_state_dict',
]

# Where trainers keep the weights, in the order they are looked for (mmengine, timm/DeiT, timm EMA).
STATE_DICT_KEYS = ('state_dict', 'model', 'state_dict_ema', 'model_ema')
EMA_KEYS = tuple(k for k in STATE_DICT_KEYS if 'ema' in k)
# What wrappers put before every key: DDP (`module.`) and torch.compile (`_orig_mod.`), nested in either order.
WRAPPER_PREFIXES = ('module.', '_orig_mod.')


def strip_prefix(state_dict: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    """The entries whose key starts with `prefix`, without it."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def model_state_dict(checkpoint: Mapping, ema: bool = False) -> Dict[str, torch.Tensor]:
    """The tensors of the model in `checkpoint`, with wrapper prefixes removed.

    `checkpoint` is a state dict itself or holds one under `state_dict`, `model`, `state_dict_ema` or
    `model_ema` (the first present); with `ema`, only the EMA entries are looked at.

    Raises:
        KeyError: `ema` is set and the checkpoint has no EMA entry.
    """
    keys = EMA_KEYS if ema else STATE_DICT_KEYS
    state_dict: Optional[Mapping] = None
    for key in keys:
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            state_dict = checkpoint[key]
            break
    if state_dict is None:
        if ema:
            raise KeyError(f'the checkpoint has no EMA weights (no {" / ".join(EMA_KEYS)} entry)')
        state_dict = checkpoint
    tensors = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    while tensors:
        wrapper = next((w for w in WRAPPER_PREFIXES if all(k.startswith(w) for k in tensors)), None)
        if wrapper is None:
            break
        tensors = strip_prefix(tensors, wrapper)
    return tensors


def loadable_state_dict(checkpoint: Mapping) -> Dict[str, Any]:
    """What mmengine's `load_checkpoint` hands a whole model: the `state_dict` entry (or the checkpoint itself), with
    `module.` removed from each key that has it (its `revise_keys` default, key by key)."""
    state_dict = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, Mapping) else {}
    return {(k[len('module.') :] if k.startswith('module.') else k): v for k, v in state_dict.items()}


def backbone_state_dict(checkpoint: Mapping, prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """The backbone's own keys of a checkpoint (any form `model_state_dict` accepts).

    Only `prefix` keys when a prefix is given; else only `backbone.*` keys when there are any (whole detector,
    segmentor or classifier checkpoints); else every tensor. The prefix is removed.
    """
    state_dict = model_state_dict(checkpoint)
    if prefix:
        return strip_prefix(state_dict, prefix if prefix.endswith('.') else prefix + '.')
    if any(k.startswith('backbone.') for k in state_dict):
        return strip_prefix(state_dict, 'backbone.')
    return state_dict
