"""The configs this package ships: where they are, their names, and `maformer_mm::` inheritance.

The configs live in the repository's `configs/`; an installed package carries them as
`maformer_mm/.mim/configs/maformer/` (under `.mim/configs`, the place mmdet and mmseg use), which in a source
checkout is a link to `configs/`. A config is named by its
path relative to that folder (`mask_rcnn_maformer_t.py`, `examples/upernet_maformer_t_my_seg.py`), with or
without `.py` and the `maformer_mm::` prefix.

Inheritance: mmengine resolves `_base_ = ['pkg::folder/file.py']` only for packages in its table
`mmengine.config.utils.MODULE2PACKAGE`, and only for paths with a folder. `register_config_package()`, run by
`import maformer_mm`, adds this package to the table, so that once maformer_mm is imported a config anywhere can
write `_base_ = ['maformer_mm::maformer/mask_rcnn_maformer_t.py']` (`maformer/` is the folder mmengine's pattern
requires; it names this package's configs). The table's value is `LOCATOR`, a module at the package's top
level that is no distribution name: mmengine looks such a name up with `importlib` and takes the folder of its file,
the package's folder, in a wheel install and in an editable one alike (a distribution name would lead it to
site-packages, which an editable install lacks).
"""

import contextlib
import functools
import os.path as osp
from pathlib import Path
from typing import Dict, Iterator, List, Optional

from mmengine.config import Config

__all__ = [
    'PREFIX',
    'FOLDER',
    'config_dir',
    'list_configs',
    'resolve_config',
    'load_config',
    'model_index',
    'memoised_package_config_index',
    'register_config_package',
]

PREFIX = 'maformer_mm::'
FOLDER = 'maformer/'  # the folder part of `maformer_mm::maformer/NAME.py`
_MIM = Path(__file__).resolve().parents[1] / '.mim'  # maformer_mm/.mim
LOCATOR = 'maformer_mm.version'  # MODULE2PACKAGE's value: a module whose folder is the package's


def config_dir() -> Path:
    """The folder of the shipped configs.

    Raises:
        FileNotFoundError: the package was installed without its configs (a broken build).
    """
    folder = _MIM / 'configs' / FOLDER.rstrip('/')
    if not folder.is_dir():
        raise FileNotFoundError(
            f'maformer_mm has no configs at {folder}: reinstall it from a wheel or a source '
            'checkout (`pip install maformer_mm` / `pip install -e .`)'
        )
    return folder


def list_configs(pattern: Optional[str] = None) -> List[str]:
    """The names of the runnable configs (not `_base_/` fragments), sorted; those containing `pattern` if given."""
    root = config_dir()
    names = sorted(p.relative_to(root).as_posix() for p in root.rglob('*.py') if '_base_' not in p.parts)
    return [n for n in names if pattern is None or pattern in n]


def _relative_name(name: str) -> str:
    name = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    name = name[len(FOLDER) :] if name.startswith(FOLDER) else name
    return name if name.endswith('.py') else name + '.py'


def resolve_config(name: str) -> str:
    """The file of a config given as a path, or by its name among the shipped configs
    (`mask_rcnn_maformer_t`, `mask_rcnn_maformer_t.py`, `maformer_mm::maformer/mask_rcnn_maformer_t.py`).

    A path that exists wins; so `configs/x.py` in a checkout is that file.

    Raises:
        FileNotFoundError: neither a file nor a shipped config; the message lists close names.
    """
    if osp.isfile(name):
        return name
    relative = _relative_name(name)
    candidate = config_dir() / relative
    if candidate.is_file() and '_base_' not in candidate.parts or (name.startswith(PREFIX) and candidate.is_file()):
        return str(candidate)
    stem = osp.splitext(osp.basename(relative))[0]
    close = [n for n in list_configs() if stem.split('_')[0] in n][:8]
    raise FileNotFoundError(
        f'config not found: {name} is no file, and no config of maformer_mm is named '
        f'{relative}' + (f' (similar: {", ".join(close)})' if close else '') + '; `maformer-configs` lists them'
    )


def load_config(name: str) -> Config:
    """Loads a config file, one of maformer_mm's configs by name (`mask_rcnn_maformer_t`,
    `maformer_mm::maformer/mask_rcnn_maformer_t.py`), or another package's config named as `_base_` names them
    (`mmdet::swin/x.py`, through mmengine's `get_config`)."""
    if '::' in name and not name.startswith(PREFIX):
        from mmengine.hub import get_config

        return get_config(name)
    return Config.fromfile(resolve_config(name))


def model_index() -> Dict[str, dict]:
    """The model index (`metafile.yml` beside the configs) as config name -> entry."""
    from mmengine.fileio import load

    models = load(str(config_dir() / 'metafile.yml'))['Models']
    return {m['Config'].split('/', 1)[1]: m for m in models}


@contextlib.contextmanager
def memoised_package_config_index() -> Iterator[None]:
    """Within this context, mmengine reads each YAML file of an installed package's model index once. For every
    `mmdet::`/`mmseg::` base of a config it re-reads the package's whole index (about 100 files for mmdet, ~1 s);
    memoising those reads changes no parsed config."""
    import mmengine.config.utils as config_utils

    original = config_utils.load
    config_utils.load = functools.lru_cache(maxsize=None)(original)
    try:
        yield
    finally:
        config_utils.load = original


def register_config_package() -> None:
    """Lets mmengine resolve `maformer_mm::maformer/NAME.py` in `_base_` (see the module docstring). Idempotent."""
    from mmengine.config import utils as config_utils

    config_utils.MODULE2PACKAGE.setdefault('maformer_mm', LOCATOR)
