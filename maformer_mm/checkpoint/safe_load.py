"""Reading checkpoints as data: what the file is, torch's weights-only unpickler with an allow-list of our own per
kind of load, then a check of everything that was read.

Two settings, both torch's weights-only unpickler (`unpickle`), never full unpickling, and neither reads or changes
torch's process-wide allow-list (`torch.serialization.add_safe_globals`), so loads in threads are independent:

- `load_weights` (strict: plain weights) admits torch's own list only: tensors and plain containers.
- `load_mmengine_checkpoint` (mmengine and mmpretrain training checkpoints: `--resume`, `load_from`, tools/test.py,
  the inferencers, backbone `init_cfg`, tools/convert_checkpoint.py) admits besides what mmengine 0.10.7 writes,
  each name bound to a checking stand-in (`mmengine_state`, `numpy_state`).

Before unpickling, the file's first bytes say what it is: an empty file, an HTML page, a gzip body, a damaged or
truncated zip, a zip with entries torch's format does not have, or no torch file at all are refused in those words.
After it, `plain_data.resolve` refuses anything that is not plain data and makes numpy values from their checked
state. Every refusal is an `UnsafeCheckpointError` that names the file, the reason and what to do; a malformed file
never surfaces as another exception type. Config texts inside checkpoints are data here; `config_text` keeps
mmengine from reading them.
"""

import os
import os.path as osp
import pickle
import re
import tarfile
import zipfile
from typing import Any, Dict, Union

import torch

from .errors import DOCS, WHAT_TO_DO, UnsafeCheckpointError, refusal
from .mmengine_state import mmengine_names
from .numpy_state import ADMITTED_DTYPES
from .plain_data import resolve
from .unpickle import Admitted, torch_detail, unpickle

__all__ = [
    'UnsafeCheckpointError',
    'load_weights',
    'load_mmengine_checkpoint',
    'check_checkpoint',
    'MMENGINE_GLOBAL_NAMES',
    'ADMITTED_DTYPES',
    'DOCS',
]

_WEIGHTS = Admitted({})  # torch's own list, nothing added
_MMENGINE = Admitted(mmengine_names())
MMENGINE_GLOBAL_NAMES = frozenset(_MMENGINE.names)
# timm's train.py saves its argparse arguments in its checkpoints: the converter can read such a file you trust.
_CONVERTER_HINT = (
    "This looks like a checkpoint of timm's train.py, which stores its arguments: if you trust its "
    'source, write its weights once with `python tools/convert_checkpoint.py {source} '
    'OUT.safetensors --trust`'
)
_FETCH_AGAIN = 'Fetch or copy the file again, or give the checkpoint itself'
# Entries of torch's zip format (torch.save since 1.6), under the archive's one top folder.
_TORCH_ENTRIES = re.compile(
    r'(data\.pkl|version|byteorder|\.format_version|\.storage_alignment|\.data/version|\.data/serialization_id'
    r'|data/\d+|constants\.pkl|code/.*|extra/.*|\.data/.*)'
)


def check_checkpoint(checkpoint: Any, source: str, mmengine: bool = False) -> Any:
    """`checkpoint` (a loaded object) if it is plain data, with numpy values made from their checked state.

    Raises:
        UnsafeCheckpointError: it is not (`plain_data` says what is plain data).
    """
    return resolve(checkpoint, source, mmengine)


def _first_bytes(source: str) -> bytes:
    with open(source, 'rb') as f:
        return f.read(512)


def _shown_bytes(head: bytes) -> str:
    text = head[:16].decode('latin1')
    return ''.join(c if c.isprintable() and c.isascii() else '.' for c in text)


def _check_zip(source: str) -> None:
    """A zip must be whole (its central directory is written last) and hold torch's entries under one folder."""
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as error:
        raise refusal(
            source,
            f'it is a truncated or damaged zip archive ({error}); torch writes checkpoints as zip archives, so the '
            'file was probably cut short while it was written, downloaded or copied',
            _FETCH_AGAIN,
        ) from None
    records = [name.split('/', 1)[0] for name in names if name.count('/') == 1 and name.endswith('/data.pkl')]
    folder = records[0] if len(records) == 1 else None
    unexpected = [
        name
        for name in names
        if folder is None or not name.startswith(folder + '/') or not _TORCH_ENTRIES.fullmatch(name[len(folder) + 1 :])
    ]
    if unexpected:
        shown = ', '.join(unexpected[:4]) + (' ...' if len(unexpected) > 4 else '')
        where = f'in the folder {folder}/' if folder else 'in one folder'
        raise refusal(
            source,
            f'it is a zip archive but not a torch checkpoint: torch keeps data.pkl, data/N and version {where}, and '
            f'this archive also has {len(unexpected)} other entries ({shown})',
        )


