"""numpy values inside mmengine checkpoints, rebuilt by this module alone: never by numpy's own unpickling code.

mmengine's message hub stores numpy arrays (HistoryBuffer logs) and the metrics' numpy scalars (`best_score`, an
`IoUMetric` float32). numpy pickles them as calls and state:

    array   _reconstruct(numpy.ndarray, (0,), b'b')  then BUILD (1, shape, dtype, fortran, data)
    scalar  scalar(dtype, data)
    dtype   numpy.dtype('f8', False, True)           then BUILD (3, '<', None, None, None, -1, -1, 0)

(`_reconstruct` and `scalar` of `numpy._core.multiarray`, `numpy.core.multiarray` in numpy 1.x)

Admitting numpy's own `ndarray` or dtype classes lets a file BUILD the same object again through the pickle memo:
`ndarray.__setstate__` then frees the buffer that a tensor made by torch's allowed
`_rebuild_device_tensor_from_numpy` still points at (a use-after-free and a heap write), and a second BUILD of a dtype
changes the item size of arrays already made with it. So the names are bound to stand-ins of this module:

- `PendingDtype` (for `numpy.dtype`) and `PendingArray` (for `numpy.ndarray`) are plain Python objects that accept
  exactly one BUILD, check its state and keep it; a second BUILD is refused;
- the real array is made from the checked state as a new array that owns a copy of the data, and every dtype is
  numpy's own descriptor for its name, after the load (`plain_data.resolve`), so nothing the unpickler can reach
  is a numpy object;
- a `PendingArray` handed to a function during the load (e.g. `_rebuild_device_tensor_from_numpy`) is no array:
  torch refuses it, so no tensor ever shares memory with anything from the file.

Admitted dtypes: booleans, integers, unsigned integers, floats and complex numbers of numpy's standard sizes, in
either byte order; never object, string, void, structured, sub-array or datetime dtypes, and never dtype metadata.
"""

import pickle
from typing import Any, Dict, Tuple

import numpy as np

__all__ = ['ADMITTED_DTYPES', 'PendingDtype', 'PendingArray', 'reconstruct', 'scalar', 'numpy_names']

ADMITTED_DTYPES: Tuple[np.dtype, ...] = tuple(
    np.dtype(name)
    for name in (
        'bool',
        'int8',
        'int16',
        'int32',
        'int64',
        'uint8',
        'uint16',
        'uint32',
        'uint64',
        'float16',
        'float32',
        'float64',
        'complex64',
        'complex128',
    )
)
_CODES: Dict[str, np.dtype] = {d.str[1:]: d for d in ADMITTED_DTYPES}  # 'f8' -> float64, 'b1' -> bool
_BYTE_ORDERS = frozenset('<>|=')
_MAX_DIMS = 32  # numpy's own limit is 64; checkpoints hold 1-D logs


def _shown(value: Any) -> str:
    """A short description that runs no code of the value's (no repr of unknown types)."""
    if type(value) in (type(None), bool, int, float, str, bytes):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + '...'
    if type(value) is tuple:
        return f'a tuple of {len(value)} entries'
    return f'a {type(value).__module__}.{type(value).__qualname__}'


class PendingDtype:
    """Bound to `numpy.dtype` while a checkpoint loads: `numpy.dtype(code, False, True)` and one BUILD of its state.

    `dtype` is numpy's own descriptor for the checked code and byte order, set by the BUILD (numpy writes one).
    """

    __slots__ = ('code', 'dtype')

    def __new__(cls, *args: Any) -> 'PendingDtype':  # REDUCE calls the class, NEWOBJ only `__new__`: check here
        if not (
            1 <= len(args) <= 3
            and type(args[0]) is str
            and args[0] in _CODES
            and all(type(a) is bool for a in args[1:])
            and (len(args) < 2 or args[1] is False)  # align
        ):
            raise pickle.UnpicklingError(
                f'the checkpoint builds numpy.dtype({", ".join(map(_shown, args))}); admitted: '
                f'{", ".join(d.name for d in ADMITTED_DTYPES)}'
            )
        pending = object.__new__(cls)
        pending.code = args[0]
        pending.dtype = None
        return pending

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if self.dtype is not None:
            raise pickle.UnpicklingError(f'the checkpoint sets the state of one numpy dtype ({self.code}) twice')
        # (version, byte order, subarray, names, fields, elsize, alignment, flags): numpy 1.x and 2.x write 8 entries
        simple = (None, None, None, -1, -1, 0)
        if type(state) is not tuple or len(state) != 8 or state[0] not in (3, 4) or state[2:] != simple:
            raise pickle.UnpicklingError(
                f'the checkpoint gives numpy dtype {self.code} the state {_shown(state)}: only the state of a simple '
                'numeric dtype (no fields, sub-arrays or metadata) is admitted'
            )
        order = state[1]
        if type(order) is not str or order not in _BYTE_ORDERS or (order == '|') != (_CODES[self.code].itemsize == 1):
            raise pickle.UnpicklingError(f'the checkpoint gives numpy dtype {self.code} the byte order {_shown(order)}')
        canonical = _CODES[self.code]
        self.dtype = canonical if order in '|=' else canonical.newbyteorder(order)

    def resolved(self) -> np.dtype:
        """numpy's descriptor (a dtype whose state was never set is numpy's default for its code)."""
        return self.dtype if self.dtype is not None else _CODES[self.code]

    def __reduce__(self) -> Any:  # never pickled or copied as itself
        raise TypeError('a pending numpy dtype is not data')


