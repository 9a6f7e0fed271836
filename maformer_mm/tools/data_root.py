"""`--data-root DIR`: a detection config pointed at a data set in mmdet's COCO 2017 layout and fitted to its
classes, so that training on one's own data needs no config editing.

    DIR/annotations/instances_train2017.json    DIR/train2017/
    DIR/annotations/instances_val2017.json      DIR/val2017/      (also the test split, as in mmdet's bases)

The classes are the JSON's category names in category-id order; mmdet's CocoDataset gives them labels
0..N-1 in the order `metainfo.classes` lists them. By hand this means editing the data root, the annotation
files, the image folders and the metainfo of every dataloader, the evaluator's annotation file and every
head's `num_classes` (Mask R-CNN's box and mask heads, each stage of a cascade...); a missed one trains
with COCO's 80 classes or drops annotations whose category names do not match.
"""

import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from ..utils.classes import leaf_datasets, set_num_classes, shown
from .preflight import check_coco_json, read_coco_categories

__all__ = ['CocoLayout', 'read_coco_layout', 'apply_coco_layout']

# Config split -> (image folder, annotation file) under the data root.
SPLITS: Dict[str, Tuple[str, str]] = {
    'train': ('train2017', 'annotations/instances_train2017.json'),
    'val': ('val2017', 'annotations/instances_val2017.json'),
    'test': ('val2017', 'annotations/instances_val2017.json'),
}
_LAYOUT = 'annotations/instances_train2017.json, annotations/instances_val2017.json, train2017/, val2017/'


@dataclass
class CocoLayout:
    """A data root in the COCO 2017 layout: its classes and the config splits it serves."""

    root: str
    classes: Tuple[str, ...]
    splits: Tuple[str, ...]
    num_classes_fields: List[str] = field(default_factory=list)  # filled by apply_coco_layout

    def ann_file(self, split: str) -> str:
        return osp.join(self.root, SPLITS[split][1])

    def summary(self) -> str:
        """One log line: where the classes came from, what they are and which settings they changed."""
        files = sorted({self.ann_file(s) for s in self.splits})
        text = (
            f'--data-root {self.root}: {len(self.classes)} classes from {" and ".join(files)} '
            f'(category-id order): {", ".join(self.classes)}'
        )
        if self.num_classes_fields:
            text += f'; set {", ".join(self.num_classes_fields)} to {len(self.classes)}'
        return text


def _split_classes(ann_file: str) -> Tuple[str, ...]:
    categories = read_coco_categories(ann_file)
    if not categories:
        raise ValueError(f'--data-root: {ann_file} lists no categories')
    names = tuple(str(c['name']) for c in sorted(categories, key=lambda c: c['id']))
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f'--data-root: {ann_file} has several categories named {duplicates}; mmdet maps class '
            'names to categories, so each name must be unique'
        )
    return names


def read_coco_layout(root: str, splits: Sequence[str] = ('train', 'val', 'test')) -> CocoLayout:
    """Checks the layout for `splits` ('test' reads the val files) and reads the classes.

    Raises FileNotFoundError naming the missing piece, ValueError naming the files when the annotation
    files are not COCO JSON or their categories differ.
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'--data-root {root} is not a directory (expected the COCO 2017 layout: {_LAYOUT})')
    classes: Dict[str, Tuple[str, ...]] = {}
    for split in splits:
        img_dir, ann_file = (osp.join(root, p) for p in SPLITS[split])
        if ann_file in classes:
            continue
        if not osp.isfile(ann_file):
            raise FileNotFoundError(
                f'--data-root {root}: annotation file not found: {ann_file} (expected the COCO 2017 layout: {_LAYOUT})'
            )
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'--data-root {root}: image folder not found: {img_dir} (expected the COCO 2017 layout: {_LAYOUT})'
            )
        check_coco_json(ann_file, f'{split} annotation file')
        classes[ann_file] = _split_classes(ann_file)
    (first_file, first), *others = classes.items()
    for other_file, other in others:
        if other != first:
            only_first = [c for c in first if c not in other]
            only_other = [c for c in other if c not in first]
            detail = (
                f'only in the first: {only_first or "none"}; only in the second: {only_other or "none"}'
                if only_first or only_other
                else 'same names in another id order'
            )
            raise ValueError(
                f"--data-root {root}: the splits' categories differ: {first_file} has {len(first)} "
                f'({shown(first, 8)}), {other_file} has {len(other)} ({shown(other, 8)}); {detail}'
            )
    return CocoLayout(root=root, classes=first, splits=tuple(splits))


def _palette(num_classes: int) -> List[Tuple[int, int, int]]:
    """COCO's colours for the first 80 classes, fixed random ones beyond."""
    import numpy as np
    from mmdet.datasets import CocoDataset

    palette = [tuple(c) for c in CocoDataset.METAINFO['palette']][:num_classes]
    rng = np.random.default_rng(0)
    palette += [tuple(int(v) for v in rng.integers(0, 256, 3)) for _ in range(num_classes - len(palette))]
    return palette


def _coco_metrics(evaluator: object) -> List[ConfigDict]:
    metrics = evaluator if isinstance(evaluator, (list, tuple)) else [evaluator]
    return [m for m in metrics if isinstance(m, dict) and 'CocoMetric' in str(m.get('type', ''))]


def apply_coco_layout(cfg: Config, layout: CocoLayout) -> None:
    """Points the config's dataloaders and COCO evaluators of `layout.splits` at the data root, sets the
    classes (and a palette) as every dataset's metainfo, per-class AP in the evaluators, and every head's
    `num_classes`. Raises ValueError when a dataset is not COCO-format or no head has `num_classes`."""
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS

    metainfo = dict(classes=layout.classes, palette=_palette(len(layout.classes)))
    for split in layout.splits:
        loader = cfg.get(f'{split}_dataloader')
        if not loader:
            continue
        img_dir, ann_file = SPLITS[split]
        for dataset in leaf_datasets(loader.dataset):
            dataset_cls = DATASETS.get(dataset.get('type', ''))
            if dataset_cls is None or not issubclass(dataset_cls, CocoDataset):
                raise ValueError(
                    f'--data-root reads COCO-format data, but {split}_dataloader of {cfg.filename} '
                    f'uses {dataset.get("type")!r} (not CocoDataset or a subclass)'
                )
            dataset.data_root = layout.root
            dataset.ann_file = ann_file
            dataset.data_prefix = dict(dataset.get('data_prefix') or {}, img=img_dir + '/')
            dataset.metainfo = dict(metainfo)
        for metric in _coco_metrics(cfg.get(f'{split}_evaluator')):
            metric.ann_file = layout.ann_file(split)
            metric.classwise = True  # per-class AP, named by class, in the metrics
    layout.num_classes_fields = set_num_classes(cfg.model, len(layout.classes))
    if not layout.num_classes_fields:
        raise ValueError(f'--data-root: the model of {cfg.filename} has no num_classes to set')
