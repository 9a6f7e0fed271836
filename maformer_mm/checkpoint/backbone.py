"""Loading MAFormer backbone weights from any checkpoint form, strictly reported.

`load_backbone_checkpoint` reads a file as plain data (`safe_load.load_weights`: tensors and plain
containers, or a .safetensors file), loads it into a model (resizing of relative-position tables and GLD
layers happens in the modules' load_state_dict pre-hooks), logs what was missing or unexpected, and raises
when nothing matched or a shape does not fit. Never a silent partial load.
"""
import os.path as osp
import re
from typing import Mapping, Optional
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log
from torch import nn

from .safe_load import load_weights
from .state_dict import backbone_state_dict

__all__ = ['load_backbone_state_dict', 'load_backbone_checkpoint']

def load_backbone_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                             source: str = 'state dict') -> 'torch.nn.modules.module._IncompatibleKeys':
    """Loads backbone keys into `model`, non-strictly but loudly.

    Raises:
        KeyError: no key of the model is in the state dict.
        ValueError: some tensors have shapes the model cannot take (each is named).
    """
    model_keys = set(model.state_dict())
    if not model_keys & set(state_dict):
        sample = ', '.join(list(state_dict)[:5]) or 'none'
        raise KeyError(f'{source}: no key matches {type(model).__name__} (first checkpoint keys: {sample}); '
                       'is it a checkpoint of this backbone, or does it need `prefix=`?')
    try:
        result = model.load_state_dict(dict(state_dict), strict=False)
    except RuntimeError as error:
        mismatches = re.findall(r'size mismatch for .*', str(error))
        details = '\n  '.join(mismatches) if mismatches else str(error)
        raise ValueError(f'{source} does not fit {type(model).__name__}'
                         f'{getattr(model, "arch_settings", "")}:\n  {details}') from error
    loaded = len(model_keys) - len(result.missing_keys)
    print_log(f'Loaded {loaded}/{len(model_keys)} backbone tensors from {source}', logger='current')
    if result.missing_keys:
        print_log(f'Missing in {source} (left at init): {result.missing_keys}', logger='current',
                  level=30)
    if result.unexpected_keys:
        print_log(f'Unexpected in {source} (ignored): {result.unexpected_keys}', logger='current',
                  level=30)
    return result


def _downloaded(url: str) -> str:
    """The local copy of an http(s) checkpoint in torch hub's cache (downloaded once), read like any file."""
    name = osp.basename(urlparse(url).path)
    path = osp.join(torch.hub.get_dir(), 'checkpoints', name)
    if not osp.isfile(path):
        print_log(f'Downloading {url} to {path}', logger='current')
        torch.hub.download_url_to_file(url, path)
    return path


def load_backbone_checkpoint(model: nn.Module, filename: str, prefix: Optional[str] = None,
                             map_location: str = 'cpu') -> 'torch.nn.modules.module._IncompatibleKeys':
    """Reads `filename` (a path or an http(s) URL; any form `backbone_state_dict` accepts, as plain data) and
    loads it into `model`."""
    filename = str(filename)
    path = filename
    if '://' in filename:
        if urlparse(filename).scheme not in ('http', 'https'):
            raise ValueError(f'{type(model).__name__} pretrained checkpoint {filename}: only local paths and '
                             'http(s) URLs are read; download the file and give its path')
        path = _downloaded(filename)
    elif not osp.isfile(filename):
        raise FileNotFoundError(f'{type(model).__name__} pretrained checkpoint not found: {filename}')
    checkpoint = load_weights(path, map_location=map_location)
    return load_backbone_state_dict(model, backbone_state_dict(checkpoint, prefix), source=filename)
