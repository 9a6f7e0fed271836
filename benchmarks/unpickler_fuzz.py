"""Property-based fuzzing of the checkpoint reader: random pickle streams made of the opcodes and globals it admits.

Each stream is a protocol-2 pickle assembled by hypothesis from fragments: every opcode torch's weights-only
unpickler implements (MARK, TUPLE*, APPEND(S), SETITEM(S), REDUCE, NEWOBJ, BUILD, BINPUT/BINGET memo reuse...),
literals, GLOBALs of every name the mmengine setting admits (HistoryBuffer, getattr, numpy's dtype, ndarray,
_reconstruct and scalar) and of torch's own list (OrderedDict, Counter, the tensor rebuild functions, storages,
bytearray, set...), a few names nothing admits, and ready-made pieces real files hold (a numpy array, dtype or
scalar, a HistoryBuffer, a tensor on a storage record, a state dict's `_metadata`). It is written as `data.pkl` into
torch's zip layout beside one 256-byte storage record and read by both loaders (`load_weights`,
`load_mmengine_checkpoint`). The property: every load either returns plain data, arrays that own their memory and
tensors whose memory is no array's, all readable, or raises the loader's own `UnsafeCheckpointError`.

    .venv/bin/python -m benchmarks.unpickler_fuzz --count 100000       # about 20 minutes on 2 cores
    .venv/bin/python -m benchmarks.unpickler_fuzz --count 100000 --out benchmarks/unpickler_fuzz.json

The test suite runs a derandomised slice (tests/test_security/test_fuzz.py).
"""

import argparse
import json
import os
import resource
import struct
import tempfile
import time
import zipfile
from collections import Counter, OrderedDict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from mmengine.logging import HistoryBuffer

from maformer_mm.checkpoint.mmengine_state import HISTORY_STATE
from maformer_mm.checkpoint.numpy_state import ADMITTED_DTYPES
from maformer_mm.checkpoint.safe_load import UnsafeCheckpointError, load_mmengine_checkpoint, load_weights

__all__ = ['streams', 'check_load', 'fuzz', 'main']


# ----------------------------------------------------------------------------------------------------------------
# Pickle fragments.


def _glob(module: str, name: str) -> bytes:
    return b'c' + f'{module}\n{name}\n'.encode()


def _text(value: str) -> bytes:
    data = value.encode('utf-8', 'surrogatepass')
    return b'X' + struct.pack('<I', len(data)) + data


def _int(value: int) -> bytes:
    return b'J' + struct.pack('<i', value)


def _bytes(data: bytes) -> bytes:
    return _glob('_codecs', 'encode') + b'(' + _text(data.decode('latin1')) + _text('latin1') + b'tR'


def _dtype(code: str, order: str = '<') -> bytes:
    state = b'(' + _int(3) + _text(order) + b'NNN' + _int(-1) + _int(-1) + _int(0) + b't'
    return _glob('numpy', 'dtype') + b'(' + _text(code) + b'\x89\x88tR' + state + b'b'


def _array(count: int, code: str = 'f8', size: int = 8) -> bytes:
    new = _glob('numpy._core.multiarray', '_reconstruct') + b'(' + _glob('numpy', 'ndarray') + b'(' + _int(0)
    new += b't' + _bytes(b'b') + b'tR'
    state = b'(' + _int(1) + b'(' + _int(count) + b't' + _dtype(code) + b'\x89' + _bytes(bytes(size * count)) + b't'
    return new + state + b'b'


def _storage() -> bytes:
    """The persistent id of the file's one storage record: 64 float32 values (data/0)."""
    pid = b'(' + _text('storage') + _glob('torch', 'FloatStorage') + _text('0') + _text('cpu') + _int(64) + b't'
    return pid + b'Q'


def _tensor(offset: int = 0, size: int = 8, stride: int = 1) -> bytes:
    ordered = _glob('collections', 'OrderedDict') + b')R'
    args = _storage() + _int(offset) + b'(' + _int(size) + b't' + b'(' + _int(stride) + b't' + b'\x89' + ordered
    return _glob('torch._utils', '_rebuild_tensor_v2') + b'(' + args + b'tR'


