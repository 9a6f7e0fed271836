"""What an mmengine training checkpoint pickles beyond tensors and plain containers, and the stand-ins it is read with.

mmengine 0.10.7 writes its message hub into every training checkpoint: `HistoryBuffer` objects (numpy arrays of
logged values and counts) and runtime info that holds the metrics' numpy scalars. Each pickled name is bound to a
stand-in that checks what it builds, never to a function that can return arbitrary objects:

- `builtins.getattr` -> `history_buffer_method`: a HistoryBuffer pickles its statistics methods as
  `getattr(HistoryBuffer, 'mean')` (protocol 2 writes nested names that way); only those four lookups are answered.
- `HistoryBuffer` -> `HistoryBufferState`, whose `__setstate__` checks the state, takes it once, and never writes
  mmengine's class-wide statistics table; instances get their real class back after the check of the whole file.
- numpy's names -> `numpy_state`'s stand-ins (one BUILD each; arrays made from checked state).
"""

import pickle
from typing import Any, Callable, Dict

from mmengine.logging import HistoryBuffer

from .numpy_state import numpy_names

__all__ = ['HISTORY_STATE', 'HistoryBufferState', 'history_buffer_method', 'mmengine_names']

STATISTICS = ('min', 'max', 'current', 'mean')  # what HistoryBuffer registers itself
HISTORY_STATE = frozenset({'max_length', '_log_history', '_count_history'})


def _shown(value: Any) -> str:
    if type(value) in (type(None), bool, int, float, str):
        return repr(value)[:40]
    if isinstance(value, type):
        return f'the class {value.__module__}.{value.__qualname__}'
    if callable(value):
        return f'the function {getattr(value, "__module__", None) or "?"}.{getattr(value, "__qualname__", "?")}'
    return f'a {type(value).__module__}.{type(value).__qualname__}'


class HistoryBufferState(HistoryBuffer):
    """mmengine's HistoryBuffer while a checkpoint loads: takes one checked state, never touches the class."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # only REDUCE calls a class; mmengine pickles by NEWOBJ
        raise pickle.UnpicklingError('the checkpoint calls HistoryBuffer(...); mmengine stores it by its state')

    def __setstate__(self, state: Any) -> None:
        if self.__dict__:
            raise pickle.UnpicklingError('the checkpoint sets the state of one HistoryBuffer twice')
        if type(state) is not dict:
            raise pickle.UnpicklingError(f'HistoryBuffer state is {_shown(state)}, not a dict')
        methods = state.get('statistics_methods', {})
        unexpected = sorted(map(str, set(state) - HISTORY_STATE - {'statistics_methods'}))
        if unexpected or type(methods) is not dict:
            raise pickle.UnpicklingError(
                f'HistoryBuffer state with unexpected entries {unexpected or "statistics_methods"}'
            )
        for name, method in methods.items():
            if name not in STATISTICS or method is not getattr(HistoryBuffer, name):
                raise pickle.UnpicklingError(
                    f'HistoryBuffer statistics method {_shown(name)} bound to {_shown(method)}; only '
                    f'HistoryBuffer.{{{",".join(STATISTICS)}}}'
                )
        self.__dict__.update({k: v for k, v in state.items() if k != 'statistics_methods'})


def history_buffer_method(*args: Any) -> Callable:
    """Bound to `builtins.getattr`: the only lookups mmengine checkpoints hold are HistoryBuffer's statistics."""
    if len(args) == 2 and args[0] is HistoryBufferState and type(args[1]) is str and args[1] in STATISTICS:
        return getattr(HistoryBuffer, args[1])
    raise pickle.UnpicklingError(
        f'the checkpoint calls getattr({", ".join(map(_shown, args))}); the only attribute lookups allowed are '
        f'HistoryBuffer.{{{",".join(STATISTICS)}}}'
    )


def mmengine_names() -> Dict[str, Any]:
    """Pickled name -> stand-in, for mmengine training checkpoints."""
    names = {
        f'{HistoryBuffer.__module__}.{HistoryBuffer.__qualname__}': HistoryBufferState,
        'builtins.getattr': history_buffer_method,
    }
    names.update(numpy_names())
    return names
