"""Pretrained weights a model config names (`init_cfg=dict(type='Pretrained', checkpoint=...)`): whether the files
are there before a training run builds anything, and training from scratch without them (`tools/train.py
--no-pretrained`). Without the check a fresh clone stops at the start of training, after the model is built, on
`MAFormer pretrained checkpoint not found`, with no word on what to do."""

import os.path as osp
from typing import Any, Iterator, List, Tuple

__all__ = ['pretrained_inits', 'drop_pretrained', 'check_pretrained_files']


def _is_pretrained(init: Any) -> bool:
    return isinstance(init, dict) and init.get('type') == 'Pretrained'


def pretrained_inits(model: Any, path: str = 'model') -> Iterator[Tuple[str, str, Any]]:
    """(config path of the init_cfg as --cfg-options writes it, type of the module it initialises, checkpoint) of
    every Pretrained init."""
    if isinstance(model, dict):
        init = model.get('init_cfg')
        inits = init if isinstance(init, (list, tuple)) else [init]
        for index, item in enumerate(inits):
            if _is_pretrained(item):
                where = f'{path}.init_cfg' + (f'.{index}' if isinstance(init, (list, tuple)) else '')
                yield where, str(model.get('type', 'the model')), item.get('checkpoint')
        for key, value in model.items():
            if key != 'init_cfg':
                yield from pretrained_inits(value, f'{path}.{key}')
    elif isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            yield from pretrained_inits(item, f'{path}.{index}')


def drop_pretrained(model: Any, path: str = 'model') -> List[str]:
    """Removes every Pretrained init from the model config (other inits of a list stay); returns their paths."""
    dropped = []
    if isinstance(model, dict):
        init = model.get('init_cfg')
        if _is_pretrained(init):
            model['init_cfg'] = None
            dropped.append(f'{path}.init_cfg')
        elif isinstance(init, (list, tuple)) and any(_is_pretrained(i) for i in init):
            model['init_cfg'] = [i for i in init if not _is_pretrained(i)] or None
            dropped.append(f'{path}.init_cfg')
        for key, value in model.items():
            if key != 'init_cfg':
                dropped.extend(drop_pretrained(value, f'{path}.{key}'))
    elif isinstance(model, (list, tuple)):
        for index, item in enumerate(model):
            dropped.extend(drop_pretrained(item, f'{path}.{index}'))
    return dropped


def check_pretrained_files(model: Any, config: str) -> None:
    """Raises FileNotFoundError for a local pretrained checkpoint the model config names but that is not there,
    naming the setting and the ways on (URLs and hub names are fetched by the loaders)."""
    for where, owner, checkpoint in pretrained_inits(model):
        if isinstance(checkpoint, str) and '://' not in checkpoint and not osp.isfile(checkpoint):
            raise FileNotFoundError(
                f'{owner} pretrained checkpoint not found: {checkpoint} ({where} of {config}). Train from scratch '
                f'with --no-pretrained, point at your file with --cfg-options {where}.checkpoint=PATH, or make '
                'ImageNet weights first (docs/classification.md)'
            )
