"""Every checkpoint mmengine loads, from wherever it comes, read as data: local files, URLs and hub names.

mmengine's `CheckpointLoader` picks a loader by the path's prefix, and its own loaders end in a full unpickle
(`torch.hub.load_state_dict_from_url` defaults to `weights_only=False`) or in `torch.load` with whatever the process
allows. `install_mmengine_loaders` (run by `import maformer_mm`) registers a loader of this module for every prefix
that mmengine 0.10.7 registers:

    ''                          a local file
    http://, https://           a URL, downloaded once into torch hub's cache
    torchvision://, modelzoo:// torchvision's model URLs (mmengine's table)
    open-mmlab://, openmmlab:// OpenMMLab's model table (a URL, or a file under mmengine's home)
    mmcls://                    mmcls' model table; the backbone keys, as mmengine returns them
    pavi://, s3://, petrel://   the file fetched by the service's client into a private temporary file

Each ends in `load_mmengine_checkpoint` of one local file. A URL is downloaded into a private temporary folder
(with torch's progress bar), its SHA-256 compared with the prefix its name carries (`name-<sha256 prefix>.pth`, the
torch hub and OpenMMLab convention), read and checked, and only then moved into the cache
(`torch.hub.get_dir()/checkpoints`, created when missing), with the URL it came from recorded beside it
(`NAME.url`); a refused file is deleted. A file already in the cache is read the same way, hash and checks included,
and refused when its record names another URL (two URLs that end in the same file name share torch hub's cache
entry); a file placed there by hand has no record and loads. Where the caller gives a full SHA-256
(`expected_sha256`: `--checkpoint-sha256`, `sha256=` in `init_cfg`), the file read must have it, whatever its
source. What mmengine's callers get has its config texts removed (`config_text.defuse_config_texts`).
"""

import hashlib
import os
import os.path as osp
import re
import shutil
import sys
import tempfile
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Dict, Iterator, Optional
from urllib.parse import urlparse

import torch
from mmengine.logging import print_log

from ..messages import warn
from .config_text import defuse_config_texts
from .errors import DOCS, UnsafeCheckpointError
from .safe_load import load_mmengine_checkpoint

__all__ = [
    'read_checkpoint',
    'fetch_url',
    'hash_prefix',
    'check_sha256',
    'is_remote',
    'checkpoint_file',
    'expected_sha256',
    'install_mmengine_loaders',
    'SCHEMES',
]

Reader = Callable[[str, Any], Any]
_HASHED = re.compile(r'-([0-9a-f]{8,64})\.[A-Za-z0-9.]+$')


def hash_prefix(name: str) -> Optional[str]:
    """The SHA-256 prefix a file name carries (`resnet50-0676ba61.pth` -> '0676ba61'; 8 to 64 hex digits)."""
    match = _HASHED.search(name)
    return match.group(1) if match else None


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _check_hash(path: str, shown: str, expected: Optional[str]) -> None:
    if expected is None:
        return
    actual = _sha256(path)
    if not actual.startswith(expected):
        raise UnsafeCheckpointError(
            f'{shown} was refused: its SHA-256 is {actual[: len(expected)]}..., but its name says {expected}... (the '
            'file is corrupt, incomplete or not the one its name gives). It was not loaded; fetch it from its '
            f'publisher again (see {DOCS} in maformer_mm)'
        )


_EXPECTED: ContextVar[Optional[str]] = ContextVar('maformer_mm_expected_sha256', default=None)
_FULL_SHA256 = re.compile(r'[0-9a-f]{64}')


def check_sha256(value: str, option: str = 'sha256') -> str:
    """`value` as a full SHA-256 (64 hex digits, any case); ValueError naming `option` otherwise."""
    digest = str(value).strip().lower()
    if not _FULL_SHA256.fullmatch(digest):
        raise ValueError(f'{option} {value!r} is not a SHA-256: give its 64 hex digits (sha256sum FILE)')
    return digest


@contextmanager
def expected_sha256(digest: Optional[str]) -> Iterator[None]:
    """Within the block, every checkpoint file read here (local, downloaded, cached or fetched) must have the SHA-256
    `digest`; nothing is checked when it is None."""
    token = _EXPECTED.set(check_sha256(digest) if digest is not None else None)
    try:
        yield
    finally:
        _EXPECTED.reset(token)


