"""torch's weights-only unpickler with an allow-list of our own for each kind of load, never torch's process-wide one.

`torch.load(weights_only=True)` looks names up in torch's fixed list plus a process-wide set
(`torch.serialization.add_safe_globals` / the `safe_globals` context manager). That set is shared by every thread:
one load's `with safe_globals(...)` removes names that a load in another thread still uses, and whatever it adds is
seen by every other `torch.load` meanwhile. Here torch's own `Unpickler.load` runs with a namespace in which the
user-allowed lookup returns a fixed mapping that belongs to one kind of load (`Admitted`): torch's opcodes, checks
and built-in list as they are, our names instead of the process-wide set, which is neither read nor written. Loads
in any number of threads are independent, and `torch.serialization.get_safe_globals()` never changes.

The file formats are torch's: the zip format through `torch.serialization._load`, the pre-1.6 pickle format through
`_legacy_load`; TorchScript archives and the legacy tar format are refused (torch's weights-only load refuses them
too). Refusals never carry torch's advice to allow-list a name or to load with `weights_only=False`.
"""

import pickle
import re
import tarfile
import types
from typing import Any, Dict, Mapping

import torch._weights_only_unpickler as _torch_unpickler
from torch import serialization

__all__ = ['Admitted', 'unpickle', 'torch_detail']


class Admitted:
    """A named allow-list (pickled name -> object) for torch's weights-only unpickler, on top of torch's own list.

    Builds a module with torch's `Unpickler` whose `load` resolves user-allowed names from `names` only.
    """

    def __init__(self, names: Mapping[str, Any]) -> None:
        self.names: Dict[str, Any] = dict(names)
        namespace = dict(vars(_torch_unpickler))
        namespace['_get_user_allowed_globals'] = lambda: self.names  # torch reads the process-wide set here
        base = _torch_unpickler.Unpickler
        code = base.load
        load = types.FunctionType(code.__code__, namespace, code.__name__, code.__defaults__, code.__closure__)
        unpickler = type('Unpickler', (base,), {'load': load, '__module__': __name__})
        self.module = types.ModuleType(f'{__name__}.admitted')
        self.module.Unpickler = unpickler
        self.module.load = lambda file, *, encoding='ASCII': unpickler(file, encoding=encoding).load()
        self.module.UnpicklingError = pickle.UnpicklingError


def unpickle(path: str, map_location: Any, admitted: Admitted) -> Any:
    """Reads the torch file `path` with torch's weights-only unpickler and `admitted` on top of torch's list.

    Raises:
        pickle.UnpicklingError: the file names something outside both lists, or is a TorchScript archive or a
            legacy tar file (the message is torch's, without its advice).
    """
    with open(path, 'rb') as opened:
        if serialization._is_zipfile(opened):
            with serialization._open_zipfile_reader(opened) as archive:
                if serialization._is_torchscript_zip(archive):
                    raise pickle.UnpicklingError(
                        'it is a TorchScript archive (torch.jit.save), which holds code; '
                        'load it with torch.jit.load if you trust it'
                    )
                return serialization._load(archive, map_location, admitted.module, encoding='utf-8')
        if tarfile.is_tarfile(path):
            raise pickle.UnpicklingError(
                "it is in torch's legacy tar format, which torch reads only by full unpickling"
            )
        opened.seek(0)
        return serialization._legacy_load(opened, map_location, admitted.module, encoding='utf-8')


# torch's texts that advise widening the allow-list or unpickling fully; none of them is passed on.
_ADVICE = re.compile(
    r'(Please use `torch\.serialization|Check the documentation|In PyTorch 2\.6|Re-running `torch'
    r'|Weights only load failed|This file can still be loaded|Please file an issue'
    r'|\(1\)|\(2\)|if you trust this class)',
    re.IGNORECASE,
)


def torch_detail(message: str) -> str:
    """What torch's weights-only unpickler found, from its message: no advice, one line.

    torch 2.13 wraps the unpickler's words ("WeightsUnpickler error: ...") in advice, before and after, with blank
    lines and ANSI bold; only the finding is kept, and no sentence that mentions `weights_only` or `safe_globals`.
    """
    text = re.sub(r'\x1b\[[0-9;]*m', '', message)
    text = text.split('WeightsUnpickler error:', 1)[-1]
    found = _ADVICE.search(text)
    if found and found.start() > 0:
        text = text[: found.start()]
    sentences = re.split(r'(?<=[.!?])\s+', ' '.join(text.split()))
    kept = [
        s
        for s in sentences
        if s and not _ADVICE.search(s) and not re.search(r'weights_only|safe_globals|allowlist', s, re.IGNORECASE)
    ]
    return ' '.join(kept).strip() or "torch's weights-only unpickler refused it"