def _check_format(source: str) -> None:
    """Refuses, in words a user recognises, a file that is not in one of torch's formats."""
    head = _first_bytes(source)
    if not head:
        raise refusal(source, 'it is empty (0 bytes): an interrupted download or copy?', _FETCH_AGAIN)
    if head[:4] == b'PK\x03\x04' or head[:4] == b'PK\x05\x06':
        _check_zip(source)
        return
    if head[:2] == b'\x1f\x8b':
        raise refusal(
            source,
            'it is gzip-compressed (a .gz file, or a download served compressed)',
            'Decompress it (gunzip) and give the checkpoint inside',
        )
    stripped = head.lstrip(b'\xef\xbb\xbf \t\r\n').lower()
    if stripped.startswith((b'<!doctype', b'<html', b'<?xml', b'<head', b'<body', b'<')):
        raise refusal(
            source,
            f'it is an HTML or XML page (it starts with "{_shown_bytes(stripped.splitlines()[0])}"), not a '
            'checkpoint: a link that served a web page (a login, error or redirect page) instead of the file',
            'Download the file itself (the direct link to the .pth) and give that',
        )
    if head[:1] == b'\x80' or tarfile.is_tarfile(source):  # a pickle (torch's format before 1.6), or legacy tar
        return
    raise refusal(
        source,
        f'it is not a torch checkpoint (a zip archive or a pickle); it starts with "{_shown_bytes(head)}"',
    )


def _unpickle_checked(source: str, map_location: Any, admitted: Admitted) -> Any:
    try:
        return unpickle(source, map_location, admitted)
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as error:
        detail = torch_detail(str(error))
        hint = _CONVERTER_HINT.format(source=source) if 'GLOBAL argparse.Namespace ' in detail else WHAT_TO_DO
        raise refusal(source, f'unpickling stopped: {detail}', hint) from None
    except TypeError as error:
        if 'PendingArray' not in str(error):
            raise refusal(source, f'it is malformed (TypeError: {torch_detail(str(error))})') from None
        raise refusal(
            source,
            'unpickling stopped: it makes a tensor from a numpy array '
            "(torch._utils._rebuild_device_tensor_from_numpy), which would share the array's memory; tensors are "
            "read from torch's own storage records only",
        ) from None
    except MemoryError:
        raise refusal(source, 'unpickling stopped: it asks for more memory than this machine has') from None
    except Exception as error:  # a malformed file: torch's and Python's own error types, never passed on raw
        detail = torch_detail(str(error))
        detail = re.sub(r'\[enforce fail at [^\]]*\]\s*\.?\s*', '', detail)
        raise refusal(source, f'it is malformed ({type(error).__name__}: {detail})') from None


def _load_safetensors(source: str, map_location: Any) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(
            f'{source}: reading .safetensors files needs the safetensors package (pip install safetensors)'
        ) from error
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else 'cpu'
    try:
        return load_file(source, device=device)
    except Exception as error:  # safetensors raises its own error types for malformed headers
        raise refusal(source, f'it is not a valid .safetensors file ({type(error).__name__}: {error})') from None


def load_weights(filename: Union[str, os.PathLike], map_location: Any = 'cpu') -> Any:
    """Reads plain weights with the strictest setting: a `.safetensors` file, or a torch file read with torch's
    own weights-only list and nothing added, holding tensors and plain containers only.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: anything else in the file (the message says what and where).
    """
    return _load_checked(filename, map_location, mmengine=False)


def load_mmengine_checkpoint(filename: Union[str, os.PathLike], map_location: Any = None) -> Any:
    """Reads a checkpoint as data: plain weights, training checkpoints of mmengine (mmdet, mmseg, mmpretrain)
    with their training state, `.safetensors` files.

    `import maformer_mm` makes mmengine read every checkpoint through it (`remote.install_mmengine_loaders`);
    in your own code, call it rather than `torch.load` for a checkpoint from tools/train.py.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file is not a checkpoint or holds something that is not plain data (the message
            says what and where).
    """
    return _load_checked(filename, map_location, mmengine=True)


def _load_checked(filename: Union[str, os.PathLike], map_location: Any, mmengine: bool) -> Any:
    """Reads a `.safetensors` or torch file (the mmengine types admitted when `mmengine`), then checks it."""
    source = os.fspath(filename)
    if not osp.isfile(source):
        raise FileNotFoundError(f'checkpoint not found: {source}')
    if source.endswith('.safetensors'):
        return _load_safetensors(source, map_location)
    _check_format(source)
    checkpoint = _unpickle_checked(source, map_location, _MMENGINE if mmengine else _WEIGHTS)
    try:
        return check_checkpoint(checkpoint, source, mmengine=mmengine)
    except UnsafeCheckpointError:
        raise
    except Exception as error:  # an object that breaks the walk itself (the fuzzer's finds): malformed, refused
        raise refusal(source, f'it holds malformed data ({type(error).__name__}: {torch_detail(str(error))})') from None
