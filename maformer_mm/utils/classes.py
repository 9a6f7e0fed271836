"""The classes of a config and of a checkpoint: where datasets and heads keep them, and whether a checkpoint fits a
model. The tools (`--data-root`, the checks before a run) and the checked inferencers share these.

mmdet, mmseg and mmpretrain heads keep their class count as `num_classes` (box, mask, cascade, one-stage, DETR and
decode heads; DINO's denoising queries take the box head's) or, in MaskFormer/Mask2Former heads and their panoptic
fusion head, as `num_things_classes` + `num_stuff_classes`, with a `loss_cls.class_weight` list of one weight per
class (+ 1 for "no object" there).
"""

from typing import Any, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import ConfigDict
from mmengine.registry import DATASETS
from torch import nn

__all__ = [
    'leaf_datasets',
    'dataset_class',
    'dataset_setting',
    'dataset_classes',
    'HEAD_PATHS',
    'num_classes_fields',
    'set_num_classes',
    'checkpoint_classes',
    'checkpoint_category_ids',
    'in_id_order',
    'rename_id_ordered_classes',
    'check_checkpoint_classes',
    'check_checkpoint_fits',
    'shown',
]


def leaf_datasets(cfg: ConfigDict) -> Iterator[ConfigDict]:
    """The leaf dataset configs inside wrappers (RepeatDataset, ConcatDataset, ClassBalancedDataset...)."""
    if 'datasets' in cfg:
        for sub in cfg.datasets:
            yield from leaf_datasets(sub)
    elif 'dataset' in cfg:
        yield from leaf_datasets(cfg.dataset)
    else:
        yield cfg


def dataset_class(dataset: ConfigDict) -> Optional[type]:
    """The class a dataset config builds, looked up in the registry of the current default scope."""
    try:
        with DATASETS.switch_scope_and_registry(None) as registry:
            dataset_cls = registry.get(dataset.type)
    except (KeyError, AttributeError, TypeError):
        return None
    return dataset_cls if isinstance(dataset_cls, type) else None


def dataset_setting(dataset: ConfigDict, name: str, fallback: Any = None) -> Any:
    """A dataset config's argument `name`, else the default of its class's __init__ (e.g. ADE20KDataset's
    reduce_zero_label=True), else `fallback`."""
    if name in dataset:
        return dataset[name]
    import inspect

    for klass in getattr(dataset_class(dataset), '__mro__', ()):
        if '__init__' not in vars(klass):
            continue
        parameter = inspect.signature(klass.__init__).parameters.get(name)
        if parameter is not None and parameter.default is not inspect.Parameter.empty:
            return parameter.default
    return fallback


def dataset_classes(dataset: ConfigDict) -> Optional[Sequence[str]]:
    """The classes a dataset config declares: its metainfo's, else its dataset class's default."""
    metainfo = dataset.get('metainfo') or {}
    if metainfo.get('classes'):
        return metainfo['classes']
    return getattr(dataset_class(dataset), 'METAINFO', {}).get('classes')


HEAD_PATHS = (
    'roi_head.bbox_head',
    'roi_head.mask_head',
    'bbox_head',
    'decode_head',
    'auxiliary_head',
    'head',
    'panoptic_head',
    'panoptic_fusion_head',
)


def num_classes_fields(model: ConfigDict) -> List[Tuple[str, int]]:
    """(config path, value) of every head class count that must equal the dataset's class count: `num_classes`,
    or MaskFormer/Mask2Former's `num_things_classes + num_stuff_classes`, and the length of their
    `loss_cls.class_weight` less its background entry."""
    fields = []
    for path in HEAD_PATHS:
        node = model
        for key in path.split('.'):
            node = node.get(key) if isinstance(node, dict) else None
        heads = node if isinstance(node, list) else [node]
        for head in heads:
            if not isinstance(head, dict):
                continue
            if isinstance(head.get('num_classes'), int):
                fields.append((f'model.{path}.num_classes', head['num_classes']))
            elif isinstance(head.get('num_things_classes'), int):
                fields.append(
                    (
                        f'model.{path}.num_things_classes + num_stuff_classes',
                        head['num_things_classes'] + (head.get('num_stuff_classes') or 0),
                    )
                )
            loss = head.get('loss_cls')
            weights = loss.get('class_weight') if isinstance(loss, dict) else None
            is_maskformer = str(head.get('type', '')).endswith(('MaskFormerHead', 'Mask2FormerHead'))
            if is_maskformer and isinstance(weights, (list, tuple)):  # a weight per class, then "no object"'s
                fields.append((f'len(model.{path}.loss_cls.class_weight) - 1', len(weights) - 1))
    return fields


