"""Checks a config's data against its model before a run starts, with errors that name the culprit.

Without it a missing annotation file, a file that is not COCO JSON, or a `num_classes` that disagrees
with the dataset's classes surface deep inside the dataset or the loss (pycocotools' "annotation file
format <class 'list'> not supported" names no file; a class mismatch trains silently or fails in the
loss). Category names that the config's classes do not match (mmdet maps classes to categories by name, so
annotations are dropped and labels shift silently), and Mixup/CutMix one-hot targets sized by
`data_preprocessor.num_classes` instead of the head's (a shape error deep inside mmpretrain's loss), are
caught here too. `tools/train.py` and `tools/test.py` call `check_data` first. (Where configs and checkpoints
keep their classes is `maformer_mm/utils/classes.py`.)
"""

import json
import logging
import mmap
import os
import os.path as osp
from typing import List, Sequence

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from ..utils.classes import dataset_class, dataset_classes, leaf_datasets, num_classes_fields, shown

__all__ = ['check_data', 'check_coco_json', 'read_coco_categories']

_FULL_PARSE_LIMIT = 64 * 2**20  # larger annotation files are only checked for a JSON object header
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


def read_coco_categories(path: str, what: str = 'annotation file') -> List[dict]:
    """The `categories` list of a COCO JSON file. Files too large to parse whole here (COCO's train2017
    file is 450 MB) are searched for the key instead, and only the list after it is decoded."""
    check_coco_json(path, what)
    if os.path.getsize(path) <= _FULL_PARSE_LIMIT:
        with open(path) as f:
            categories = json.load(f)['categories']
    else:
        with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            key = data.rfind(b'"categories"')
            start = data.find(b'[', key)
            if key < 0 or start < 0:
                raise ValueError(f'{what} {path} is not COCO JSON: it has no "categories" list')
            categories, span = None, 2**16
            while categories is None:
                try:
                    categories = json.JSONDecoder().raw_decode(data[start : start + span].decode('utf-8', 'replace'))[0]
                except json.JSONDecodeError as error:
                    if start + span >= len(data):
                        raise ValueError(f'{what} {path}: its "categories" list is not valid JSON: {error}') from None
                    span *= 16
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and 'id' in c and 'name' in c for c in categories
    ):
        raise ValueError(f'{what} {path}: "categories" must be a list of objects with "id" and "name"')
    return categories


def check_data(cfg: Config, splits: Sequence[str] = ('train', 'val', 'test')) -> None:
    """Checks the annotation files and class counts of the config's dataloaders for `splits`."""
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if 'train' in splits:
        _check_batch_augments(cfg)
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset in leaf_datasets(loader.dataset):
            root = dataset.get('data_root') or ''
            ann_file = dataset.get('ann_file')
            if ann_file and str(ann_file).endswith('.json'):
                check_coco_json(osp.join(root, ann_file), f'{split} annotation file')
            classes = dataset_classes(dataset)
            if not classes:
                continue
            if ann_file and str(ann_file).endswith('.json') and _is_coco_dataset(dataset):
                _check_category_names(osp.join(root, ann_file), classes, split)
            for field, value in num_classes_fields(cfg.model):
                if value != len(classes):
                    raise ValueError(
                        f'{field} is {value} but the {split} dataset ({dataset.type}) has '
                        f'{len(classes)} classes ({shown(classes)}); set them equal'
                    )


def _is_coco_dataset(dataset: ConfigDict) -> bool:
    dataset_cls = dataset_class(dataset)
    if dataset_cls is None:
        return False
    from mmdet.datasets import CocoDataset

    return issubclass(dataset_cls, CocoDataset)


def _check_category_names(ann_file: str, classes: Sequence[str], split: str) -> None:
    """mmdet's CocoDataset looks the config's classes up by category name: a class the JSON lacks shifts the
    labels of the classes after it, and a category that is no class has its annotations dropped."""
    names = [str(c['name']) for c in read_coco_categories(ann_file, f'{split} annotation file')]
    missing = [c for c in classes if c not in names]
    if missing:
        raise ValueError(
            f'{split} annotation file {ann_file} has no category named {shown(missing)} '
            f"(the config's metainfo.classes, {len(classes)} in all); its categories are "
            f'{shown(names)}. Set metainfo.classes (and every num_classes) to its category names, '
            'or train with --data-root, which does both'
        )
    ignored = [n for n in names if n not in classes]
    if ignored:
        print_log(
            f'{split} annotation file {ann_file}: the annotations of categories {shown(ignored)} are '
            "ignored (they are not among the config's metainfo.classes)",
            logger='current',
            level=logging.WARNING,
        )


def _check_batch_augments(cfg: Config) -> None:
    """Mixup/CutMix build one-hot targets of `data_preprocessor.num_classes` classes; the head's scores have
    `head.num_classes`. mmpretrain only finds out inside the loss, with a bare shape error."""
    model = cfg.get('model') or {}
    if not (model.get('train_cfg') or {}).get('augments'):
        return
    if 'num_classes' in (model.get('data_preprocessor') or {}):
        field, value = 'model.data_preprocessor.num_classes', model.data_preprocessor.num_classes
    else:  # the Runner hands the top-level data_preprocessor to a model that has none
        field, value = 'data_preprocessor.num_classes', (cfg.get('data_preprocessor') or {}).get('num_classes')
    head = model.get('head') or {}
    if isinstance(head.get('num_classes'), int) and value != head.num_classes:
        raise ValueError(
            f'{field} is {value} but model.head.num_classes is {head.num_classes}: Mixup/CutMix '
            f'(model.train_cfg.augments) would make {value}-class one-hot targets for '
            f'{head.num_classes}-class scores; set {field} = {head.num_classes} as well'
        )
