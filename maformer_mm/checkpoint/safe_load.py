"""Reading checkpoints as data: torch's weights-only unpickler with an allow-list of our own per kind of load, then a
check of everything that was read.

Two settings, both torch's weights-only unpickler (`unpickle`), never full unpickling, and neither reads or changes
torch's process-wide allow-list (`torch.serialization.add_safe_globals`), so loads in threads are independent:

- `load_weights` (strict: plain weights) admits torch's own list only: tensors and plain containers.
- `load_mmengine_checkpoint` (mmengine and mmpretrain training checkpoints: `--resume`, `load_from`, tools/test.py,
  the inferencers, backbone `init_cfg`, tools/convert_checkpoint.py) admits besides what mmengine 0.10.7 writes:
  its message hub's `HistoryBuffer` objects and their numpy arrays and scalars. `collections.Counter` and
  `OrderedDict` are on torch's own list already.

What is admitted is bound to checking stand-ins, never to functions that can return arbitrary objects:
- A HistoryBuffer pickles its statistics methods as `getattr(HistoryBuffer, 'mean')` (pickle protocol 2 writes
  nested names that way). The name `builtins.getattr` is bound to `_history_buffer_method`, which returns those
  four methods and refuses every other lookup.
- The HistoryBuffer name is bound to a subclass whose `__setstate__` checks the state and, unlike mmengine's,
  never writes the class-wide `_statistics_methods` table; instances get their real class back after the check.
- `numpy.dtype`, `_reconstruct` and `scalar` are bound to wrappers that admit the dtypes real checkpoints use
  (`float64`, `int64`); object and structured dtypes never.

After every load `check_checkpoint` walks the result and refuses anything that is not plain data: callables
anywhere, instance attributes on containers and tensors, a HistoryBuffer with other attributes than its own, numpy
arrays of other dtypes or with dtype metadata. Errors name the file, what was found where, and what to do.
Config texts inside checkpoints are data here; `config_text` keeps mmengine from parsing them.
"""

import os
import os.path as osp
import pickle
import types
from collections import Counter, OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

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

DOCS = 'docs/checkpoints_and_safety.md'
_README = f'see {DOCS} in maformer_mm'
_STATISTICS = ('min', 'max', 'current', 'mean')  # what HistoryBuffer registers itself
ADMITTED_DTYPES = tuple(np.dtype(t) for t in ('float64', 'int64'))  # HistoryBuffer logs and counts, scalars
_NUMPY_SCALARS = tuple(d.type for d in ADMITTED_DTYPES)
_HISTORY_STATE = frozenset({'max_length', '_log_history', '_count_history'})
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_TORCH_VALUES = frozenset({torch.device, torch.dtype, torch.layout, torch.memory_format, torch.qscheme})
_SEQUENCES = frozenset({list, tuple, set, torch.Size})
_CONTAINER_ATTRS = {dict: frozenset(), OrderedDict: frozenset({'_metadata'}), Counter: frozenset()}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint holds something that is not plain data; the message names the file and what was found."""


def _article(noun: str) -> str:
    return f'{"an" if noun[:1].lower() in "aeiou" else "a"} {noun}'


def _describe(value: Any) -> str:
    """A short description of an unexpected object that runs none of its code (no repr of unknown types)."""
    if isinstance(value, type):
        return f'the class {value.__module__}.{value.__qualname__}'
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f'the function {getattr(value, "__module__", None) or "?"}.{value.__qualname__}'
    kind = type(value)
    if kind in _PLAIN:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + '...'
    return _article(f'{kind.__module__}.{kind.__qualname__}') + (' (callable)' if callable(value) else '')


# ---------------------------------------------------------------------------------------------------------
# Stand-ins bound to the names mmengine checkpoints use, admitted for mmengine checkpoint loads only.


class _HistoryBufferState(HistoryBuffer):
    """mmengine's HistoryBuffer while a checkpoint loads: takes a checked state, never touches the class."""

    def __init__(self, *args, **kwargs) -> None:  # only REDUCE calls a class; mmengine pickles by NEWOBJ
        raise pickle.UnpicklingError('the checkpoint calls HistoryBuffer(...); mmengine stores it by its state')

    def __setstate__(self, state: Any) -> None:
        if type(state) is not dict:
            raise pickle.UnpicklingError(f'HistoryBuffer state is {_describe(state)}, not a dict')
        methods = state.get('statistics_methods', {})
        unexpected = sorted(map(str, set(state) - _HISTORY_STATE - {'statistics_methods'}))
        if unexpected or type(methods) is not dict:
            raise pickle.UnpicklingError(
                f'HistoryBuffer state with unexpected entries {unexpected or "statistics_methods"}'
            )
        for name, method in methods.items():
            if name not in _STATISTICS or method is not getattr(HistoryBuffer, name):
                raise pickle.UnpicklingError(
                    f'HistoryBuffer statistics method {_describe(name)} bound to '
                    f'{_describe(method)}; only HistoryBuffer.{{{",".join(_STATISTICS)}}}'
                )
        self.__dict__.update({k: v for k, v in state.items() if k != 'statistics_methods'})


