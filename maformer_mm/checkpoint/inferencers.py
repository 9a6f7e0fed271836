"""OpenMMLab inferencers built from a checkpoint: never from the config it carries, its heads as it was trained.

mmengine's `BaseInferencer._init_model` (behind mmdet's DetInferencer and mmseg's MMSegInferencer) builds the model
from the config, then loads the checkpoint non-strictly. Two things go wrong there:
- given weights but no config, it builds the config the checkpoint carries: a file then chooses what runs
  (mmengine imports any dotted `type` name, also in a text that is plain data);
- given a config whose heads are sized for other classes than the checkpoint's (a checkpoint trained with
  `--data-root` on 4 classes, a config for COCO's 80), it loads everything else, logs "size mismatch" and predicts
  with a randomly initialised head.

`install_inferencer_checks` (run by `import maformer_mm`) replaces that method by `_init_model` below, which does
mmengine's steps with these differences: the checkpoint is read once, as data (`remote.read_checkpoint`); without a
config it refuses, saying what to pass (a config file, or one of this package's configs by name, which
`_load_model_from_name` accepts as `model`); the heads' `num_classes` are set to the classes the checkpoint records
(`meta.dataset_meta.classes`, what mmengine's Runner saves); and a tensor whose shape still differs from the
model's is an error naming both class lists, never a warning. mmpretrain's ImageClassificationInferencer has its
own base class and never reads a saved config; tools/infer.py fits its heads the same way (`fit_heads`,
`check_fits`).
"""

import re
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from ..config.classes import dataset_classes, leaf_datasets, num_classes_fields, set_num_classes
from ..hosts import TASKS
from ..messages import shown, warn
from .classes import check_checkpoint_fits, checkpoint_classes, rename_id_ordered_classes
from .config_text import defuse_config_texts, value_at
from .remote import read_checkpoint
from .safe_load import DOCS

__all__ = ['fit_heads', 'check_fits', 'preloaded_checkpoint', 'install_inferencer_checks']


def _no_config(checkpoint: Any, source: str) -> ValueError:
    """The refusal of weights without a config, naming what to pass (and the config the run was named after)."""
    experiment = value_at(checkpoint, ('meta', 'experiment_name'))
    trained = ''
    if isinstance(experiment, str) and re.fullmatch(r'[\w.-]{1,200}_\d{8}_\d{6}', experiment):
        trained = f' (it was trained with a config named {experiment[:-16]!r}, its meta.experiment_name says)'
    return ValueError(
        f'{source} was given without a config{trained}. maformer_mm never builds the config a checkpoint carries: '
        'a file can name any importable callable there. Pass the config it was trained with, a file or one of '
        "maformer_mm's configs by name: DetInferencer(model='configs/mask_rcnn_maformer_t.py', weights=CKPT), "
        "DetInferencer(model='mask_rcnn_maformer_t', weights=CKPT) or MMSegInferencer(model="
        f"'upernet_maformer_t_512x512_160k_ade20k', weights=CKPT) (see {DOCS})"
    )


def _config_classes(cfg: Config) -> Optional[Sequence[str]]:
    loader = cfg.get('test_dataloader') or cfg.get('val_dataloader')
    if not loader or 'dataset' not in loader:
        return None
    return dataset_classes(next(leaf_datasets(loader.dataset)))


def fit_heads(cfg: Config, checkpoint: Any, source: str) -> None:
    """Sets every head `num_classes` of `cfg.model` to the number of classes the checkpoint records, logging what
    changed; nothing when it records none or they agree already."""
    trained = checkpoint_classes(checkpoint)
    if trained is None:
        return
    heads = num_classes_fields(cfg.model)
    if all(value == len(trained) for _, value in heads):
        return
    changed = set_num_classes(cfg.model, len(trained))
    before = ', '.join(f'{field} = {value}' for field, value in heads)
    print_log(
        f'{source} was trained for {len(trained)} classes ({shown(trained)}; its meta.dataset_meta), the '
        f"config's heads for others ({before}): set {', '.join(changed)} to {len(trained)}",
        logger='current',
    )