def _read_file(path: str, shown: str, map_location: Any) -> Any:
    """The one local file a reader ends in: the expected SHA-256 checked when one is given, then read as data."""
    expected = _EXPECTED.get()
    if expected is not None:
        actual = _sha256(path)
        if actual != expected:
            raise UnsafeCheckpointError(
                f'{shown} was refused: its SHA-256 is {actual}, not the {expected} you gave. It was not loaded; '
                f'check that you have the file you meant (see {DOCS} in maformer_mm)'
            )
    try:
        return load_mmengine_checkpoint(path, map_location)
    except UnsafeCheckpointError as error:
        if shown == path:
            raise
        raise UnsafeCheckpointError(str(error).replace(path, shown)) from None


def _cache_dir(model_dir: Optional[str]) -> str:
    folder = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(folder, exist_ok=True)  # a fresh TORCH_HOME has none
    return folder


def _file_name(url: str) -> str:
    name = osp.basename(urlparse(url).path)
    if not name or name.startswith('.'):
        raise ValueError(
            f"{url}: the URL names no file (torch hub caches a download under the last part of the URL's path)"
        )
    return name


def _refused_download(error: UnsafeCheckpointError, part: str, url: str) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        str(error).replace(part, url).replace(' was refused', ' (downloaded) was refused', 1)
        + '; the download was deleted and not cached'
    )


_SOURCE = '.url'  # beside a cached file: the URL it was downloaded from


def _recorded_url(cached: str) -> Optional[str]:
    """The URL recorded for a cached file; None for a file without a record (placed there by hand)."""
    try:
        with open(cached + _SOURCE) as record:
            return record.read().strip()
    except OSError:
        return None


def fetch_url(
    url: str, map_location: Any = None, model_dir: Optional[str] = None, progress: Optional[bool] = None
) -> Any:
    """The checkpoint at `url`, from torch hub's cache or downloaded into it, read as data.

    Raises:
        UnsafeCheckpointError: the file's hash differs from its name's, or the file is not plain data (a download
            is then deleted; a cached file is named, and left for you to delete).
    """
    name = _file_name(url)
    folder = _cache_dir(model_dir)
    cached = osp.join(folder, name)
    expected = hash_prefix(name)
    if osp.isfile(cached):
        recorded = _recorded_url(cached)
        if recorded is not None and recorded != url:
            raise UnsafeCheckpointError(
                f"{cached} (torch hub's cache) was refused for {url}: it was downloaded from {recorded}, another URL "
                f'that ends in the same file name. It was not loaded; delete it to download {url}, or give a '
                f'model_dir / TORCH_HOME of its own to each source (see {DOCS} in maformer_mm)'
            )
        _check_hash(cached, f"{cached} (torch hub's cache of {url})", expected)
        try:
            return _read_file(cached, cached, map_location)
        except UnsafeCheckpointError as error:
            raise UnsafeCheckpointError(
                f"{error}. It is torch hub's cached copy of {url}: delete it to download the file again"
            ) from None
    private = tempfile.mkdtemp(prefix=f'.{name}.', suffix='.download', dir=folder)  # mode 0700, same file system
    part = osp.join(private, name)
    try:
        print_log(f'Downloading {url} to {cached}', logger='current')
        show = sys.stderr.isatty() if progress is None else progress
        torch.hub.download_url_to_file(url, part, hash_prefix=None, progress=show)
        try:
            _check_hash(part, part, expected)
            checkpoint = _read_file(part, part, map_location)
        except UnsafeCheckpointError as error:
            raise _refused_download(error, part, url) from None
        with open(osp.join(private, name + _SOURCE), 'w') as record:
            record.write(url + '\n')
        os.replace(osp.join(private, name + _SOURCE), cached + _SOURCE)  # the record first: never a file without it
        os.replace(part, cached)
        return checkpoint
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _schemes_text() -> str:
    """The prefixes mmengine's CheckpointLoader has a loader for, as a user writes them (`s3://` for the pattern
    `(\\S+\\:)?s3://`, which also takes `CLUSTER:s3://`)."""
    from mmengine.runner import CheckpointLoader

    names = [re.sub(r'^\(\\S\+\\:\)\?', '', prefix) for prefix in CheckpointLoader._schemes if prefix]
    return ', '.join(dict.fromkeys(names))