def _history_buffer_method(*args: Any) -> Callable:
    """Bound to `builtins.getattr`: the only lookups mmengine checkpoints hold are HistoryBuffer's statistics."""
    if len(args) == 2 and args[0] is _HistoryBufferState and args[1] in _STATISTICS:
        return getattr(HistoryBuffer, args[1])
    shown = ', '.join(_describe(a) for a in args)
    raise pickle.UnpicklingError(
        f'the checkpoint calls getattr({shown}); the only attribute lookups allowed are '
        f'HistoryBuffer.{{{",".join(_STATISTICS)}}}'
    )


def _multiarray() -> types.ModuleType:
    return np._core.multiarray if hasattr(np, '_core') else np.core.multiarray


def _admitted_dtype(dtype: Any) -> bool:
    """One of ADMITTED_DTYPES exactly: no fields, no sub-array, no object, no metadata (a dtype's state may carry a
    metadata dict holding anything, and dtype equality ignores it)."""
    return (
        isinstance(dtype, np.dtype)
        and dtype.fields is None
        and dtype.subdtype is None
        and not dtype.hasobject
        and dtype.metadata is None
        and dtype in ADMITTED_DTYPES
    )


def _numpy_dtype(*args: Any) -> np.dtype:
    """Bound to `numpy.dtype`: numpy pickles a dtype as `dtype('f8', False, True)` plus its state."""
    specs = {d.str[1:] for d in ADMITTED_DTYPES}
    if not (1 <= len(args) <= 3 and type(args[0]) is str and args[0] in specs and all(a is False for a in args[1:2])):
        raise pickle.UnpicklingError(
            f'the checkpoint builds numpy.dtype({", ".join(_describe(a) for a in args)}); '
            f'admitted: {", ".join(d.name for d in ADMITTED_DTYPES)}'
        )
    return np.dtype(args[0], align=False, copy=True)  # a copy: its state is set next, never on numpy's own


def _numpy_reconstruct(*args: Any) -> np.ndarray:
    """Bound to numpy's `_reconstruct(ndarray, (0,), b'b')`, the empty array that the array's state fills."""
    if (
        len(args) != 3
        or args[0] is not np.ndarray
        or type(args[1]) is not tuple
        or args[1] != (0,)
        or type(args[2]) is not bytes
        or args[2] != b'b'
    ):
        raise pickle.UnpicklingError(f'the checkpoint calls numpy _reconstruct({", ".join(map(_describe, args))})')
    return _multiarray()._reconstruct(np.ndarray, (0,), b'b')


def _numpy_scalar(*args: Any) -> np.generic:
    """Bound to numpy's `scalar(dtype, bytes)`, how numpy pickles its scalars."""
    if len(args) != 2 or not _admitted_dtype(args[0]) or type(args[1]) is not bytes:
        raise pickle.UnpicklingError(f'the checkpoint builds a numpy scalar from ({", ".join(map(_describe, args))})')
    return _multiarray().scalar(args[0], args[1])


