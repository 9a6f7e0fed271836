"""Reading checkpoints as data: torch's weights-only unpickler, widened for one load at a time, then checked.

Two settings, both `torch.load(weights_only=True)`, never full unpickling:

- `load_weights` (backbone weights: `init_cfg=dict(type='Pretrained', ...)`, tools/convert_checkpoint.py)
  adds nothing to torch's allow-list and accepts tensors and plain containers only.
- `load_mmengine_checkpoint` (mmengine training checkpoints: `--resume`, `load_from`, tools/test.py, the
  inferencers) admits, for the duration of that one load, what mmengine 0.10.7 writes besides tensors: its
  message hub's `HistoryBuffer` objects and their numpy arrays and scalars. `collections.Counter` and
  `OrderedDict` are on torch's own list already.

`import maformer_mm` installs `load_from_local` as mmengine's loader for local files (`CheckpointLoader` picks
a loader by path prefix; '' is the local one), so the Runner's resume and `load_from`, mmengine's inferencers
and mmdet's/mmseg's stock tools all read through it. torch's process-wide allow-list is never changed.

What is admitted is bound to checking stand-ins, never to functions that can return arbitrary objects:
- A HistoryBuffer pickles its statistics methods as `getattr(HistoryBuffer, 'mean')` (pickle protocol 2 writes
  nested names that way). The name `builtins.getattr` is bound to `_history_buffer_method`, which returns those
  four methods and refuses every other lookup.
- The HistoryBuffer name is bound to a subclass whose `__setstate__` checks the state and, unlike mmengine's,
  never writes the class-wide `_statistics_methods` table; instances get their real class back after the check.
- `numpy.dtype`, `_reconstruct` and `scalar` are bound to wrappers that admit the dtypes real checkpoints use
  (`float64`, `int64`); object and structured dtypes never.

After every load `check_checkpoint` walks the result and refuses anything that is not plain data: callables
anywhere, instance attributes on containers and tensors, a HistoryBuffer with other attributes than its own,
numpy arrays of other dtypes, and config texts that mmengine would run (`Runner.resume` executes
`meta['config']`; an inferencer built without a config executes the saved `cfg`). Errors name the file and what
was found where.
"""
import ast
import os
import os.path as osp
import pickle
import sys
import types
from collections import Counter, OrderedDict
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

__all__ = ['UnsafeCheckpointError', 'load_weights', 'load_mmengine_checkpoint', 'load_from_local',
           'check_checkpoint', 'mmengine_checkpoint_globals', 'install_mmengine_loader', 'MMENGINE_GLOBAL_NAMES',
           'ADMITTED_DTYPES']

_README = 'see "Checkpoints and safety" in the maformer_mm README'
_STATISTICS = ('min', 'max', 'current', 'mean')  # what HistoryBuffer registers itself
ADMITTED_DTYPES = tuple(np.dtype(t) for t in ('float64', 'int64'))  # HistoryBuffer logs and counts, scalars
_NUMPY_SCALARS = tuple(d.type for d in ADMITTED_DTYPES)
_HISTORY_STATE = frozenset({'max_length', '_log_history', '_count_history'})
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_TORCH_VALUES = frozenset({torch.device, torch.dtype, torch.layout, torch.memory_format, torch.qscheme})
_SEQUENCES = frozenset({list, tuple, set, torch.Size})
_CONTAINER_ATTRS = {dict: frozenset(), OrderedDict: frozenset({'_metadata'}), Counter: frozenset()}
# Strings in mmengine checkpoints that mmengine parses as Python config files (`Config.fromstring`).
_CONFIG_TEXTS = (('meta', 'config'), ('meta', 'cfg'), ('message_hub', 'runtime_info', 'cfg'))


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
# Stand-ins bound to the names mmengine checkpoints use, admitted only during `mmengine_checkpoint_globals`.

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
            raise pickle.UnpicklingError('HistoryBuffer state with unexpected entries '
                                         f'{unexpected or "statistics_methods"}')
        for name, method in methods.items():
            if name not in _STATISTICS or method is not getattr(HistoryBuffer, name):
                raise pickle.UnpicklingError(f'HistoryBuffer statistics method {_describe(name)} bound to '
                                             f'{_describe(method)}; only HistoryBuffer.{{{",".join(_STATISTICS)}}}')
        self.__dict__.update({k: v for k, v in state.items() if k != 'statistics_methods'})


