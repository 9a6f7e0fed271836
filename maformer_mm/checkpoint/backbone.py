"""Loading MAFormer backbone weights from any checkpoint form, strictly reported.

`load_backbone_checkpoint` reads a checkpoint as data with the reader behind `--resume`
(`load_mmengine_checkpoint`: plain weights, training checkpoints of mmengine, mmdet, mmseg and mmpretrain,
.safetensors files; URLs and hub names through `remote.read_checkpoint`), loads its backbone tensors into a model
(resizing of relative-position tables and GLD layers happens in the modules' load_state_dict pre-hooks), logs what
was missing or unexpected, and raises when nothing matched or a shape does not fit. Never a silent partial load.
"""

import os.path as osp
import re
from typing import Mapping, Optional

import torch
from mmengine.logging import print_log
from torch import nn

from .convert import map_timm_key
from .remote import read_checkpoint
from .state_dict import backbone_state_dict

__all__ = ['load_backbone_state_dict', 'load_backbone_checkpoint']


def load_backbone_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = 'state dict'
) -> 'torch.nn.modules.module._IncompatibleKeys':
    """Loads backbone keys into `model`, non-strictly but loudly.

    Raises:
        KeyError: no key of the model is in the state dict.
        ValueError: some tensors have shapes the model cannot take (each is named).
    """
    model_keys = set(model.state_dict())
    if not model_keys & set(state_dict):
        sample = ', '.join(list(state_dict)[:5]) or 'none'
        if any(map_timm_key(k) for k in state_dict):  # timm's names for these layers: the converter renames them
            advice = (
                f"its keys are in timm's naming; write them in this project's once with `python "
                f'tools/convert_checkpoint.py {source} OUT.safetensors`'
            )
        else:
            advice = 'is it a checkpoint of this backbone, or does it need `prefix=`?'
        raise KeyError(f'{source}: no key matches {type(model).__name__} (first checkpoint keys: {sample}); {advice}')
    try:
        result = model.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as error:
        mismatches = re.findall(r'size mismatch for .*', str(error))
        details = '\n  '.join(mismatches) if mismatches else str(error)
        raise ValueError(
            f'{source} does not fit {type(model).__name__}{getattr(model, "arch_settings", "")}:\n  {details}'
        ) from error
    loaded = len(model_keys) - len(result.missing_keys)
    print_log(f'Loaded {loaded}/{len(model_keys)} backbone tensors from {source}', logger='current')
    if result.missing_keys:
        print_log(f'Missing in {source} (left at init): {result.missing_keys}', logger='current', level=30)
    if result.unexpected_keys:
        print_log(f'Unexpected in {source} (ignored): {result.unexpected_keys}', logger='current', level=30)
    return result


def load_backbone_checkpoint(
    model: nn.Module,
    filename: str,
    prefix: Optional[str] = None,
    map_location: str = 'cpu',
    sha256: Optional[str] = None,
) -> 'torch.nn.modules.module._IncompatibleKeys':
    """Reads `filename` (a path, a URL or a hub name such as `open-mmlab://...`; any form `backbone_state_dict`
    accepts, training checkpoints included, as data; with the full SHA-256 `sha256` when given) and loads its
    backbone tensors into `model`."""
    filename = str(filename)
    if '://' not in filename and not osp.isfile(filename):
        raise FileNotFoundError(f'{type(model).__name__} pretrained checkpoint not found: {filename}')
    checkpoint = read_checkpoint(filename, map_location=map_location, sha256=sha256)
    return load_backbone_state_dict(model, backbone_state_dict(checkpoint, prefix), source=filename)
