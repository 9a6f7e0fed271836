"""A derandomised slice of the unpickler fuzzer (benchmarks/unpickler_fuzz.py, whose long run is recorded in
docs/checkpoints_and_safety.md): random streams of the admitted opcodes and globals either load as plain data, with
arrays that own their memory and no tensor made from an array, or are refused with the loader's own error. The
control shows the property has teeth: with numpy's own classes admitted, as before issue 26, it breaks."""

import numpy as np
import pytest

from benchmarks import unpickler_fuzz
from maformer_mm.checkpoint import safe_load
from maformer_mm.checkpoint.unpickle import Admitted


def test_random_streams_load_as_plain_data_or_are_refused():
    outcomes = unpickler_fuzz.fuzz(400, derandomize=True)
    assert outcomes['streams'] == 400
    assert outcomes['mmengine loaded'] > 20 and outcomes['mmengine refused'] > 200  # both sides are exercised


def test_the_property_breaks_with_numpys_own_classes_admitted(monkeypatch, tmp_path):
    """A tensor made from an array by torch's allowed `_rebuild_device_tensor_from_numpy`: it loads when numpy's
    own `ndarray` and `_reconstruct` are admitted (the property breaks), and is refused by the loader as it is."""
    fuzz = unpickler_fuzz
    call = fuzz._glob('torch._utils', '_rebuild_device_tensor_from_numpy') + b'('
    stream = b'\x80\x02](' + call + fuzz._array(4) + fuzz._glob('torch', 'float32') + fuzz._text('cpu') + b'\x89tRe.'
    path = fuzz.Archive(str(tmp_path)).write(stream)
    assert fuzz.check_load(safe_load.load_mmengine_checkpoint, path) == ['refused']
    names = dict(safe_load._MMENGINE.names)
    names['numpy.ndarray'] = np.ndarray
    names['numpy._core.multiarray._reconstruct'] = np._core.multiarray._reconstruct
    names['numpy.dtype'] = np.dtype
    names['numpy.dtypes.Float64DType'] = type(np.dtype('f8'))  # a dtype's class, for its BUILD
    monkeypatch.setattr(safe_load, '_MMENGINE', Admitted(names))
    monkeypatch.setattr('torch.from_numpy', fuzz._WATCH)
    with pytest.raises(fuzz.PropertyBroken, match=r'a tensor was made from a numpy array'):
        fuzz.check_load(safe_load.load_mmengine_checkpoint, path)