def _history_buffer_method(*args: Any) -> Callable:
    """Bound to `builtins.getattr`: the only lookups mmengine checkpoints hold are HistoryBuffer's statistics."""
    if len(args) == 2 and args[0] is _HistoryBufferState and args[1] in _STATISTICS:
        return getattr(HistoryBuffer, args[1])
    shown = ', '.join(_describe(a) for a in args)
    raise pickle.UnpicklingError(f'the checkpoint calls getattr({shown}); the only attribute lookups allowed are '
                                 f'HistoryBuffer.{{{",".join(_STATISTICS)}}}')


def _multiarray() -> types.ModuleType:
    return np._core.multiarray if hasattr(np, '_core') else np.core.multiarray


def _admitted_dtype(dtype: Any) -> bool:
    return isinstance(dtype, np.dtype) and dtype.fields is None and not dtype.hasobject and dtype in ADMITTED_DTYPES


def _numpy_dtype(*args: Any) -> np.dtype:
    """Bound to `numpy.dtype`: numpy pickles a dtype as `dtype('f8', False, True)` plus its state."""
    specs = {d.str[1:] for d in ADMITTED_DTYPES}
    if not (1 <= len(args) <= 3 and type(args[0]) is str and args[0] in specs and all(a is False for a in args[1:2])):
        raise pickle.UnpicklingError(f'the checkpoint builds numpy.dtype({", ".join(_describe(a) for a in args)}); '
                                     f'admitted: {", ".join(d.name for d in ADMITTED_DTYPES)}')
    return np.dtype(args[0], align=False, copy=True)  # a copy: its state is set next, never on numpy's own


def _numpy_reconstruct(*args: Any) -> np.ndarray:
    """Bound to numpy's `_reconstruct(ndarray, (0,), b'b')`, the empty array that the array's state fills."""
    if (len(args) != 3 or args[0] is not np.ndarray or type(args[1]) is not tuple or args[1] != (0,)
            or type(args[2]) is not bytes or args[2] != b'b'):
        raise pickle.UnpicklingError(f'the checkpoint calls numpy _reconstruct({", ".join(map(_describe, args))})')
    return _multiarray()._reconstruct(np.ndarray, (0,), b'b')


def _numpy_scalar(*args: Any) -> np.generic:
    """Bound to numpy's `scalar(dtype, bytes)`, how numpy pickles its scalars."""
    if len(args) != 2 or not _admitted_dtype(args[0]) or type(args[1]) is not bytes:
        raise pickle.UnpicklingError(f'the checkpoint builds a numpy scalar from ({", ".join(map(_describe, args))})')
    return _multiarray().scalar(args[0], args[1])


def _mmengine_globals() -> List[Tuple[Any, str]]:
    """(object, pickled name) pairs for torch's safe-globals API."""
    entries = [(_HistoryBufferState, f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}'),
               (_history_buffer_method, 'builtins.getattr'), (_numpy_dtype, 'numpy.dtype'),
               (np.ndarray, 'numpy.ndarray')]
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):  # numpy 2 / numpy 1 names
        entries += [(_numpy_reconstruct, f'{module}._reconstruct'), (_numpy_scalar, f'{module}.scalar')]
    for dtype in ADMITTED_DTYPES:  # the dtype's class must be admitted for its state to be set
        kind = type(dtype)
        entries.append((kind, f'{kind.__module__}.{kind.__qualname__}'))
    return entries


MMENGINE_GLOBAL_NAMES = frozenset(name for _, name in _mmengine_globals())


def _global_name(entry: Union[Callable, Tuple[Callable, str]]) -> Tuple[Any, str]:
    if isinstance(entry, tuple):
        return entry[0], entry[1]
    return entry, f'{entry.__module__}.{entry.__qualname__}'


@contextmanager
def mmengine_checkpoint_globals() -> Iterator[None]:
    """Admits what mmengine checkpoints hold to torch's weights-only unpickler for the `with` block only.

    Raises `UnsafeCheckpointError` when torch's process-wide allow-list (`add_safe_globals` elsewhere in the
    process) already binds one of these names to something else: which of the two torch would use is undefined.
    """
    ours = _mmengine_globals()
    bound = dict((name, obj) for obj, name in ours)
    current = torch.serialization.get_safe_globals()
    for entry in current:
        obj, name = _global_name(entry)
        if name in bound and obj is not bound[name]:
            raise UnsafeCheckpointError(
                f'torch\'s process-wide allow-list binds {name} to {_describe(obj)} (torch.serialization.'
                'add_safe_globals was called in this process); maformer_mm reads no checkpoint under it, since it '
                f'lets a checkpoint reach objects that are not data ({_README})')
    with torch.serialization.safe_globals([e for e in ours if e not in current]):
        yield


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
        return f'a numpy {"array" if isinstance(value, np.ndarray) else "scalar"} of dtype {value.dtype}'
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


