"""`--data-root DIR`: a detection config pointed at a data set in mmdet's COCO 2017 layout and fitted to its
classes, so that training on one's own data needs no config editing.

    DIR/annotations/instances_train2017.json    DIR/train2017/
    DIR/annotations/instances_val2017.json      DIR/val2017/      (also the test split, as in mmdet's bases)

The classes are the JSON's category names in the order the file lists them: mmdet's CocoDataset gives labels
0..N-1 in that order whatever the order of `metainfo.classes` (`coco.get_cat_ids(cat_names=...)` keeps the file's
order), and CocoMetric maps them back to category ids by the same rule, so this is the only order in which every
label carries its category's name. The splits must list the same names in the same order (their ids may differ:
each file's are used for it). By hand this means editing the data root, the annotation files, the image folders and
the metainfo of every dataloader, the evaluator's annotation file and every head's `num_classes` (Mask R-CNN's box
and mask heads, each stage of a cascade...); a missed one trains with COCO's 80 classes or drops annotations whose
category names do not match. The metainfo also records each class's category id (`category_ids`), which the
checkpoint keeps, so that predictions can be mapped back to the data set's ids.
"""

import os.path as osp
from dataclasses import dataclass, field
from typing import Any, Dict, List, Sequence, Tuple

from mmengine.config import Config, ConfigDict

from ..datasets.coco_checks import check_coco_json, id_key, read_coco_categories
from ..messages import shown
from .classes import leaf_datasets, set_num_classes

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
    """A data root in the COCO 2017 layout: its classes and the config splits it serves.

    `classes` are in mmdet's label order (the JSON's list order), `category_ids` their ids in the first file read,
    `id_order` the same names sorted by category id: the order maformer_mm wrote into checkpoints before it
    followed mmdet's (see `maformer_mm.checkpoint.classes.check_checkpoint_classes`).
    """

    root: str
    classes: Tuple[str, ...]
    splits: Tuple[str, ...]
    category_ids: Tuple[Any, ...] = ()
    id_order: Tuple[str, ...] = ()
    notes: List[str] = field(default_factory=list)
    num_classes_fields: List[str] = field(default_factory=list)  # filled by apply_coco_layout

    def ann_file(self, split: str) -> str:
        return osp.join(self.root, SPLITS[split][1])

    def summary(self) -> str:
        """One log line: where the classes came from, their labels and ids, and which settings they changed."""
        files = sorted({self.ann_file(s) for s in self.splits})
        labelled = [f'{k} {name} (id {i})' for k, (name, i) in enumerate(zip(self.classes, self.category_ids))]
        text = (
            f'--data-root {self.root}: {len(self.classes)} classes from {" and ".join(files)}, labelled in the '
            f"order the JSON lists them (mmdet's): {shown(labelled, 20)}"
        )
        if self.num_classes_fields:
            text += f'; set {", ".join(self.num_classes_fields)} to {len(self.classes)}'
        return '; '.join([text, *self.notes])


def _split_categories(ann_file: str) -> List[Tuple[Any, str]]:
    """(id, name) of the file's categories in its list order; refused when names or ids repeat."""
    categories = [(c['id'], str(c['name'])) for c in read_coco_categories(ann_file)]
    if not categories:
        raise ValueError(f'--data-root: {ann_file} lists no categories')
    names = [n for _, n in categories]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f'--data-root: {ann_file} has several categories named {duplicates}; mmdet maps class '
            'names to categories, so each name must be unique'
        )
    ids = [i for i, _ in categories]
    repeated = [i for i in dict.fromkeys(ids) if ids.count(i) > 1]
    if repeated:
        raise ValueError(
            f'--data-root: {ann_file} gives several categories the id {shown(repeated)}; ids must be unique'
        )
    return categories


def _compare_splits(root: str, first_file: str, first: List[Tuple[Any, str]], other_file: str, other: list) -> str:
    """'' when mmdet numbers the two files' classes alike (same names in the same list order), a note when their ids
    differ; ValueError otherwise."""
    first_names, other_names = [n for _, n in first], [n for _, n in other]
    if first_names == other_names:
        if [i for i, _ in first] == [i for i, _ in other]:
            return ''
        return (
            f'{other_file} gives the classes other category ids ({shown([i for i, _ in other], 10)}) than '
            f'{first_file} ({shown([i for i, _ in first], 10)}): each file is read with its own'
        )
    if sorted(first_names) == sorted(other_names):
        raise ValueError(
            f'--data-root {root}: {other_file} lists the categories of {first_file} in another order: '
            f'{shown(other, 8)} against {shown(first, 8)} (id, name). mmdet numbers the classes in the order '
            f"each file lists them, so the model's label k (the k-th category of {first_file}) would be scored as "
            f'the k-th of {other_file}, another class. List the categories of {other_file} in the order of '
            f'{first_file} (the ids may stay as they are)'
        )
    only_first = [c for c in first_names if c not in other_names]
    only_other = [c for c in other_names if c not in first_names]
    raise ValueError(
        f"--data-root {root}: the splits' categories differ: {first_file} has {len(first_names)} "
        f'({shown(first_names, 8)}), {other_file} has {len(other_names)} ({shown(other_names, 8)}); '
        f'only in the first: {only_first or "none"}; only in the second: {only_other or "none"}'
    )


def read_coco_layout(root: str, splits: Sequence[str] = ('train', 'val', 'test')) -> CocoLayout:
    """Checks the layout for `splits` ('test' reads the val files) and reads the classes.

    Raises FileNotFoundError naming the missing piece, ValueError naming the files when the annotation
    files are not COCO JSON, or their categories differ in names or in list order (what mmdet numbers by).
    """
    if not osp.isdir(root):
        raise FileNotFoundError(f'--data-root {root} is not a directory (expected the COCO 2017 layout: {_LAYOUT})')
    categories: Dict[str, List[Tuple[Any, str]]] = {}
    for split in splits:
        img_dir, ann_file = (osp.join(root, p) for p in SPLITS[split])
        if ann_file in categories:
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
        categories[ann_file] = _split_categories(ann_file)
    (first_file, first), *others = categories.items()
    notes = [_compare_splits(root, first_file, first, other_file, other) for other_file, other in others]
    return CocoLayout(
        root=root,
        classes=tuple(n for _, n in first),
        splits=tuple(splits),
        category_ids=tuple(i for i, _ in first),
        id_order=tuple(n for _, n in sorted(first, key=lambda c: id_key(c[0]))),
        notes=[n for n in notes if n],
    )


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

    metainfo = dict(classes=layout.classes, palette=_palette(len(layout.classes)), category_ids=layout.category_ids)
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
