"""What setup.py declares: the torch and torchvision floors the code needs."""

import ast

import torch
from packaging.requirements import Requirement

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