def _refit_class_weight(head: dict, old_count: int, num_classes: int, path: str) -> Optional[str]:
    """Refits `head.loss_cls.class_weight` (a list over the old classes, + 1 for the background in MaskFormer and
    Mask2Former heads) to `num_classes`; returns its config path, or None when the head has no such list.

    Raises ValueError when the old classes have unequal weights: they cannot be carried over to other classes.
    """
    loss = head.get('loss_cls')
    weights = loss.get('class_weight') if isinstance(loss, dict) else None
    if not isinstance(weights, (list, tuple)):
        return None
    field = f'{path}.loss_cls.class_weight'
    if len(weights) not in (old_count, old_count + 1):
        raise ValueError(
            f'--data-root: {field} has {len(weights)} entries for {old_count} classes (expected '
            f'{old_count}, or {old_count + 1} with the background)'
        )
    foreground = set(weights[:old_count])
    if len(foreground) > 1:
        raise ValueError(
            f'--data-root: {field} gives the {old_count} classes different weights '
            f'({sorted(foreground)}), which cannot be carried over to other classes; set it for your '
            'classes with --cfg-options'
        )
    background = list(weights[old_count:])
    loss['class_weight'] = [weights[0]] * num_classes + background
    return field + (f' ({num_classes} classes + background)' if background else '')


def set_num_classes(model: ConfigDict, num_classes: int) -> List[str]:
    """Sets every class count of the model config to `num_classes`, except the class-agnostic RPN's; returns the
    config paths it set.

    A class count is a `num_classes` (box, mask and cascade heads, one-stage and DETR heads; DINO's denoising
    queries take the box head's) or, in MaskFormer/Mask2Former heads and their panoptic fusion head,
    `num_things_classes` (with no stuff classes); a head's `loss_cls.class_weight` list is refitted with it.

    Raises:
        ValueError: a head with stuff classes (a panoptic model: instance annotations name things only), or a
            per-class weight list that cannot be refitted.
    """
    fields: List[str] = []

    def fit_head(node: dict, path: str) -> None:
        old_count = None
        if isinstance(node.get('num_classes'), int):
            old_count = node['num_classes']
            node['num_classes'] = num_classes
            fields.append(f'{path}.num_classes')
        elif isinstance(node.get('num_things_classes'), int):
            stuff = node.get('num_stuff_classes') or 0
            if stuff:
                raise ValueError(
                    f'--data-root reads instance annotations (things only), but {path} has {stuff} stuff '
                    'classes (a panoptic model): use an instance-segmentation config, or set panoptic '
                    'data and classes in a config of your own (docs/query_heads.md)'
                )
            old_count = node['num_things_classes']
            node['num_things_classes'] = num_classes
            fields.append(f'{path}.num_things_classes')
        if old_count is not None:
            weight_field = _refit_class_weight(node, old_count, num_classes, path)
            if weight_field:
                fields.append(weight_field)

    def visit(node: object, path: str) -> None:
        if isinstance(node, dict):
            fit_head(node, path)
            for key, value in node.items():
                if key != 'rpn_head':
                    visit(value, f'{path}.{key}')
        elif isinstance(node, (list, tuple)):
            for index, item in enumerate(node):
                visit(item, f'{path}[{index}]')

    visit(model, 'model')
    return fields


def checkpoint_classes(checkpoint: Any) -> Optional[Tuple[str, ...]]:
    """The classes a checkpoint was trained for: `meta.dataset_meta.classes` (mmengine), or `meta.CLASSES`
    (mmcv 1.x); None when it records none."""
    meta = checkpoint.get('meta') if isinstance(checkpoint, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    dataset_meta = meta.get('dataset_meta') if isinstance(meta.get('dataset_meta'), dict) else {}
    classes = dataset_meta.get('classes') or meta.get('CLASSES')
    return tuple(map(str, classes)) if isinstance(classes, (list, tuple)) and classes else None


def shown(names: Sequence[object], limit: int = 6) -> str:
    """The first `limit` names, comma-separated, and how many there are when that is not all of them."""
    return ', '.join(map(str, names[:limit])) + (f', ... ({len(names)} in all)' if len(names) > limit else '')


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
    state_dict = checkpoint.get('state_dict', checkpoint)
    for key, value in state_dict.items():
        key = key[len('module.') :] if key.startswith('module.') else key  # as mmengine's revise_keys does, per key
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