def _mmengine_globals() -> List[Tuple[Any, str]]:
    """(object, pickled name) pairs admitted for mmengine checkpoints."""
    entries = [
        (_HistoryBufferState, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
        (_history_buffer_method, 'builtins.getattr'),
        (_numpy_dtype, 'numpy.dtype'),
        (np.ndarray, 'numpy.ndarray'),
    ]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):  # numpy 2 / numpy 1 names
        entries += [(_numpy_reconstruct, f'{module}._reconstruct'), (_numpy_scalar, f'{module}.scalar')]
    for dtype in ADMITTED_DTYPES:  # the dtype's class must be admitted for its state to be set
        kind = type(dtype)
        entries.append((kind, f'{kind.__module__}.{kind.__qualname__}'))
    return entries


MMENGINE_GLOBAL_NAMES = frozenset(name for _, name in _mmengine_globals())
_WEIGHTS = Admitted({})  # torch's own list, nothing added
_MMENGINE = Admitted({name: obj for obj, name in _mmengine_globals()})
_WHAT_TO_DO = (
    'It was not loaded. Use a checkpoint that holds tensors and plain data only: a state dict, a '
    'training checkpoint of mmengine, mmdet, mmseg or mmpretrain, or a .safetensors file'
)
# timm's train.py saves its argparse arguments in its checkpoints: the converter can read such a file you trust.
_CONVERTER_HINT = (
    "This looks like a checkpoint of timm's train.py, which stores its arguments: if you trust its "
    'source, write its weights once with `python tools/convert_checkpoint.py {source} '
    'OUT.safetensors --trust`'
)


# ---------------------------------------------------------------------------------------------------------
# The check after every load.


class _Attr(str):
    """An attribute name in a path (printed as `.name`, not `['name']`)."""


def _path_text(path: Tuple) -> str:
    parts = []
    for key in path:
        if isinstance(key, _Attr):
            parts.append(f'.{key}')
        elif type(key) in (str, int):
            parts.append(f'[{key!r}]')
        else:
            parts.append(f'[<{type(key).__name__} key>]')
    return 'checkpoint' + ''.join(parts)


def _check_array(value: Any) -> Optional[str]:
    if not _admitted_dtype(value.dtype):
        extra = ' with dtype metadata' if value.dtype.metadata is not None else ''
        return f'a numpy {"array" if isinstance(value, np.ndarray) else "scalar"} of dtype {value.dtype}{extra}'
    return None


def _check_history_buffer(value: _HistoryBufferState) -> Optional[str]:
    state = value.__dict__
    if set(state) != _HISTORY_STATE:
        return f'a HistoryBuffer with the attributes {sorted(state)} (expected {sorted(_HISTORY_STATE)})'
    logs, counts = state['_log_history'], state['_count_history']
    if type(state['max_length']) is not int or type(logs) is not np.ndarray or type(counts) is not np.ndarray:
        return 'a HistoryBuffer whose max_length is not an int or whose histories are not numpy arrays'
    if logs.ndim != 1 or logs.shape != counts.shape:
        return f'a HistoryBuffer with histories of shapes {logs.shape} and {counts.shape}'
    return None