def _history_buffer() -> bytes:
    methods = b'}(' + _text('mean') + _glob('builtins', 'getattr') + b'(' + _glob(*_HB) + _text('mean') + b'tRu'
    state = b'}(' + _text('max_length') + _int(10) + _text('_log_history') + _array(2) + _text('_count_history')
    state += _array(2, 'i8') + _text('statistics_methods') + methods + b'u'
    return _glob(*_HB) + b')\x81' + state + b'b'


_HB = ('mmengine.logging.history_buffer', 'HistoryBuffer')
_ADMITTED_GLOBALS = [
    _HB,
    ('builtins', 'getattr'),
    ('numpy', 'dtype'),
    ('numpy', 'ndarray'),
    ('numpy._core.multiarray', '_reconstruct'),
    ('numpy._core.multiarray', 'scalar'),
    ('numpy.core.multiarray', '_reconstruct'),
    ('collections', 'OrderedDict'),
    ('collections', 'Counter'),
    ('torch', 'Size'),
    ('torch', 'Tensor'),
    ('torch', 'device'),
    ('torch', 'float32'),
    ('torch', 'FloatStorage'),
    ('torch.storage', 'UntypedStorage'),
    ('torch.nn.parameter', 'Parameter'),
    ('torch._utils', '_rebuild_tensor_v2'),
    ('torch._utils', '_rebuild_parameter'),
    ('torch._utils', '_rebuild_device_tensor_from_numpy'),
    ('torch._utils', '_rebuild_device_tensor_from_cpu_tensor'),
    ('torch._utils', '_rebuild_meta_tensor_no_storage'),
    ('torch._tensor', '_rebuild_from_type_v2'),
    ('builtins', 'set'),
    ('builtins', 'bytearray'),
    ('builtins', 'complex'),
    ('_codecs', 'encode'),
]
_REFUSED_GLOBALS = [
    ('builtins', 'exec'),
    ('os', 'system'),
    ('numpy._core.numeric', '_frombuffer'),
    ('copyreg', '_reconstructor'),
]
_OPCODES = [
    b'(',  # MARK
    b't',  # TUPLE
    b'\x85',  # TUPLE1
    b'\x86',  # TUPLE2
    b'\x87',  # TUPLE3
    b')',  # EMPTY_TUPLE
    b']',  # EMPTY_LIST
    b'}',  # EMPTY_DICT
    b'\x8f',  # EMPTY_SET
    b'a',  # APPEND
    b'e',  # APPENDS
    b's',  # SETITEM
    b'u',  # SETITEMS
    b'R',  # REDUCE
    b'\x81',  # NEWOBJ
    b'b',  # BUILD
    b'N',  # NONE
    b'\x88',  # NEWTRUE
    b'\x89',  # NEWFALSE
    b'Q',  # BINPERSID
]
_WORDS = [
    'f8',
    'f4',
    'b1',
    'i8',
    'O8',
    'U3',
    'V8',
    '<',
    '>',
    '|',
    'latin1',
    'cpu',
    'meta',
    'storage',
    '0',
    'version',
    '_metadata',
    'assign_to_params_buffers',
    'statistics_methods',
    'mean',
    'max_length',
    '_log_history',
    '_count_history',
    '__setstate__',
    '__dict__',
    '__reduce_ex__',
    'exec',
    '',
    'state_dict',
]
_PIECES = [
    _dtype('f8'),
    _dtype('f4'),
    _dtype('b1', '|'),
    _dtype('O8', '|'),
    _array(4),
    _array(3, 'f4', 4),
    _array(2, 'b1', 1),
    _glob('numpy._core.multiarray', 'scalar') + b'(' + _dtype('f4') + _bytes(b'\x00\x00\xc0?') + b'tR',
    _history_buffer(),
    _tensor(),
    _tensor(60, 8, 1),
    _tensor(0, 64, 1),
    _storage(),
    _glob('collections', 'OrderedDict') + b')R',
    b'}' + _text('') + b'}' + _text('version') + _int(1) + b's' + b's',
    b'}' + _text('') + b'}' + _text('assign_to_params_buffers') + b'\x88s' + b's',
    _bytes(bytes(16)),
]


