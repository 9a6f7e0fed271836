"""Checks a config's data against its model before a run starts, with errors that name the culprit.

Without it a missing annotation file, a file that is not COCO JSON, or a `num_classes` that disagrees
with the dataset's classes surface deep inside the dataset or the loss (pycocotools' "annotation file
format <class 'list'> not supported" names no file; a class mismatch trains silently or fails in the
loss). `tools/train.py` and `tools/test.py` call `check_data` first.
"""
import json
import os
import os.path as osp
from typing import Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.registry import DATASETS

__all__ = ['check_data', 'check_coco_json']

_FULL_PARSE_LIMIT = 64 * 2 ** 20  # larger annotation files are only checked for a JSON object header
_COCO_KEYS = ('images', 'annotations', 'categories')


def check_coco_json(path: str, what: str = 'annotation file') -> None:
    """Raises FileNotFoundError / ValueError naming `path` unless it is a COCO JSON object."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    if os.path.getsize(path) > _FULL_PARSE_LIMIT:
        with open(path, 'rb') as f:
            head = f.read(1024).lstrip()
        if not head.startswith(b'{'):
            raise ValueError(f'{what} {path} is not COCO JSON (it does not start with a JSON object)')
        return
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f'{what} {path} is not valid JSON: {error}') from error
    missing = [k for k in _COCO_KEYS if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f'{what} {path} is not COCO JSON: it lacks the lists {missing}')


def _datasets(cfg: ConfigDict) -> Iterator[ConfigDict]:
    """The leaf dataset configs inside wrappers (RepeatDataset, ConcatDataset, ClassBalancedDataset...)."""
    if 'datasets' in cfg:
        for sub in cfg.datasets:
            yield from _datasets(sub)
    elif 'dataset' in cfg:
        yield from _datasets(cfg.dataset)
    else:
        yield cfg


def _classes(dataset: ConfigDict) -> Optional[Sequence[str]]:
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return metainfo['classes']
    try:
        dataset_cls = DATASETS.get(dataset.type)
    except (KeyError, AttributeError):
        return None
    return getattr(dataset_cls, 'METAINFO', {}).get('classes') if dataset_cls else None


def _num_classes_fields(model: ConfigDict) -> List[Tuple[str, int]]:
    """(config path, value) of every head num_classes that must equal the dataset's class count."""
    fields = []
    for path in ('roi_head.bbox_head', 'roi_head.mask_head', 'bbox_head', 'decode_head', 'auxiliary_head', 'head'):
        node = model
        for key in path.split('.'):
            node = node.get(key) if isinstance(node, dict) else None
        heads = node if isinstance(node, list) else [node]
        for head in heads:
            if isinstance(head, dict) and isinstance(head.get('num_classes'), int):
                fields.append((f'model.{path}.num_classes', head['num_classes']))
    return fields


def check_data(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Checks the annotation files and class counts of the config's dataloaders for `splits`."""
    from mmengine.registry import init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset in _datasets(loader.dataset):
            root = dataset.get('data_root') or ''
            ann_file = dataset.get('ann_file')
            if ann_file and str(ann_file).endswith('.json'):
                check_coco_json(osp.join(root, ann_file), f'{split} annotation file')
            classes = _classes(dataset)
            if not classes:
                continue
            for field, value in _num_classes_fields(cfg.model):
                if value != len(classes):
                    shown = ', '.join(map(str, classes[:6])) + (', ...' if len(classes) > 6 else '')
                    raise ValueError(f'{field} is {value} but the {split} dataset ({dataset.type}) has '
                                     f'{len(classes)} classes ({shown}); set them equal')
