"""Checks a config's data against its model before a run starts, with errors that name the culprit.

Without it a missing annotation file, a file that is not COCO JSON, or a `num_classes` that disagrees
with the dataset's classes surface deep inside the dataset or the loss (pycocotools' "annotation file
format <class 'list'> not supported" names no file; a class mismatch trains silently or fails in the
loss). Category names that the config's classes do not match (mmdet maps classes to categories by name, so
annotations are dropped and labels shift silently), classes written in another order than the JSON lists them
(mmdet numbers them in the JSON's order: every label would carry another class's name), splits that number their
classes differently, and Mixup/CutMix one-hot targets sized by `data_preprocessor.num_classes` instead of the
head's (a shape error deep inside mmpretrain's loss), are caught here too. So is what annotation tools' exports get
wrong for mmdet and pycocotools (`maformer_mm/datasets/coco_checks.py`: missing masks for a mask model, degenerate
polygons, repeated ids, `file_name`s that repeat the image folder...), and label values beyond the classes in
segmentation data (`maformer_mm/datasets/seg_checks.py`); what mmdet's filters will leave out of the training set
is logged. `tools/train.py` and `tools/test.py` call `check_data` first. (Where configs and checkpoints keep their
classes is `maformer_mm/config/classes.py`; of checkpoints, `maformer_mm/checkpoint/classes.py`.)
"""

import logging
import os.path as osp
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log

from ..datasets.coco_checks import (
    MAX_CHECKED_BYTES,
    check_class_order,
    check_coco_file,
    check_coco_json,
    coco_dataset_paths,
    read_coco_categories,
)
from ..datasets.seg_checks import check_label_maps
from ..messages import shown, warn
from .classes import dataset_class, dataset_classes, dataset_setting, leaf_datasets, num_classes_fields

__all__ = ['check_data', 'check_coco_json', 'read_coco_categories']


def check_data(
    cfg: Config, splits: Sequence[str] = ('train', 'val', 'test'), log: bool = True
) -> List[Tuple[str, int]]:
    """Checks the annotation files, label maps and class counts of the config's dataloaders for `splits`; returns
    notes for the log as (text, logging level): what mmdet will leave out of the training set (a warning when it
    leaves something out)... With `log` they are logged here; the tools log them into the run's log instead, once
    its Runner exists."""
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get('default_scope', 'mmdet'))
    if 'train' in splits:
        _check_batch_augments(cfg)
    declared: Dict[str, Tuple[str, ...]] = {}
    notes: List[Tuple[str, int]] = []
    head_fields = num_classes_fields(cfg.get('model') or ConfigDict())
    for split in splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        for dataset in leaf_datasets(loader.dataset):
            ann_file = dataset.get('ann_file')
            ann_path, image_dir = coco_dataset_paths(dataset)
            is_json = bool(ann_file) and str(ann_file).endswith('.json')
            if is_json:
                check_coco_json(ann_path, f'{split} annotation file')
            classes = dataset_classes(dataset)
            dataset_cls = dataset_class(dataset)
            if is_json and _is_subclass(dataset_cls, 'mmdet.', 'CocoDataset'):
                if classes:
                    _check_category_names(ann_path, classes, split, order=_coco_reads(dataset_cls, 'load_data_list'))
                if _coco_reads(dataset_cls, 'parse_data_info', 'filter_data'):
                    notes.extend(_check_coco_annotations(cfg, dataset, split, ann_path, image_dir, classes))
            if classes and _is_subclass(dataset_cls, 'mmseg.', 'BaseSegDataset'):
                notes.extend(_check_label_maps(dataset, dataset_cls, classes, split))
            if not classes:
                continue
            declared.setdefault(split, tuple(map(str, classes)))
            for field, value in head_fields:
                if value != len(classes):
                    raise ValueError(
                        f'{field} is {value} but the {split} dataset ({dataset.type}) has '
                        f'{len(classes)} classes ({shown(classes)}); set them equal'
                    )
    _check_same_classes(declared)
    for note, level in notes if log else ():
        print_log(note, logger='current', level=level)
    return notes


def _is_subclass(dataset_cls: Optional[type], package: str, name: str) -> bool:
    """Whether the class a dataset config builds is a subclass of `package`'s class `name` (read from the class's
    MRO, so that checking an mmdet config imports nothing of mmseg's)."""
    return any(k.__name__ == name and k.__module__.startswith(package) for k in getattr(dataset_cls, '__mro__', ()))


def _coco_reads(dataset_cls: Optional[type], *methods: str) -> bool:
    """Whether the dataset class reads its file with CocoDataset's own `methods` (what coco_checks replicates):
    CocoPanopticDataset parses other annotations, LVIS numbers its classes otherwise, Cityscapes filters more."""
    return all(getattr(dataset_cls, m).__qualname__ == f'CocoDataset.{m}' for m in methods)