def _array_state(count: int, code: str = 'f8', size: int = 8) -> bytes:
    return b'(' + _int(1) + b'(' + _int(count) + b't' + _dtype(code) + b'\x89' + _bytes(bytes(size * count)) + b't'


def _atoms() -> st.SearchStrategy:
    """Fragments that push one value: literals, memo reads, GLOBALs and the pieces real files hold."""
    return st.one_of(
        st.sampled_from(_PIECES + [_array_state(1), _array_state(512), b'N', b'\x88', b'\x89', b')', b']', b'}']),
        st.sampled_from(_ADMITTED_GLOBALS + _REFUSED_GLOBALS).map(lambda g: _glob(*g)),
        st.sampled_from(_WORDS).map(_text),
        st.integers(-3, 4096).map(_int),
        st.integers(0, 7).map(lambda i: b'h' + bytes([i])),  # BINGET
        st.floats(allow_nan=True, allow_infinity=True).map(lambda f: b'G' + struct.pack('>d', f)),
    )


def _joined(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(children, max_size=4).map(b''.join)


def _call(function: tuple, *args: st.SearchStrategy) -> st.SearchStrategy:
    """`function(args...)` by REDUCE, with each argument drawn from its own strategy."""
    return st.tuples(*args).map(lambda values: _glob(*function) + b'(' + b''.join(values) + b'tR')


def _composites(children: st.SearchStrategy) -> st.SearchStrategy:
    """Fragments that combine values into one: containers, memo writes, BUILD and NEWOBJ of any value, and calls of
    each admitted function with arguments of the kinds it takes (or any value)."""
    tuple_ = _joined(children).map(lambda items: b'(' + items + b't')
    dtypes = st.sampled_from([_glob('torch', 'float32'), _glob('torch', 'int64'), _dtype('f4')]) | children
    flags = st.sampled_from([b'\x88', b'\x89']) | children
    ints = st.integers(-2, 80).map(_int) | children
    shapes = st.lists(st.integers(0, 70).map(_int), max_size=3).map(lambda v: b'(' + b''.join(v) + b't') | children
    ordered = st.just(_glob('collections', 'OrderedDict') + b')R') | children
    memo = [b'h' + bytes([i]) for i in range(8)]
    arrays = st.sampled_from([_array(4), _array(3, 'f4', 4), _array(2, 'b1', 1), *memo]) | children
    return st.one_of(
        tuple_,
        _joined(children).map(lambda items: b'](' + items + b'e'),
        _joined(children).map(lambda items: b'}(' + items + b'u'),
        st.tuples(arrays, st.integers(0, 7)).map(lambda c: c[0] + b'q' + bytes([c[1]])),  # BINPUT
        st.tuples(children, children).map(lambda c: c[0] + c[1] + b'b'),  # BUILD
        st.tuples(children, st.sampled_from([_array_state(1), _array_state(512), b'}'])).map(
            lambda c: c[0] + c[1] + b'b'
        ),
        st.tuples(children, tuple_).map(lambda c: c[0] + c[1] + b'\x81'),  # NEWOBJ
        st.tuples(children, tuple_).map(lambda c: c[0] + c[1] + b'R'),  # REDUCE of any value
        _call(('torch._utils', '_rebuild_device_tensor_from_numpy'), arrays, dtypes, st.just(_text('cpu')), flags),
        _call(
            ('torch._utils', '_rebuild_device_tensor_from_cpu_tensor'), children, dtypes, st.just(_text('cpu')), flags
        ),
        _call(
            ('torch._utils', '_rebuild_tensor_v2'), st.just(_storage()) | children, ints, shapes, shapes, flags, ordered
        ),
        _call(('torch._utils', '_rebuild_parameter'), children, flags, ordered),
        _call(('torch._tensor', '_rebuild_from_type_v2'), children, children, tuple_, children),
        _call(
            ('numpy._core.multiarray', '_reconstruct'), st.just(_glob('numpy', 'ndarray')) | children, shapes, children
        ),
        _call(('numpy._core.multiarray', 'scalar'), dtypes, children),
        _call(('builtins', 'getattr'), children, st.sampled_from(_WORDS).map(_text)),
        _call(('builtins', 'set'), children),
        _call(('builtins', 'bytearray'), children),
        _call(('collections', 'Counter'), children),
    )


def streams() -> st.SearchStrategy:
    """Pickle streams (protocol 2, ending in STOP): half of them a list of well-formed values built recursively
    (so that memo writes, calls and BUILDs meet), half flat sequences of up to 48 fragments, raw opcodes included."""
    values = st.recursive(_atoms(), _composites, max_leaves=24)
    structured = st.lists(values, min_size=1, max_size=8).map(lambda items: b'](' + b''.join(items) + b'e')
    flat = st.lists(st.one_of(st.sampled_from(_OPCODES), _atoms()), min_size=1, max_size=48).map(b''.join)
    return st.one_of(structured, flat).map(lambda body: b'\x80\x02' + body + b'.')


# ----------------------------------------------------------------------------------------------------------------
# Files and the property.


class Archive:
    """Writes a pickle stream as data.pkl of torch's zip layout, beside one storage record (64 float32 values)."""

    def __init__(self, folder: str) -> None:
        template = os.path.join(folder, 'template.pth')
        torch.save({'t': torch.arange(64, dtype=torch.float32)}, template)
        with zipfile.ZipFile(template) as archive:
            self.entries = {name: archive.read(name) for name in archive.namelist()}
        self.pkl = next(name for name in self.entries if name.endswith('/data.pkl'))
        self.path = os.path.join(folder, 'fuzzed.pth')

    def write(self, stream: bytes) -> str:
        with zipfile.ZipFile(self.path, 'w', zipfile.ZIP_STORED) as archive:
            for name, data in self.entries.items():
                archive.writestr(name, stream if name == self.pkl else data)
        return self.path


_PLAIN = (
    type(None),
    bool,
    int,
    float,
    complex,
    str,
    bytes,
    bytearray,
    torch.device,
    torch.dtype,
    torch.layout,
    torch.memory_format,
    torch.qscheme,
)


class PropertyBroken(AssertionError):
    """A load returned something the property excludes, or failed with another error than the loader's own."""


def _ranges_overlap(a: List[tuple], b: List[tuple]) -> bool:
    return any(s1 < e2 and s2 < e1 for s1, e1 in a for s2, e2 in b)


def check_result(result: Any) -> Counter:
    """Raises PropertyBroken unless `result` is plain data, owning arrays and tensors sharing no array's memory;
    returns the kinds of value it holds."""
    kinds: Counter = Counter()
    arrays: List[tuple] = []
    tensors: List[tuple] = []
    stack, seen = [result], set()
    while stack:
        value = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        kind = type(value)
        kinds[kind.__name__] += 1
        if isinstance(value, _PLAIN) and kind in _PLAIN:
            continue
        if kind in (dict, OrderedDict, Counter):
            extra = set(getattr(value, '__dict__', {})) - {'_metadata'}
            metadata = getattr(value, '__dict__', {}).get('_metadata', {})
            if extra or any(set(entry) - {'version'} for entry in metadata.values()):
                raise PropertyBroken(f'a {kind.__name__} with attributes {extra} or metadata {metadata}')
            stack.extend(value.keys())
            stack.extend(value.values())
        elif kind in (list, tuple, set, torch.Size):
            stack.extend(value)
        elif kind in (torch.Tensor, torch.nn.Parameter):
            if value.__dict__:
                raise PropertyBroken('a tensor with attributes')
            if value.device.type == 'cpu' and value.layout == torch.strided and not value.is_quantized:
                float(value.detach().double().sum()) if value.numel() else None  # reads every element
                storage = value.untyped_storage()
                if storage.nbytes():
                    tensors.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes()))
        elif isinstance(value, (torch.UntypedStorage, torch.TypedStorage)):
            continue
        elif kind is np.ndarray:
            if value.base is not None or not value.flags.owndata or value.dtype not in ADMITTED_DTYPES:
                raise PropertyBroken(f'an array that does not own its data, or of dtype {value.dtype}')
            value.sum()
            if value.nbytes:
                arrays.append((value.ctypes.data, value.ctypes.data + value.nbytes))
        elif isinstance(value, np.generic) and value.dtype in ADMITTED_DTYPES:
            continue
        elif kind is np.dtype or isinstance(value, np.dtype):
            if value not in ADMITTED_DTYPES:
                raise PropertyBroken(f'the dtype {value}')
        elif kind is HistoryBuffer:
            if set(vars(value)) != HISTORY_STATE:
                raise PropertyBroken(f'a HistoryBuffer with {sorted(vars(value))}')
            stack.extend(vars(value).values())
        else:
            raise PropertyBroken(f'a {kind.__module__}.{kind.__qualname__}')
    if _ranges_overlap(arrays, tensors):
        raise PropertyBroken('a tensor shares memory with a numpy array')
    return kinds