def _config_code_problem(text: str, imports_allowed: bool) -> Optional[str]:
    """Why `text`, parsed by mmengine as a Python config, would do more than assign data; None when it would not.

    Config texts mmengine saves (`Config.pretty_text`) are assignments of literals, tuples, lists, dicts and
    `dict(...)` calls. `_base_` would make mmengine read other files; `custom_imports` import modules, which is
    allowed (`imports_allowed`) only for modules already imported in this process.
    """
    try:
        tree = ast.parse(text)
    except SyntaxError as error:
        return f'it is not valid Python ({error.msg}, line {error.lineno})'

    def literal(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return True
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            return isinstance(node.operand, ast.Constant)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return all(map(literal, node.elts))
        if isinstance(node, ast.Dict):
            return all(k is not None and literal(k) for k in node.keys) and all(map(literal, node.values))
        if isinstance(node, ast.Call):  # dict(a=1) and dict({'a.b': 1}), as pretty_text writes them
            return (isinstance(node.func, ast.Name) and node.func.id == 'dict' and len(node.args) <= 1
                    and all(map(literal, node.args))
                    and all(k.arg is not None and literal(k.value) for k in node.keywords))
        return False

    for statement in tree.body:
        if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
                and isinstance(statement.targets[0], ast.Name)):
            return f'line {statement.lineno} is {type(statement).__name__.lower()} code, not an assignment of data'
        name = statement.targets[0].id
        if not literal(statement.value):
            return f'line {statement.lineno} ({name} = ...) computes its value instead of stating it'
        if name == '_base_':
            return f'line {statement.lineno} names base config files to read (_base_)'
        if name == 'custom_imports':
            config = _literal_value(statement.value)
            modules = config.get('imports', []) if isinstance(config, dict) else config
            modules = [modules] if isinstance(modules, str) else list(modules or [])
            missing = [m for m in modules if not (isinstance(m, str) and m in sys.modules)]
            if not imports_allowed or missing:
                return (f'line {statement.lineno} makes mmengine import modules '
                        f'{missing or modules} (custom_imports); import them yourself first if you trust them')
    return None


