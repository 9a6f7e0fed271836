"""InvalidLossHook names the last good checkpoint and leaves no file open."""

import gc
import warnings
from types import SimpleNamespace

import pytest
import torch

from maformer_mm.engine import InvalidLossHook


def test_invalid_loss_hook_closes_last_checkpoint(tmp_path):
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    runner = SimpleNamespace(work_dir=str(tmp_path), iter=41)
    hook = InvalidLossHook()
    hook.every_n_train_iters = lambda runner, n: True
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', ResourceWarning)
        with pytest.raises(FloatingPointError, match='Last good checkpoint: .*epoch_3.pth'):
            hook.after_train_iter(runner, 0, outputs={'loss': torch.tensor(float('nan'))})
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)], [str(w.message) for w in caught]