_NOTED = ('ndarray', 'Tensor', 'Parameter', 'HistoryBuffer', 'float32', 'OrderedDict', 'Counter', 'bytearray')


class _FromNumpyWatch:
    """Counts `torch.from_numpy` calls that return (the one way a tensor can share a numpy array's memory)."""

    def __init__(self) -> None:
        self.calls = 0
        self.original = torch.from_numpy

    def __call__(self, array: Any) -> torch.Tensor:
        tensor = self.original(array)
        self.calls += 1
        return tensor


_WATCH = _FromNumpyWatch()


def check_load(load: Callable[[str], Any], path: str) -> List[str]:
    """['refused'], or ['loaded'] and the notable kinds of value the result holds; raises PropertyBroken for
    anything else, and for a load during which a tensor was made from a numpy array."""
    calls = _WATCH.calls
    try:
        result = load(path)
    except UnsafeCheckpointError:
        return ['refused']
    except Exception as error:  # noqa: BLE001  (the property: no other error type)
        raise PropertyBroken(f'{type(error).__name__}: {error}') from error
    kinds = check_result(result)
    if _WATCH.calls != calls:
        raise PropertyBroken('a tensor was made from a numpy array (torch.from_numpy) during the load')
    return ['loaded'] + [f'loaded with {k}' for k in _NOTED if kinds[k]]