def _literal_value(node: ast.AST) -> Any:
    """The value of a node that `_config_code_problem` accepted (`dict(a=1)` becomes {'a': 1})."""
    if isinstance(node, ast.Call):
        value = dict(_literal_value(node.args[0])) if node.args else {}
        value.update({k.arg: _literal_value(k.value) for k in node.keywords})
        return value
    if isinstance(node, ast.Dict):
        return {_literal_value(k): _literal_value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        return [_literal_value(e) for e in node.elts]
    return ast.literal_eval(node)


def _check_config_texts(checkpoint: Any, source: str) -> None:
    for keys in _CONFIG_TEXTS:
        node = checkpoint
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue
        where = _path_text(keys)
        if type(node) is not str:
            raise UnsafeCheckpointError(f'{source} was refused: {where} is {_describe(node)}, not a config text '
                                        f'({_README})')
        # `meta['config']` is run by every Runner.resume; the others only by an inferencer given no config.
        problem = _config_code_problem(node, imports_allowed=keys != ('meta', 'config'))
        if problem:
            raise UnsafeCheckpointError(
                f'{source} was refused: {where} is a config text that mmengine runs as Python, and {problem}. '
                f'Config texts that mmengine saves only assign data ({_README})')


def check_checkpoint(checkpoint: Any, source: str, mmengine: bool = False) -> None:
    """Raises `UnsafeCheckpointError` unless `checkpoint` (a loaded object) is plain data.

    Plain data: None, bool, int, float, complex, str, bytes; dict, list, tuple, set, `OrderedDict` (with a state
    dict's `_metadata`), `Counter`, `torch.Size`; tensors without instance attributes or hooks; torch devices
    and dtypes. With `mmengine=True` also HistoryBuffers with exactly their own attributes and numpy arrays and
    scalars of the admitted dtypes (the HistoryBuffers get their class back). Config texts that mmengine
    would run must only assign data. Shared and cyclic references are checked once.
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
            raise UnsafeCheckpointError(f'{source} was refused: it holds {problem} at {_path_text(path)}; '
                                        f'checkpoints are read as plain data only ({_README})')
    _check_config_texts(checkpoint, source)
    for buffer in buffers:
        buffer.__class__ = HistoryBuffer


# ---------------------------------------------------------------------------------------------------------
# Loaders.

_WEIGHTS_HINT = ('Backbone weights are read as tensors and plain containers only; to use the weights of an mmengine '
                 'training checkpoint, write them once with `python tools/convert_checkpoint.py {source} '
                 'OUT.safetensors`')


def _torch_load(source: str, map_location: Any, hint: str = '') -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError) as error:  # a malformed pickle's calls
        raise UnsafeCheckpointError(f'{source} was refused while unpickling: {type(error).__name__}: {error} '
                                    f'(checkpoints are read as data, never as code; {_README})') from None
    except pickle.UnpicklingError as error:
        detail = str(error).split('WeightsUnpickler error: ', 1)[-1]
        for advice in (' Please use `torch.serialization', ' Check the documentation of torch.load'):
            detail = detail.split(advice, 1)[0]  # torch's advice (allow-list it, or weights_only=False) is not ours
        # torch names globals as `GLOBAL module.name`, builtins without their module.
        needs_mmengine = any(f'GLOBAL {name.replace("builtins.", "")} ' in detail for name in MMENGINE_GLOBAL_NAMES)
        raise UnsafeCheckpointError(
            f'{source} was refused while unpickling: {detail.strip()} '
            + (hint.format(source=source) + ' ' if hint and needs_mmengine else '')
            + f'(checkpoints are read as data, never as code; {_README})') from None


def _load_safetensors(source: str, map_location: Any) -> Dict[str, torch.Tensor]:
    try:
        from safetensors.torch import load_file
    except ImportError as error:
        raise ImportError(f'{source}: reading .safetensors files needs the safetensors package '
                          '(pip install safetensors)') from error
    device = str(map_location) if isinstance(map_location, (str, torch.device)) else 'cpu'
    return load_file(source, device=device)


def load_weights(filename: Union[str, os.PathLike], map_location: Any = 'cpu') -> Any:
    """Reads backbone weights with the strictest setting: a `.safetensors` file, or a torch file read with
    torch's own weights-only allow-list and nothing added, holding tensors and plain containers only.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: anything else in the file (the message says what and where).
    """
    return _load_checked(filename, map_location, mmengine=False)


def load_mmengine_checkpoint(filename: Union[str, os.PathLike], map_location: Any = None) -> Any:
    """Reads an mmengine checkpoint (training state included) as data; `.safetensors` files too.

    This is what `import maformer_mm` makes mmengine use for local files (resume, `load_from`, tools/test.py);
    in your own code, call it rather than `torch.load` for a checkpoint from tools/train.py.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file holds something that is not plain data (the message says what and where).
    """
    return _load_checked(filename, map_location, mmengine=True)


def _load_checked(filename: Union[str, os.PathLike], map_location: Any, mmengine: bool) -> Any:
    """Reads a `.safetensors` or torch file (the mmengine types admitted for this load only when `mmengine`),
    then checks what it read."""
    source = os.fspath(filename)
    if not osp.isfile(source):
        raise FileNotFoundError(f'checkpoint not found: {source}')
    if source.endswith('.safetensors'):
        checkpoint = _load_safetensors(source, map_location)
    elif mmengine:
        with mmengine_checkpoint_globals():
            checkpoint = _torch_load(source, map_location)
    else:
        checkpoint = _torch_load(source, map_location, hint=_WEIGHTS_HINT)
    check_checkpoint(checkpoint, source, mmengine=mmengine)
    return checkpoint


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's loader for local paths (the '' scheme of `CheckpointLoader`), reading as data."""
    return load_mmengine_checkpoint(osp.expanduser(filename), map_location)


def install_mmengine_loader() -> None:
    """Makes mmengine read local checkpoint files with `load_from_local` (idempotent)."""
    from mmengine.runner import CheckpointLoader
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local, force=True)
