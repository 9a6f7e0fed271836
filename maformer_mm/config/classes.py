"""The classes of a config: where its datasets declare them, where its heads keep their count, and changing that
count everywhere at once (`--data-root`, the checks before a run, the inferencers fitting heads to a checkpoint).

Where each host's heads keep their class count is `hosts.HEAD_PATHS`: `num_classes` (box, mask, cascade, one-stage,
DETR and decode heads; DINO's denoising queries take the box head's) or, in MaskFormer/Mask2Former heads and their
panoptic fusion head, `num_things_classes` + `num_stuff_classes`, with a `loss_cls.class_weight` list of one weight
per class (+ 1 for "no object" there).
"""

from typing import Any, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import ConfigDict
from mmengine.registry import DATASETS

from ..hosts import HEAD_PATHS, is_query_head_type

__all__ = [
    'leaf_datasets',
    'dataset_class',
    'dataset_setting',
    'dataset_classes',
    'num_classes_fields',
    'set_num_classes',
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
            # a weight per class, then "no object"'s
            if is_query_head_type(head.get('type')) and isinstance(weights, (list, tuple)):
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
