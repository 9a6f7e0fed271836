"""OpenMMLab inferencers built from a checkpoint: its saved config only as data, its heads as it was trained.

mmengine's `BaseInferencer._init_model` (behind mmdet's DetInferencer and mmseg's MMSegInferencer) builds the model
from the config, then loads the checkpoint non-strictly. Two things go wrong there:
- given weights but no config, it runs the config text the checkpoint carries (`Config.fromstring`), after
  substituting its templates;
- given a config whose heads are sized for other classes than the checkpoint's (a checkpoint trained with
  `--data-root` on 4 classes, a config for COCO's 80), it loads everything else, logs "size mismatch" and predicts
  with a randomly initialised head.

`install_inferencer_checks` (run by `import maformer_mm`) replaces that method by `_init_model` below, which does
mmengine's steps with these differences: the checkpoint is read once, as data (`remote.read_checkpoint`); without a
config, the saved one is used only when it is plain data (`config_text.read_config_text`), else a clear error; the
heads' `num_classes` are set to the classes the checkpoint records (`meta.dataset_meta.classes`, what mmengine's
Runner saves); and a tensor whose shape still differs from the model's is an error naming both class lists, never
a warning. mmpretrain's ImageClassificationInferencer has its own base class and never reads a saved config;
tools/infer.py fits its heads the same way (`fit_heads`, `check_fits`).
"""

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Iterator, Optional, Sequence, Tuple

from mmengine.config import Config
from mmengine.logging import print_log
from torch import nn

from ..utils.classes import (
    check_checkpoint_fits,
    checkpoint_classes,
    dataset_classes,
    leaf_datasets,
    num_classes_fields,
    set_num_classes,
    shown,
)
from .config_text import (
    INFERENCER_CONFIGS,
    ConfigTextError,
    config_as_text,
    defuse_config_texts,
    read_config_text,
    unimported_modules,
    value_at,
)
from .remote import read_checkpoint
from .safe_load import DOCS

__all__ = ['saved_config', 'fit_heads', 'check_fits', 'preloaded_checkpoint', 'install_inferencer_checks']


def saved_config(checkpoint: Any, source: str) -> Config:
    """The config a checkpoint carries, evaluated as data (nothing in it runs).

    Raises:
        ValueError: there is none, it is not plain data (templates, code, `_base_`), or its `custom_imports` name
            modules not imported in this process; the message says which and what to give instead.
    """
    texts = ((keys, value_at(checkpoint, keys)) for keys in INFERENCER_CONFIGS)
    found = next(((keys, text) for keys, text in texts if text is not None), None)
    give = 'Give the config file the checkpoint was trained with (e.g. DetInferencer(model=CONFIG, weights=CKPT))'
    if found is None:
        raise ValueError(f'{source} holds no saved config (message_hub.runtime_info.cfg or meta.cfg). {give}')
    keys, text = found
    where = '.'.join(keys)
    try:
        values = read_config_text(text)
    except ConfigTextError as error:
        raise ValueError(
            f'{source}: its saved config ({where}) was not used: {error}. A saved config is read only '
            f'as plain data, since mmengine would run it as Python. {give} (see {DOCS})'
        ) from None
    missing = unimported_modules(values)
    if missing:
        raise ValueError(
            f'{source}: its saved config ({where}) imports {missing} (custom_imports), which this '
            f'process has not imported. Import them yourself if you trust them, or: {give}'
        )
    if not isinstance(values.get('model'), dict):
        raise ValueError(f'{source}: its saved config ({where}) has no model. {give}')
    return Config(values, cfg_text=config_as_text(values))


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
    if not cfg:
        if checkpoint is None:
            raise ValueError('an inferencer without a config needs weights that carry one; give the config file')
        cfg.update(saved_config(checkpoint, str(weights))._cfg_dict)
    if cfg.model.get('pretrained') is not None:
        del cfg.model.pretrained
    if checkpoint is not None:
        fit_heads(cfg, checkpoint, str(weights))
    model = MODELS.build(cfg.model)
    model.cfg = cfg
    if checkpoint is not None:
        check_fits(model, checkpoint, str(weights), cfg)
        defuse_config_texts(checkpoint)  # what the subclass's `_load_weights_to_model` sees, as mmengine's loader
    self._load_weights_to_model(model, checkpoint, cfg)
    model.to(device)
    model.eval()
    return model


def install_inferencer_checks() -> None:
    """Makes mmengine's BaseInferencer (DetInferencer, MMSegInferencer) build its model with `_init_model` above."""
    from mmengine.infer import BaseInferencer

    BaseInferencer._init_model = _init_model