def check_fits(model: nn.Module, checkpoint: Any, source: str, cfg: Config) -> None:
    """Raises ValueError when a tensor of the checkpoint has another shape than the model's (a head for other
    classes, which mmengine would skip with a warning), naming the checkpoint's and the config's classes."""
    name = getattr(cfg, 'filename', None) or 'the config'
    try:
        check_checkpoint_fits(model, checkpoint, source, None, f'{name}')
    except ValueError as error:
        trained = checkpoint_classes(checkpoint)
        declared = _config_classes(cfg)
        heads = ', '.join(f'{field} = {value}' for field, value in num_classes_fields(cfg.model)) or 'none'
        raise ValueError(
            f'{error} The checkpoint records '
            + (f'{len(trained)} classes ({shown(trained)})' if trained else 'no classes (no meta.dataset_meta)')
            + f'; the config has {heads}'
            + (f' and {len(declared)} classes ({shown(declared)})' if declared else '')
            + '. Give the config the checkpoint was trained with; nothing was loaded'
        ) from None


_PRELOADED: ContextVar[Optional[Tuple[str, Any]]] = ContextVar('maformer_mm_preloaded_checkpoint', default=None)


@contextmanager
def preloaded_checkpoint(path: str, checkpoint: Any) -> Iterator[None]:
    """Within the block, an inferencer given `weights=path` uses `checkpoint` (read already, e.g. by tools/infer.py
    to check its classes) instead of reading the file again."""
    token = _PRELOADED.set((str(path), checkpoint))
    try:
        yield
    finally:
        _PRELOADED.reset(token)


def _init_model(self: Any, cfg: Any, weights: Optional[str], device: str = 'cpu') -> nn.Module:
    """mmengine's `BaseInferencer._init_model` with the checkpoint read as data, a saved config only as data,
    heads fitted to the checkpoint's classes and a strict shape check before the weights are loaded."""
    from mmengine.registry import MODELS

    held = _PRELOADED.get()
    if held is not None and weights is not None and held[0] == str(weights):
        checkpoint = held[1]
    else:
        checkpoint = read_checkpoint(weights, map_location='cpu') if weights is not None else None
    if not cfg:  # mmengine would build the config saved in the checkpoint
        raise _no_config(checkpoint, str(weights))
    if cfg.model.get('pretrained') is not None:
        del cfg.model.pretrained
    if checkpoint is not None:
        fit_heads(cfg, checkpoint, str(weights))
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    if checkpoint is not None:
        check_fits(model, checkpoint, str(weights), cfg)
        renamed = rename_id_ordered_classes(checkpoint, cfg, str(weights)) if _is_detection(cfg) else None
        if renamed:  # names an older maformer_mm recorded in category-id order, matched to mmdet's label order
            warn(renamed)
        defuse_config_texts(checkpoint)  # what the subclass's `_load_weights_to_model` sees, as mmengine's loader
    self._load_weights_to_model(model, checkpoint, cfg)
    model.to(device)
    model.eval()
    return model


def _is_detection(cfg: Any) -> bool:
    return TASKS.get(cfg.get('default_scope', 'mmdet')) == 'detection'


_METAFILE_LOADER = '_maformer_mm_metafile_loader'  # mmengine's own `_load_model_from_metafile`, kept on the class


def _load_model_from_name(self: Any, model: str) -> Tuple[Config, Optional[str]]:
    """mmengine's `_load_model_from_metafile` (model names of the inferencer's host library), preceded by the names
    of maformer_mm's configs (`mask_rcnn_maformer_t`, `maformer_mm::maformer/mask_rcnn_maformer_t.py`)."""
    from ..config.zoo import resolve_config

    try:
        path = resolve_config(model)
    except FileNotFoundError:
        return getattr(type(self), _METAFILE_LOADER)(self, model)
    return Config.fromfile(path), None


def install_inferencer_checks() -> None:
    """Makes mmengine's BaseInferencer (DetInferencer, MMSegInferencer) build its model with `_init_model` above and
    take maformer_mm's config names as `model`. Idempotent."""
    from mmengine.infer import BaseInferencer

    if not hasattr(BaseInferencer, _METAFILE_LOADER):
        setattr(BaseInferencer, _METAFILE_LOADER, BaseInferencer._load_model_from_metafile)
    BaseInferencer._load_model_from_metafile = _load_model_from_name
    BaseInferencer._init_model = _init_model
