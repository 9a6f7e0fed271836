"""Review findings of issue 13: the torch floor setup.py states, bf16 autocast left on after a failed forward,
a Pretrained entry in a list init_cfg, and InvalidLossHook's unclosed file."""
import ast
import gc
import warnings
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
from packaging.requirements import Requirement
from torch import nn

from maformer_mm.engine import BF16OptimWrapper, InvalidLossHook
from maformer_mm.models import MAFormer
from tests.helpers import REPO


def _install_requires() -> dict:
    tree = ast.parse((REPO / 'setup.py').read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'setup')
    requires = ast.literal_eval(next(k.value for k in call.keywords if k.arg == 'install_requires'))
    return {Requirement(r).name: Requirement(r).specifier for r in requires}


def test_setup_states_the_torch_and_torchvision_floor_the_code_needs():
    """torch 2.6 brought named safe globals `(obj, 'module.name')` (the loader binds `builtins.getattr` that way)
    and the weights-only default; 2.4 selective checkpointing; torchvision 0.21 is the release for torch 2.6."""
    requires = _install_requires()
    assert '2.5.1' not in requires['torch'] and '2.6.0' in requires['torch'] and '2.13.0' in requires['torch']
    assert '0.20.1' not in requires['torchvision'] and '0.21.0' in requires['torchvision']
    from torch.utils.checkpoint import create_selective_checkpoint_contexts  # noqa: F401  (torch 2.4+)
    with torch.serialization.safe_globals([(len, 'some.module.name')]):  # the tuple form the loader relies on
        assert (len, 'some.module.name') in torch.serialization.get_safe_globals()
    assert 'safetensors' in requires


class _Backbone(nn.Linear):
    def __init__(self, fail: bool) -> None:
        super().__init__(4, 4)
        self.fail = fail

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        assert y.dtype == torch.bfloat16  # the wrapper's autocast is on inside the backbone
        if self.fail:
            raise RuntimeError('backbone failed')
        return y


class _Detector(nn.Module):
    def __init__(self, fail: bool) -> None:
        super().__init__()
        self.backbone = _Backbone(fail)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def _wrapper(model: nn.Module) -> BF16OptimWrapper:
    return BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1), device_type='cpu',
                            scope='backbone')


@pytest.mark.parametrize('fail', [False, True], ids=['ok', 'backbone_raises'])
def test_bf16_backbone_scope_leaves_autocast_when_the_backbone_raises(fail):
    model = _Detector(fail)
    assert not torch.is_autocast_enabled('cpu')
    with pytest.raises(RuntimeError, match='backbone failed') if fail else nullcontext():
        with _wrapper(model).optim_context(model):
            out = model(torch.randn(2, 4))
            assert out.dtype == torch.float32  # handed on as float32, autocast off after the backbone
            assert not torch.is_autocast_enabled('cpu')
    assert not torch.is_autocast_enabled('cpu')
    x = torch.randn(3, 3)
    assert (x @ x).dtype == torch.float32  # the thread computes in float32 again


def test_bf16_backbone_autocast_is_off_as_soon_as_the_forward_raises():
    """The autocast ends with the failed backbone call, not only when the step's context is left."""
    model = _Detector(True)
    with _wrapper(model).optim_context(model):
        with pytest.raises(RuntimeError, match='backbone failed'):
            model(torch.randn(2, 4))
        assert not torch.is_autocast_enabled('cpu')


def _checkpoint(tmp_path, tiny_cfg, state=None):
    source = MAFormer(**tiny_cfg)
    source.init_weights()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.)
    path = tmp_path / 'w.pth'
    torch.save({'state_dict': state if state is not None else
                {'backbone.' + k: v for k, v in source.state_dict().items()}}, path)
    return source, path


def test_pretrained_in_a_list_init_cfg_loads_strictly_after_the_other_entries(tmp_path, tiny_cfg, mm_log):
    source, path = _checkpoint(tmp_path, tiny_cfg)
    model = MAFormer(**tiny_cfg, init_cfg=[dict(type='Constant', layer='LayerNorm', val=3., bias=2.),
                                           dict(type='Pretrained', checkpoint=str(path))])
    model.init_weights()
    for key, value in source.state_dict().items():  # the checkpoint wins over the Constant init
        assert torch.equal(model.state_dict()[key], value), key
    assert 'Loaded ' in mm_log() and 'backbone tensors from' in mm_log()  # our loader, with its report
    assert model.init_cfg[1]['type'] == 'Pretrained'  # the config is left as given


def test_pretrained_in_a_list_init_cfg_gets_the_strict_loaders_errors(tmp_path, tiny_cfg):
    _, path = _checkpoint(tmp_path, tiny_cfg, state={'head.fc.weight': torch.ones(2, 2)})
    model = MAFormer(**tiny_cfg, init_cfg=[dict(type='Pretrained', checkpoint=str(path)),
                                           dict(type='Constant', layer='LayerNorm', val=1.)])
    with pytest.raises(KeyError, match='no key matches MAFormer'):  # mmengine's loader would load nothing, silently
        model.init_weights()
    two = MAFormer(**tiny_cfg, init_cfg=[dict(type='Pretrained', checkpoint=str(path))] * 2)
    with pytest.raises(ValueError, match='2 Pretrained entries'):
        two.init_weights()


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
