"""The tools refuse crafted checkpoints and read real ones.

A real checkpoint comes from one `tools/train.py` run (module fixture): it needs exactly the names the loader
admits, loads through mmengine and converts to safetensors weights that `init_cfg` reads. Every crafted file is
refused by the loader behind `tools/train.py --resume`, `load_from` and `tools/test.py`, and the tools' `main`
refuse one each; no payload runs. That real checkpoints resume and test under torch's
default with no environment variable is checked by tests/test_det/test_det_tools.py, whose `run_tool` strips
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
"""
import importlib.util
import runpy
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from maformer_mm.models import MAFormer
from maformer_mm.checkpoint.safe_load import (ADMITTED_DTYPES, MMENGINE_GLOBAL_NAMES, UnsafeCheckpointError,
                                             load_mmengine_checkpoint)
from tests.helpers import REPO, make_det_workspace, run_tool
from tests.test_security.crafted import all_crafted
from tests.test_security.test_loading import REFUSALS

# The user config of make_det_workspace: this backbone.
ARCH = dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f'security_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp('security_train')
    config = make_det_workspace(root)
    run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', root / 'work'], cwd=root)
    crafted = all_crafted(root, root / 'payload_ran')
    return config, root / 'work' / 'epoch_1.pth', crafted, root / 'payload_ran'


def test_a_real_checkpoint_needs_exactly_the_names_the_loader_admits(trained):
    """The pickled names torch does not allow, and the numpy dtypes, of a checkpoint from tools/train.py:
    nothing the loader admits goes unused (the dtypes' classes are admitted for their state, not by name)."""
    _, checkpoint, _, _ = trained
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(checkpoint)))
    assert needed == {'mmengine.logging.history_buffer.HistoryBuffer', 'builtins.getattr', 'numpy.dtype',
                      'numpy.ndarray', 'numpy._core.multiarray._reconstruct', 'numpy._core.multiarray.scalar'}
    assert needed <= MMENGINE_GLOBAL_NAMES  # collections.Counter and OrderedDict are on torch's own list
    dtypes, stack = set(), [load_mmengine_checkpoint(checkpoint)]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
        elif isinstance(value, HistoryBuffer):
            stack.extend(vars(value).values())
        elif isinstance(value, (np.ndarray, np.generic)):
            dtypes.add(value.dtype)
    assert dtypes == set(ADMITTED_DTYPES)


def test_a_real_checkpoint_loads_and_converts_to_safetensors_weights(trained, tmp_path, capsys):
    _, checkpoint, _, _ = trained
    loaded = load_mmengine_checkpoint(checkpoint, map_location='cpu')
    assert loaded['meta']['epoch'] == 1 and 'cfg' in loaded['meta']
    weights = tmp_path / 'maformer.safetensors'
    _tool('convert_checkpoint').main([str(checkpoint), str(weights), '--safetensors'])
    out = capsys.readouterr().out
    assert 'is an mmengine training checkpoint: read as --resume reads it' in out and 'safetensors' in out
    model = MAFormer(arch=ARCH, pretrain_img_size=96, init_cfg=dict(type='Pretrained', checkpoint=str(weights)))
    model.init_weights()
    expected = {k[len('backbone.'):]: v for k, v in loaded['state_dict'].items() if k.startswith('backbone.')}
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_mmdets_stock_train_script_resumes_a_real_checkpoint(trained, tmp_path, monkeypatch):
    """mmdet's own tools/train.py with our config: its custom_imports install the loader, so the resume reads
    the checkpoint under torch's default (no environment variable) and its checks. The schedule is already
    complete at epoch 1, so the resume is all it does."""
    import mmdet
    config, checkpoint, _, _ = trained
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    stock = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    monkeypatch.setattr('sys.argv', [str(stock), str(config), '--work-dir', str(tmp_path), '--resume', str(checkpoint)])
    runpy.run_path(str(stock), run_name='__main__')
    log = next(tmp_path.rglob('*.log')).read_text()
    assert f'Load checkpoint from {checkpoint}' in log and 'resumed epoch: 1, iter: 2' in log


def _argv(path: str, config: Path, checkpoint: Path, work_dir: Path) -> list:
    if path == 'resume':
        return [str(config), '--work-dir', str(work_dir), '--resume', str(checkpoint)]
    if path == 'load_from':
        return [str(config), '--work-dir', str(work_dir), '--cfg-options', f'load_from={checkpoint}']
    return [str(config), str(checkpoint), '--work-dir', str(work_dir)]


# One crafted file per path, each refused at another stage; every file is refused by the loader they all go
# through (mmengine's CheckpointLoader: tests/test_security/test_loading.py). A Runner costs seconds to build.
TOOL_CASES = {'resume': 'config_code',  # mmengine's resume would run its meta['config']
              'load_from': 'exec_via_history_buffer',  # refused while unpickling
              'test': 'callable_in_counter_state'}  # refused by the check after the load


@pytest.mark.parametrize('path', list(TOOL_CASES))
def test_tools_refuse_crafted_checkpoints(trained, tmp_path, path):
    config, _, crafted, marker = trained
    name = TOOL_CASES[path]
    tool = _tool('test' if path == 'test' else 'train')
    with pytest.raises(UnsafeCheckpointError, match=rf'{crafted[name]} was refused.*{REFUSALS[name][1]}'):
        tool.main(_argv(path, config, crafted[name], tmp_path / 'work'))
    assert not marker.exists()
    assert not list((tmp_path / 'work').rglob('*.pth'))
