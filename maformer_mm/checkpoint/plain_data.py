"""The check after every load: a loaded checkpoint is plain data, or it is refused naming what was found and where.

`resolve` walks what the unpickler returned, once per object (shared and cyclic references included), and

- refuses anything that is not plain data: functions and classes anywhere (containers nested in any order, dict
  keys, sets), instance attributes on a `Counter`, an `OrderedDict` or a tensor (where `copy.deepcopy` in resume
  would call them), a state dict's `_metadata` that asks for more than a version (torch reads
  `assign_to_params_buffers` from it, which would make a loaded tensor the module's own), a HistoryBuffer with
  other attributes than its own, containers nested deeper than any checkpoint nests them;
- replaces numpy's stand-ins (`numpy_state`) by the arrays and dtypes made from their checked state; an array
  whose state was never set, or one inside a set or as a dict key, is refused;
- gives HistoryBuffers their class back, once the whole file has passed.

Plain data: None, bool, int, float, complex, str, bytes, bytearray; dict, list, tuple, set, `OrderedDict`,
`Counter`, `torch.Size`; tensors and storages; torch devices, dtypes, layouts, memory formats and qschemes. With
`mmengine=True` also HistoryBuffers and numpy arrays and scalars of the admitted dtypes.
"""

import types
from collections import Counter, OrderedDict
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

from .errors import refusal
from .mmengine_state import HISTORY_STATE, HistoryBufferState
from .numpy_state import ADMITTED_DTYPES, PendingArray, PendingDtype

__all__ = ['resolve', 'MAX_DEPTH']

MAX_DEPTH = 100  # checkpoints nest about 8 deep (optimizer state, message hub); torch builds any depth
_PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, bytearray})
_TORCH_VALUES = frozenset({torch.device, torch.dtype, torch.layout, torch.memory_format, torch.qscheme})
_MAPPINGS = frozenset({dict, OrderedDict, Counter})
_NUMPY_SCALARS = frozenset(d.type for d in ADMITTED_DTYPES)
_STORAGES = (torch.UntypedStorage, torch.TypedStorage)


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


def _article(noun: str) -> str:
    return f'{"an" if noun[:1].lower() in "aeiou" else "a"} {noun}'


def describe(value: Any) -> str:
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


def _metadata_problem(metadata: Any) -> str:
    """What is wrong with a state dict's `_metadata` (torch writes {prefix: {'version': N}}), or ''."""
    if type(metadata) not in (dict, OrderedDict):
        return f'a state dict whose _metadata is {describe(metadata)}'
    for prefix, entry in metadata.items():
        if type(prefix) is not str or type(entry) not in (dict, OrderedDict):
            return 'a state dict whose _metadata has an entry that is not {prefix: {...}}'
        extra = sorted(map(str, set(entry) - {'version'}))
        if extra:
            return f'a state dict whose _metadata for {prefix!r} asks for {extra} (torch writes only a version)'
        if type(entry.get('version')) not in (int, type(None)):
            return f'a state dict whose _metadata for {prefix!r} has a version that is not an int'
    return ''


def _array_problem(value: Any) -> str:
    dtype = value.dtype
    if dtype not in ADMITTED_DTYPES or dtype.fields is not None or dtype.metadata is not None:
        return f'a numpy {"array" if isinstance(value, np.ndarray) else "scalar"} of dtype {dtype}'
    return ''


def _history_problem(state: Dict[str, Any]) -> str:
    if set(state) != HISTORY_STATE:
        return f'a HistoryBuffer with the attributes {sorted(state)} (expected {sorted(HISTORY_STATE)})'
    logs, counts = state['_log_history'], state['_count_history']
    if type(state['max_length']) is not int or type(logs) is not np.ndarray or type(counts) is not np.ndarray:
        return 'a HistoryBuffer whose max_length is not an int or whose histories are not numpy arrays'
    if logs.ndim != 1 or logs.shape != counts.shape:
        return f'a HistoryBuffer with histories of shapes {logs.shape} and {counts.shape}'
    return ''