def check_checkpoint(checkpoint: Any, source: str, mmengine: bool = False) -> None:
    """Raises `UnsafeCheckpointError` unless `checkpoint` (a loaded object) is plain data.

    Plain data: None, bool, int, float, complex, str, bytes; dict, list, tuple, set, `OrderedDict` (with a state
    dict's `_metadata`), `Counter`, `torch.Size`; tensors without instance attributes or hooks; torch devices
    and dtypes. With `mmengine=True` also HistoryBuffers with exactly their own attributes and numpy arrays and
    scalars of the admitted dtypes (the HistoryBuffers get their class back). Saved config texts are strings like
    any other: nothing runs them (`config_text`). Shared and cyclic references are checked once.
    """
    stack: List[Tuple[Any, Tuple]] = [(checkpoint, ())]
    seen = set()
    buffers = []
    while stack:
        value, path = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        kind = type(value)
        problem = None
        if kind in _PLAIN or kind in _TORCH_VALUES:
            continue
        if kind in _CONTAINER_ATTRS:
            extra = set(getattr(value, '__dict__', {})) - _CONTAINER_ATTRS[kind]
            if extra:
                problem = f'{_article(kind.__qualname__)} with the instance attributes {sorted(map(str, extra))}'
            else:
                stack.extend((v, path + (_Attr(k),)) for k, v in getattr(value, '__dict__', {}).items())
                for key, item in value.items():
                    stack.append((key, path + ('<key>',)))
                    stack.append((item, path + (key,)))
        elif kind in _SEQUENCES:
            stack.extend((item, path + (i,)) for i, item in enumerate(value))
        elif isinstance(value, torch.Tensor):
            if value.__dict__ or value._backward_hooks:
                problem = 'a tensor with instance attributes or backward hooks'
        elif isinstance(value, (torch.UntypedStorage, torch.TypedStorage)):
            pass
        elif mmengine and (kind is np.ndarray or kind in _NUMPY_SCALARS):
            problem = _check_array(value)
        elif mmengine and kind is _HistoryBufferState:
            problem = _check_history_buffer(value)
            if problem is None:
                buffers.append(value)
                stack.extend((v, path + (_Attr(k),)) for k, v in value.__dict__.items())
        else:
            problem = _describe(value)
            if mmengine is False and (kind is np.ndarray or kind in _NUMPY_SCALARS or kind is _HistoryBufferState):
                problem += ' (mmengine training state; backbone weights are tensors and plain containers)'
        if problem:
            raise UnsafeCheckpointError(
                f'{source} was refused: it holds {problem} at {_path_text(path)}, which is '
                f'not plain data. {_WHAT_TO_DO} ({_README})'
            )
    for buffer in buffers:
        buffer.__class__ = HistoryBuffer


# ---------------------------------------------------------------------------------------------------------
# Loaders.


def _unpickle_checked(source: str, map_location: Any, admitted: Admitted) -> Any:
    try:
        return unpickle(source, map_location, admitted)
    except RuntimeError as error:  # torch's words for a file that is no torch file (anything else is not ours)
        if 'magic number' not in str(error):
            raise
        raise UnsafeCheckpointError(
            f'{source} was refused: it is not a torch checkpoint file ({error}). {_WHAT_TO_DO} ({_README})'
        ) from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, EOFError) as error:  # a malformed pickle
        raise UnsafeCheckpointError(
            f'{source} was refused while unpickling: {type(error).__name__}: '
            f'{torch_detail(str(error))}. {_WHAT_TO_DO} ({_README})'
        ) from None
    except pickle.UnpicklingError as error:
        detail = torch_detail(str(error))
        hint = _CONVERTER_HINT.format(source=source) if 'GLOBAL argparse.Namespace ' in detail else _WHAT_TO_DO
        raise UnsafeCheckpointError(
            f'{source} was refused while unpickling: {detail.rstrip(".")}. {hint} ({_README})'
        ) from None


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
        raise UnsafeCheckpointError(
            f'{source} was refused: it is not a valid .safetensors file '
            f'({type(error).__name__}: {error}). {_WHAT_TO_DO} ({_README})'
        ) from None


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
        UnsafeCheckpointError: the file holds something that is not plain data (the message says what and where).
    """
    return _load_checked(filename, map_location, mmengine=True)


def _load_checked(filename: Union[str, os.PathLike], map_location: Any, mmengine: bool) -> Any:
    """Reads a `.safetensors` or torch file (the mmengine types admitted when `mmengine`), then checks it."""
    source = os.fspath(filename)
    if not osp.isfile(source):
        raise FileNotFoundError(f'checkpoint not found: {source}')
    if source.endswith('.safetensors'):
        checkpoint = _load_safetensors(source, map_location)
    else:
        checkpoint = _unpickle_checked(source, map_location, _MMENGINE if mmengine else _WEIGHTS)
    check_checkpoint(checkpoint, source, mmengine=mmengine)
    return checkpoint