class PendingArray:
    """Bound to `numpy.ndarray` while a checkpoint loads: takes exactly one BUILD, checks it and makes the array.

    `array` is a new C- or Fortran-ordered array that owns a copy of the data; None until the BUILD.
    """

    __slots__ = ('array',)

    def __new__(cls, *args: Any) -> 'PendingArray':  # NEWOBJ, and _reconstruct below
        if args:
            raise pickle.UnpicklingError(f'the checkpoint creates a numpy array from ({", ".join(map(_shown, args))})')
        pending = object.__new__(cls)
        pending.array = None
        return pending

    def __init__(self, *args: Any) -> None:  # REDUCE calls the class; NEWOBJ does not
        pass

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise pickle.UnpicklingError('the checkpoint sets the state of one numpy array twice')
        if type(state) is not tuple or len(state) != 5 or state[0] != 1 or type(state[0]) is not int:
            raise pickle.UnpicklingError(
                f'the checkpoint gives a numpy array the state {_shown(state)} (numpy writes (1, shape, dtype, '
                'fortran, data))'
            )
        _, shape, dtype, fortran, data = state
        if (
            type(shape) is not tuple
            or len(shape) > _MAX_DIMS
            or not all(type(n) is int and n >= 0 for n in shape)
            or type(dtype) is not PendingDtype
            or type(fortran) is not bool
            or type(data) is not bytes
        ):
            raise pickle.UnpicklingError(
                f'the checkpoint gives a numpy array the state ({", ".join(map(_shown, state))}): expected a shape '
                'of non-negative ints, an admitted dtype, a bool and bytes'
            )
        resolved = dtype.resolved()
        count = 1
        for n in shape:
            count *= n
        if len(data) != count * resolved.itemsize:
            raise pickle.UnpicklingError(
                f'the checkpoint gives a numpy array of shape {shape} and dtype {resolved} {len(data)} bytes of data '
                f'(it needs {count * resolved.itemsize})'
            )
        if resolved.kind == 'b' and data.translate(None, b'\x00\x01'):
            raise pickle.UnpicklingError('the checkpoint gives a numpy bool array bytes other than 0 and 1')
        flat = np.frombuffer(data, dtype=resolved, count=count)  # reads `data`, a bytes object nothing can change
        self.array = flat.reshape(shape, order='F' if fortran else 'C').copy(order='F' if fortran else 'C')

    def __reduce__(self) -> Any:
        raise TypeError('a pending numpy array is not data')


def reconstruct(*args: Any) -> PendingArray:
    """Bound to numpy's `_reconstruct`: numpy writes `_reconstruct(ndarray, (0,), b'b')`, an empty array to fill."""
    if not (
        len(args) == 3
        and args[0] is PendingArray
        and type(args[1]) is tuple
        and args[1] == (0,)
        and type(args[2]) is bytes
        and args[2] == b'b'
    ):
        raise pickle.UnpicklingError(f'the checkpoint calls numpy _reconstruct({", ".join(map(_shown, args))})')
    return PendingArray()


def scalar(*args: Any) -> np.generic:
    """Bound to numpy's `scalar(dtype, data)`, how numpy pickles a scalar: a new scalar of numpy's descriptor."""
    if len(args) != 2 or type(args[0]) is not PendingDtype or type(args[1]) is not bytes:
        raise pickle.UnpicklingError(f'the checkpoint builds a numpy scalar from ({", ".join(map(_shown, args))})')
    dtype = args[0].resolved()
    if len(args[1]) != dtype.itemsize or (dtype.kind == 'b' and args[1] not in (b'\x00', b'\x01')):
        raise pickle.UnpicklingError(
            f'the checkpoint builds a numpy {dtype} scalar from {len(args[1])} bytes (it needs {dtype.itemsize})'
        )
    return np.frombuffer(args[1], dtype=dtype, count=1)[0]  # a scalar owns its value


def numpy_names() -> Dict[str, Any]:
    """The pickled numpy names of mmengine checkpoints (numpy 2 and numpy 1 spellings) and their stand-ins."""
    names: Dict[str, Any] = {'numpy.dtype': PendingDtype, 'numpy.ndarray': PendingArray}
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        names[f'{module}._reconstruct'] = reconstruct
        names[f'{module}.scalar'] = scalar
    return names