def fuzz(count: int, random_seed: Optional[int] = 0, derandomize: bool = False) -> Dict[str, Any]:
    """Runs `count` streams through both loaders; returns the outcome counts (PropertyBroken propagates)."""
    outcomes: Counter = Counter()
    with tempfile.TemporaryDirectory(
        prefix='maformer_mm_fuzz_', dir='/dev/shm' if os.path.isdir('/dev/shm') else None
    ) as folder:
        archive = Archive(folder)

        @settings(
            max_examples=count,
            deadline=None,
            database=None,
            derandomize=derandomize,
            suppress_health_check=list(HealthCheck),
        )
        @given(streams())
        def run(stream: bytes) -> None:
            path = archive.write(stream)
            for name, load in (('weights', load_weights), ('mmengine', load_mmengine_checkpoint)):
                outcomes.update(f'{name} {outcome}' for outcome in check_load(load, path))

        if random_seed is not None and not derandomize:
            run = seed(random_seed)(run)
        start = time.perf_counter()
        torch.from_numpy = _WATCH
        try:
            run()
        finally:
            torch.from_numpy = _WATCH.original
        outcomes['seconds'] = round(time.perf_counter() - start, 1)
    outcomes['streams'] = outcomes['weights loaded'] + outcomes['weights refused']
    return dict(outcomes)


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--count', type=int, default=100_000, help='streams to generate (default 100000)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, help='write the outcome counts as JSON here')
    parser.add_argument(
        '--memory-gib',
        type=int,
        default=12,
        help='address-space limit of this process, so that a stream asking for a huge allocation (torch admits '
        'bytearray(N)) fails with MemoryError instead of the machine killing the run',
    )
    args = parser.parse_args(argv)
    resource.setrlimit(resource.RLIMIT_AS, (args.memory_gib << 30, args.memory_gib << 30))
    outcomes = fuzz(args.count, args.seed)
    outcomes.update(torch=torch.__version__, numpy=np.__version__, seed=args.seed)
    print(json.dumps(outcomes, indent=1))
    if args.out:
        args.out.write_text(json.dumps(outcomes, indent=1) + '\n')
    return outcomes


if __name__ == '__main__':
    main()