class _Walk:
    def __init__(self, source: str, mmengine: bool) -> None:
        self.source = source
        self.mmengine = mmengine
        # id of a visited object -> (the object, what replaces it): holding the object keeps its id from being reused
        self.done: Dict[int, Tuple[Any, Any]] = {}
        self.buffers: List[HistoryBufferState] = []

    def refuse(self, problem: str, path: Tuple) -> Exception:
        return refusal(self.source, f'it holds {problem} at {_path_text(path)}, which is not plain data')

    def visit(self, value: Any, path: Tuple, depth: int) -> Any:
        kind = type(value)
        if kind in _PLAIN or kind in _TORCH_VALUES:
            return value
        if id(value) in self.done:
            return self.done[id(value)][1]
        if depth > MAX_DEPTH:
            raise self.refuse(f'containers nested more than {MAX_DEPTH} deep', path)
        if kind in _MAPPINGS:
            self.done[id(value)] = (value, value)
            attributes = getattr(value, '__dict__', {})
            extra = set(attributes) - ({'_metadata'} if kind is OrderedDict else set())
            if extra:
                raise self.refuse(f'{_article(kind.__qualname__)} with the instance attributes {sorted(extra)}', path)
            if '_metadata' in attributes:
                problem = _metadata_problem(attributes['_metadata'])
                if problem:
                    raise self.refuse(problem, path + (_Attr('_metadata'),))
                self.visit(attributes['_metadata'], path + (_Attr('_metadata'),), depth + 1)
            for key, item in list(value.items()):
                if self.visit(key, path + ('<key>',), depth + 1) is not key:
                    raise self.refuse('a numpy value as a dict key', path)
                resolved = self.visit(item, path + (key,), depth + 1)
                if resolved is not item:
                    value[key] = resolved
            return value
        if kind is list:
            self.done[id(value)] = (value, value)
            for index, item in enumerate(value):
                resolved = self.visit(item, path + (index,), depth + 1)
                if resolved is not item:
                    value[index] = resolved
            return value
        if kind in (tuple, torch.Size):
            items = [self.visit(item, path + (i,), depth + 1) for i, item in enumerate(value)]
            changed = any(a is not b for a, b in zip(items, value))
            self.done[id(value)] = (value, tuple(items) if changed else value)  # a torch.Size holds ints only
            return self.done[id(value)][1]
        if kind is set:
            self.done[id(value)] = (value, value)
            for index, item in enumerate(value):  # a set has no order: the index is where iteration met it
                if self.visit(item, path + (index,), depth + 1) is not item:
                    raise self.refuse('a numpy value in a set', path)
            return value
        if isinstance(value, torch.Tensor):
            hooks = value._backward_hooks  # a Parameter's third rebuild argument: the file chooses what it is
            no_hooks = hooks is None or (type(hooks) in (dict, OrderedDict) and not hooks)
            if kind not in (torch.Tensor, torch.nn.Parameter) or value.__dict__ or not no_hooks:
                raise self.refuse('a tensor with instance attributes or backward hooks', path)
            self.done[id(value)] = (value, value)
            return value
        if isinstance(value, _STORAGES):
            return value
        if self.mmengine and kind is PendingArray:
            if value.array is None:
                raise self.refuse('a numpy array whose data was never set', path)
            self.done[id(value)] = (value, value.array)
            return value.array
        if self.mmengine and kind is PendingDtype:
            self.done[id(value)] = (value, value.resolved())
            return self.done[id(value)][1]
        if self.mmengine and kind in _NUMPY_SCALARS:
            problem = _array_problem(value)
            if problem:
                raise self.refuse(problem, path)
            return value
        if self.mmengine and kind is HistoryBufferState:
            self.done[id(value)] = (value, value)
            state = value.__dict__
            for name in list(state):
                state[name] = self.visit(state[name], path + (_Attr(name),), depth + 1)
            problem = _history_problem(state)
            if problem:
                raise self.refuse(problem, path)
            self.buffers.append(value)
            return value
        problem = describe(value)
        if not self.mmengine and kind in (PendingArray, PendingDtype, HistoryBufferState, *_NUMPY_SCALARS):
            problem = 'mmengine training state (backbone weights are tensors and plain containers)'
        raise self.refuse(problem, path)


def resolve(checkpoint: Any, source: str, mmengine: bool = False) -> Any:
    """`checkpoint` (as the unpickler returned it) checked and with numpy's stand-ins replaced by their values.

    Raises:
        UnsafeCheckpointError: it holds something that is not plain data (the message names the file, what was
            found and where).
    """
    walk = _Walk(source, mmengine)
    try:
        result = walk.visit(checkpoint, (), 0)
    except RecursionError:
        raise refusal(source, 'it nests containers deeper than Python can walk') from None
    for buffer in walk.buffers:
        buffer.__class__ = HistoryBuffer
    return result