def _check_category_names(ann_file: str, classes: Sequence[str], split: str, order: bool = True) -> None:
    """mmdet's CocoDataset looks the config's classes up by category name and numbers them in the file's order: a
    class the JSON lacks shifts the labels of the classes after it, classes in another order than the file's are
    named wrongly, and a category that is no class has its annotations dropped."""
    what = f'{split} annotation file'
    categories = read_coco_categories(ann_file, what)
    names = [str(c['name']) for c in categories]
    missing = [c for c in classes if c not in names]
    if missing:
        raise ValueError(
            f'{what} {ann_file} has no category named {shown(missing)} '
            f"(the config's metainfo.classes, {len(classes)} in all); its categories are "
            f'{shown(names)}. Set metainfo.classes (and every num_classes) to its category names, '
            'or train with --data-root, which does both'
        )
    if order:
        check_class_order(categories, classes, ann_file, what)
    ignored = [n for n in names if n not in classes]
    if ignored:
        warn(
            f'{what} {ann_file}: the annotations of categories {shown(ignored)} are '
            "ignored (they are not among the config's metainfo.classes)"
        )


def _steps(pipeline: Any) -> list:
    return [step for step in pipeline or [] if isinstance(step, dict)]


def _masks_needed_by(dataset: ConfigDict, evaluator: Any) -> Optional[str]:
    """What in the config reads masks: LoadAnnotations(with_mask=True) (a bare `KeyError: 'mask'` on an annotation
    without one) or a CocoMetric scoring 'segm' (pycocotools fails on it)."""
    for step in _steps(dataset.get('pipeline')):
        if str(step.get('type', '')).endswith('LoadAnnotations') and step.get('with_mask'):
            return 'LoadAnnotations(with_mask=True) in its pipeline'
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    for metric in metrics:
        kinds = metric.get('metric', 'bbox') if isinstance(metric, dict) else ()
        if 'CocoMetric' in str((metric or {}).get('type', '')) and 'segm' in (
            [kinds] if isinstance(kinds, str) else kinds
        ):
            return "a CocoMetric scoring 'segm'"
    return None


def _box_only_remedy(cfg: Config) -> str:
    """The box-only config of the same backbone size as a mask config of ours, to name in the refusal."""
    size = re.search(r'maformer_([tsbl])\b', osp.basename(cfg.filename or ''))
    suggestion = f'configs/faster_rcnn_maformer_{size.group(1) if size else "t"}.py'
    return (
        f'For box-only data, train a box-only config instead, such as {suggestion} (Faster R-CNN with the same '
        'backbone), or add masks to these annotations'
    )


def _check_coco_annotations(
    cfg: Config, dataset: ConfigDict, split: str, ann_path: str, image_dir: Optional[str], classes: Any
) -> List[Tuple[str, int]]:
    """`check_coco_file` with what the config asks of the data; a note (and its log level) of what mmdet leaves out
    of the training set."""
    training = not dataset.get('test_mode', False)
    drops = check_coco_file(
        ann_path,
        split,
        image_dir,
        classes,
        masks_needed_by=_masks_needed_by(dataset, cfg.get(f'{split}_evaluator')),
        mask_remedy=_box_only_remedy(cfg),
        filter_cfg=(dataset.get('filter_cfg') or {}) if training else None,
    )
    if drops is None:
        size = f'larger than {MAX_CHECKED_BYTES // 2**20} MiB'
        note = f'{split} annotation file {ann_path} is {size}: its annotations were not checked before the run'
        return [(note, logging.INFO)]
    if training:
        return [(drops.summary(ann_path, split), logging.WARNING if drops.dropped else logging.INFO)]
    return []


def _check_label_maps(
    dataset: ConfigDict, dataset_cls: Optional[type], classes: Sequence[str], split: str
) -> List[Tuple[str, int]]:
    """mmseg data: label values beyond the classes, which the loss would fail on. Skipped where a label map of
    the dataset class renumbers them (classes a subset of the class's own)."""
    own = (getattr(dataset_cls, 'METAINFO', None) or {}).get('classes')
    if own and tuple(own) != tuple(classes):
        return []
    root = dataset.get('data_root') or ''
    folder = (dataset.get('data_prefix') or {}).get('seg_map_path')
    if folder is None or dataset.get('backend_args') or '://' in root:
        return []
    folder = osp.join(root, folder)
    if not osp.isdir(folder):
        return []
    note = check_label_maps(
        folder,
        dataset_setting(dataset, 'seg_map_suffix', '.png'),
        len(classes),
        bool(dataset_setting(dataset, 'reduce_zero_label', False)),
        dataset_setting(dataset, 'ignore_index', 255),
        split,
    )
    return [(note, logging.INFO)] if note else []


def _check_same_classes(declared: Dict[str, Tuple[str, ...]]) -> None:
    """The model's label k is the train dataset's class k; a val or test dataset that numbers its classes otherwise
    scores each prediction against another class."""
    if 'train' not in declared:
        return
    for split, classes in declared.items():
        if classes != declared['train']:
            raise ValueError(
                f"the {split} dataset's classes ({len(classes)}: {shown(classes, 10)}) differ from the train "
                f"dataset's ({len(declared['train'])}: {shown(declared['train'], 10)}): label k would mean one "
                'class in training and another in evaluation; give every split the same metainfo.classes'
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