def read_local(filename: str, map_location: Any = None) -> Any:
    """A local file (mmengine's '' scheme, which also gets every path whose prefix no loader claims)."""
    path = osp.expanduser(filename)
    if not osp.isfile(path) and re.match(r'^[A-Za-z][\w+.-]*://', filename):
        raise FileNotFoundError(
            f'{filename}: no checkpoint loader is registered for its prefix {filename.split("://", 1)[0]}://; '
            f'the registered prefixes are {_schemes_text()} (s3:// and petrel:// also as CLUSTER:s3://). Give a '
            'local path, a URL or one of those'
        )
    return _read_file(path, filename, map_location)


def read_http(
    filename: str, map_location: Any = None, model_dir: Optional[str] = None, progress: Optional[bool] = None
) -> Any:
    """A URL, through torch hub's cache; in a distributed run rank 0 downloads first, as mmengine does."""
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:
        checkpoint = fetch_url(filename, map_location, model_dir, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = fetch_url(filename, map_location, model_dir, progress)
    return checkpoint


def _model_url(table: Dict[str, str], name: str, filename: str) -> str:
    if name not in table:
        raise KeyError(f"{filename}: {name!r} is not in mmengine's model table for this prefix")
    return table[name]


def read_torchvision(filename: str, map_location: Any = None) -> Any:
    """`torchvision://NAME` (and the deprecated `modelzoo://NAME`): torchvision's model URLs, as mmengine maps them."""
    from mmengine.runner import checkpoint as mmengine_checkpoint

    if filename.startswith('modelzoo://'):
        warn('The URL scheme of "modelzoo://" is deprecated, please use "torchvision://" instead')
    name = filename.split('://', 1)[1]
    return read_http(_model_url(mmengine_checkpoint.get_torchvision_models(), name, filename), map_location)


def read_openmmlab(filename: str, map_location: Any = None) -> Any:
    """`open-mmlab://NAME` / `openmmlab://NAME`: mmengine's table (and MMENGINE_HOME/open_mmlab.json), a URL or a
    file under mmengine's home."""
    from mmengine.runner import checkpoint as mmengine_checkpoint

    prefix, name = filename.split('://', 1)
    deprecated = mmengine_checkpoint.get_deprecated_model_names()
    if name in deprecated:
        warn(f'{prefix}://{name} is deprecated in favor of {prefix}://{deprecated[name]}')
        name = deprecated[name]
    url = _model_url(mmengine_checkpoint.get_external_models(), name, filename)
    if url.startswith(('http://', 'https://')):
        return read_http(url, map_location)
    return read_local(osp.join(mmengine_checkpoint._get_mmengine_home(), url), map_location)


def read_mmcls(filename: str, map_location: Any = None) -> Any:
    """`mmcls://NAME`: mmcls' model table; the backbone's keys, as mmengine returns them."""
    from mmengine.runner import checkpoint as mmengine_checkpoint

    url = _model_url(mmengine_checkpoint.get_mmcls_models(), filename[len('mmcls://') :], filename)
    return mmengine_checkpoint._process_mmcls_checkpoint(read_http(url, map_location))


def _read_bytes(data: bytes, name: str, shown: str, map_location: Any) -> Any:
    """Fetched bytes, written to a private temporary file and read like a local one."""
    with tempfile.TemporaryDirectory(prefix='maformer_mm_') as folder:
        path = osp.join(folder, name or 'checkpoint.pth')
        with open(path, 'wb') as f:
            f.write(data)
        return _read_file(path, shown, map_location)


def read_pavi(filename: str, map_location: Any = None) -> Any:
    """`pavi://PATH`: downloaded by pavi's model cloud client, as mmengine does."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError('Please install pavi to load checkpoint from modelcloud.') from None
    model = modelcloud.get(filename[len('pavi://') :])
    with tempfile.TemporaryDirectory(prefix='maformer_mm_') as folder:
        path = osp.join(folder, model.name)
        model.download(path)
        return _read_file(path, filename, map_location)


def read_ceph(filename: str, map_location: Any = None, backend: str = 'petrel') -> Any:
    """`s3://` and `petrel://` paths: fetched by mmengine's file backend, as mmengine does."""
    from mmengine.fileio import get_file_backend

    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    return _read_bytes(data, osp.basename(filename), filename, map_location)


# mmengine 0.10.7's prefixes (regular expressions, matched at the start) and the loader of this module for each.
SCHEMES: Dict[str, Reader] = {
    '': read_local,
    'http://': read_http,
    'https://': read_http,
    'modelzoo://': read_torchvision,
    'torchvision://': read_torchvision,
    'open-mmlab://': read_openmmlab,
    'openmmlab://': read_openmmlab,
    'mmcls://': read_mmcls,
    'pavi://': read_pavi,
    r'(\S+\:)?s3://': read_ceph,
    r'(\S+\:)?petrel://': read_ceph,
}


def is_remote(name: str) -> bool:
    """Whether a checkpoint name is a URL or hub name (`scheme://...`), which the loaders fetch, rather than a path
    to check on this machine."""
    return '://' in str(name)


def checkpoint_file(path: str) -> str:
    """A CHECKPOINT argument: a file, URL or hub name as it is, or a work dir: the checkpoint its `last_checkpoint`
    names (mmengine writes that file into the work dir with each checkpoint), so that a command can name a training
    run's result without knowing its schedule.

    Raises:
        FileNotFoundError: a folder without `last_checkpoint`, or whose `last_checkpoint` names no file there.
    """
    if not osp.isdir(path):
        return path
    record = osp.join(path, 'last_checkpoint')
    if not osp.isfile(record):
        raise FileNotFoundError(
            f'checkpoint {path} is a folder without a last_checkpoint file (mmengine writes one into the work dir '
            'with each checkpoint): give a checkpoint file'
        )
    with open(record) as f:
        named = f.read().strip()
    for candidate in (osp.join(path, osp.basename(named)), named):  # the work dir may have moved since
        if named and osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(f'{record} names {named!r}, which is not in {path}')


def read_checkpoint(filename: str, map_location: Any = None, sha256: Optional[str] = None) -> Any:
    """The checkpoint at any path mmengine accepts, read as data by the loader mmengine has for its prefix, with its
    config texts as saved (nothing parses them here); a loader registered by someone else is called as it is.

    Raises:
        UnsafeCheckpointError: `sha256` is given and the file read has another SHA-256, or the file is refused.
        ValueError: `sha256` is not a SHA-256, or a loader of someone else's serves the prefix (it cannot be checked).
    """
    from mmengine.runner import CheckpointLoader

    loader = CheckpointLoader._get_checkpoint_loader(str(filename))
    reader = getattr(loader, 'reader', None)
    if reader is None:
        if sha256 is not None:
            raise ValueError(
                f'{filename}: its prefix is served by {loader.__name__}, not by maformer_mm, which cannot '
                'check its SHA-256'
            )
        return loader(str(filename), map_location)
    with expected_sha256(sha256):
        return reader(str(filename), map_location)


def _for_mmengine(reader: Reader) -> Callable[..., Any]:
    """`reader` as mmengine's loader for its prefix: config texts defused in what mmengine gets."""

    def load(filename: str, map_location: Any = None, *args: Any, **kwargs: Any) -> Any:
        return defuse_config_texts(reader(filename, map_location, *args, **kwargs))

    load.__name__ = f'load_from_{reader.__name__[len("read_") :]}'  # mmengine logs `loader.__name__[10:]`
    load.__qualname__ = load.__name__
    load.__doc__ = reader.__doc__
    load.reader = reader  # read_checkpoint's loader, for callers that need the texts as saved
    return load


def install_mmengine_loaders() -> None:
    """Makes mmengine's `CheckpointLoader` read every prefix of `SCHEMES` through this module (idempotent)."""
    from mmengine.runner import CheckpointLoader

    for prefix, reader in SCHEMES.items():
        CheckpointLoader.register_scheme(prefixes=prefix, loader=_for_mmengine(reader), force=True)
