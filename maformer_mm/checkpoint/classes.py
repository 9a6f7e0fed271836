"""The classes a checkpoint was trained for, and whether it fits a model built for the classes of some data.

`tools/test.py`, `tools/infer.py` and the checked inferencers refuse a checkpoint trained for other classes than the
data's (naming both lists) and one whose tensors do not fit the model (a head for another class count, which
mmengine would skip with a warning), and accept, with a warning, one whose names an older maformer_mm recorded in
category-id order.
"""

from typing import Any, Optional, Sequence, Tuple

from torch import nn

from ..config.classes import dataset_classes, leaf_datasets
from ..messages import shown
from .state_dict import loadable_state_dict

__all__ = [
    'checkpoint_classes',
    'checkpoint_category_ids',
    'in_id_order',
    'rename_id_ordered_classes',
    'check_checkpoint_classes',
    'check_checkpoint_fits',
]


def checkpoint_classes(checkpoint: Any) -> Optional[Tuple[str, ...]]:
    """The classes a checkpoint was trained for: `meta.dataset_meta.classes` (mmengine), or `meta.CLASSES`
    (mmcv 1.x); None when it records none."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    dataset_meta = meta.get('dataset_meta') if isinstance(meta.get('dataset_meta'), dict) else {}
    classes = dataset_meta.get('classes') or meta.get('CLASSES')
    return tuple(map(str, classes)) if isinstance(classes, (list, tuple)) and classes else None


def checkpoint_category_ids(checkpoint: Any) -> Optional[Tuple[Any, ...]]:
    """The data set's category id of each class a checkpoint records (`meta.dataset_meta.category_ids`, which
    `--data-root` puts in the dataset metainfo the Runner saves); None when it records none."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    dataset_meta = meta.get('dataset_meta') if isinstance(meta, dict) else None
    ids = dataset_meta.get('category_ids') if isinstance(dataset_meta, dict) else None
    return tuple(ids) if isinstance(ids, (list, tuple)) and ids else None


def in_id_order(checkpoint: Any, classes: Optional[Sequence[str]], id_order: Optional[Sequence[str]]) -> bool:
    """Whether the checkpoint names its classes in category-id order where mmdet trained them in the JSON's list
    order: maformer_mm's `--data-root` wrote the names sorted by category id before it followed mmdet, whose
    CocoDataset labels categories in the order the file lists them. Such a checkpoint records `id_order` (the
    data's names sorted by id), no `category_ids`, and `classes` (the list order) differ from it."""
    trained = checkpoint_classes(checkpoint)
    return (
        trained is not None
        and classes is not None
        and id_order is not None
        and checkpoint_category_ids(checkpoint) is None
        and trained == tuple(map(str, id_order))
        and trained != tuple(map(str, classes))
        and sorted(trained) == sorted(map(str, classes))
    )


def _named_in_list_order(path: str, trained: Sequence[str], classes: Sequence[str], source: str) -> str:
    return (
        f'checkpoint {path} names its {len(trained)} classes in category-id order ({shown(trained)}), as '
        "maformer_mm's --data-root recorded them before it followed mmdet's order; mmdet trained its labels in "
        f'the order the JSON lists the categories, so they are named here as {source} lists them: '
        f'{shown(classes)} (label k is the k-th). This holds for a checkpoint trained on data that lists its '
        'categories in this order'
    )


def rename_id_ordered_classes(checkpoint: Any, cfg: Any, path: str) -> Optional[str]:
    """For a model built from `cfg` (an inferencer's): when the checkpoint names its classes in category-id order
    (`in_id_order`) against the classes and the local COCO JSON of the config's test (or val) dataset, renames them
    in the checkpoint's `meta.dataset_meta` to the config's classes, which mmdet numbered in the JSON's list order,
    and returns the warning to log; None (nothing changed) otherwise. Inferencers take the names from that meta."""
    from ..datasets.coco_checks import coco_dataset_paths, id_sorted_names

    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader or 'dataset' not in loader:
        return None
    dataset = next(leaf_datasets(loader.dataset))
    classes = dataset_classes(dataset)
    id_order = id_sorted_names(coco_dataset_paths(dataset)[0], classes)
    if not in_id_order(checkpoint, classes, id_order):
        return None
    message = _named_in_list_order(path, checkpoint_classes(checkpoint), classes, f'the test data of {cfg.filename}')
    checkpoint['meta'].setdefault('dataset_meta', {})['classes'] = tuple(map(str, classes))
    return message


def check_checkpoint_classes(
    checkpoint: dict,
    path: str,
    classes: Optional[Sequence[str]],
    source: str,
    id_order: Optional[Sequence[str]] = None,
) -> Optional[str]:
    """Raises ValueError when the checkpoint (as read from `path`) records other classes in its
    `meta.dataset_meta` (what mmengine's Runner saves) than `classes`, those of `source` (e.g. the test data).

    A checkpoint that names them in `id_order` (the data's class names sorted by category id) where `classes` are
    in the JSON's list order was trained by maformer_mm before it followed mmdet's order (`in_id_order`): it is
    accepted, and the warning to log is returned, saying that its labels are named by `classes` (the caller names
    the predictions so); otherwise None.
    """
    trained = checkpoint_classes(checkpoint)
    if in_id_order(checkpoint, classes, id_order):
        return _named_in_list_order(path, trained, classes, source)
    if classes is not None and trained is not None and trained != tuple(map(str, classes)):
        same = sorted(trained) == sorted(map(str, classes))
        raise ValueError(
            f'checkpoint {path} was trained with other classes: {len(trained)} ({shown(trained)}); '
            f'{source} has {len(classes)} ({shown(classes)})'
            + (
                '. The same names in another order: mmdet numbers the classes in the order the JSON lists its '
                'categories, so every label would carry another name; list the categories as the training data did'
                if same
                else ''
            )
        )
    return None


def check_checkpoint_fits(
    model: nn.Module, checkpoint: dict, path: str, classes: Optional[Sequence[str]], source: str
) -> None:
    """Raises ValueError naming the tensors whose shapes differ between the checkpoint and `model` (built for
    `classes` of `source`): a head sized for another class count, which mmengine would skip with a warning and
    then test untrained. This catches checkpoints that record no classes."""
    from mmengine.model import BaseTTAModel, is_model_wrapper

    while is_model_wrapper(model) or isinstance(model, BaseTTAModel):
        model = model.module
    own = model.state_dict()
    mismatched = []
    for key, value in loadable_state_dict(checkpoint).items():
        if key in own and hasattr(value, 'shape') and tuple(value.shape) != tuple(own[key].shape):
            mismatched.append(f'{key} is {tuple(value.shape)} in the checkpoint, {tuple(own[key].shape)} here')
    if mismatched:
        built = f'for the {len(classes)} classes of {source}' if classes is not None else f'for {source}'
        raise ValueError(
            f'checkpoint {path} does not fit the model built {built}: '
            + '; '.join(mismatched[:4])
            + (f'; ... ({len(mismatched)} tensors)' if len(mismatched) > 4 else '')
            + '. Was it trained with other classes?'
        )
