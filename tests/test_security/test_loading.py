"""Loading never runs what a checkpoint carries.

Crafted checkpoints (tests/test_security/crafted.py) are refused by torch.load, by the loader mmengine uses
after `import maformer_mm` (resume, load_from, tools/test.py, inferencers) and by the backbone loader, with
errors that name the file, what was found and what to do, and nothing they carry runs. torch's allow-list is
neither read nor changed by the loads; what mmengine checkpoints hold still loads, unchanged.
"""

import codecs
import copy
import subprocess
import sys
from collections import Counter, OrderedDict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer, MessageHub
from mmengine.runner import CheckpointLoader

import maformer_mm  # noqa: F401  (makes mmengine read local checkpoints with the data-only loader)
from maformer_mm.checkpoint.safe_load import UnsafeCheckpointError, load_mmengine_checkpoint, load_weights
from maformer_mm.models import MAFormer
from tests.helpers import DEMO_DET_CONFIG, REPO
from tests.test_security.crafted import all_crafted, write_config_code, write_crafted

_FROM_ARRAY = r'it makes a tensor from a numpy array \(torch._utils._rebuild_device_tensor_from_numpy\)'
# What each loader names when it refuses a crafted file (torch.load's own words, or ours).
REFUSALS = {
    'exec_via_counter': ('GLOBAL getattr', r"getattr\(the class collections.Counter, '__init__'\)"),
    'exec_via_history_buffer': (
        'GLOBAL getattr',
        r'getattr\(the function mmengine.*HistoryBuffer.mean, '
        r"'__builtins__'\)",
    ),
    'callable_in_counter_state': (
        'GLOBAL getattr',
        r"a Counter with the instance attributes \['__reduce_ex__'\] "
        r"at checkpoint\['message_hub'\]\['runtime_info'\]\['evil'\]",
    ),
    'torch_callable_in_counter_state': (None, r"a Counter with the instance attributes \['__deepcopy__'\]"),
    'callable_in_history_buffer_state': (
        'mmengine.logging.history_buffer.HistoryBuffer',
        r"statistics method 'mean' bound to the function _codecs.encode",
    ),
    'object_array': ('numpy._core.multiarray._reconstruct', r"numpy.dtype\('O8'"),
    'callable_in_scalar_dtype_metadata': (
        'numpy._core.multiarray.scalar',
        r'the checkpoint gives numpy dtype f8 the state a tuple of 9 entries',
    ),
    'object_array_by_constructor': (
        'numpy.ndarray',
        r"the checkpoint creates a numpy array from \(a tuple of 1 entries, 'O'\)",
    ),
    # The use-after-free: a tensor made from an array by torch's allowed rebuild function, then the array rebuilt.
    'double_build_array': ('numpy._core.multiarray._reconstruct', _FROM_ARRAY),
    'double_build_array_newobj': (
        'numpy.ndarray',
        r'the checkpoint creates a numpy array from \(a tuple of 1 entries\)',
    ),
    'tensor_from_array': ('numpy._core.multiarray._reconstruct', _FROM_ARRAY),
    'array_built_twice': (
        'numpy._core.multiarray._reconstruct',
        r'the checkpoint sets the state of one numpy array twice',
    ),
    'double_build_dtype': ('numpy.dtype', r'the checkpoint sets the state of one numpy dtype \(f4\) twice'),
    'metadata_assign': (
        None,
        r"a state dict whose _metadata for '' asks for \['assign_to_params_buffers'\] \(torch writes only a "
        r"version\) at checkpoint\['state_dict'\]._metadata",
    ),
}


@pytest.fixture(scope='module')
def crafted(tmp_path_factory):
    folder = tmp_path_factory.mktemp('crafted')
    marker = folder / 'payload_ran'
    return all_crafted(folder, marker), marker


@pytest.fixture
def no_forced_unsafe_load(monkeypatch):
    """torch.load's default as a user gets it: no TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in this process."""
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)


def test_importing_maformer_mm_leaves_torchs_allow_list_as_it_was():
    """In a fresh process. torch.nested and torch.distributed.tensor add their own types when imported (mmengine
    imports them); they are imported first, so that the comparison sees what the plugin adds: nothing."""
    code = (
        'import torch, torch.nested, torch.distributed.tensor; from torch.serialization import get_safe_globals; '
        'before = set(get_safe_globals()); import maformer_mm; from maformer_mm.models import MAFormer; '
        'after = set(get_safe_globals()); '
        'own = all((e[0] if isinstance(e, tuple) else e).__module__.startswith("torch") for e in after); '
        'print("UNCHANGED" if before == after and own else f"CHANGED {before} -> {after}")'
    )
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.stdout.strip().endswith('UNCHANGED'), proc.stdout + proc.stderr


def test_loads_leave_torchs_allow_list_alone(tmp_path, crafted):
    """Good and refused loads alike: the process-wide list is the same object's content before and after."""
    path = tmp_path / 'hub.pth'
    torch.save({'message_hub': {'log_scalars': {'loss': HistoryBuffer([1.0], [1])}}}, path)
    before = set(torch.serialization.get_safe_globals())
    load_mmengine_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        load_mmengine_checkpoint(crafted[0]['callable_in_counter_state'])
    assert set(torch.serialization.get_safe_globals()) == before


@pytest.mark.parametrize('name', [n for n, (torch_says, _) in REFUSALS.items() if torch_says])
def test_torch_load_after_import_refuses_crafted_files(crafted, name, no_forced_unsafe_load):
    """All but two: `_codecs.encode` in a Counter's state is on torch's own list (mmengine's resume would
    deep-copy that Counter), and a config text is plain data to torch; the loaders below refuse both."""
    files, marker = crafted
    with pytest.raises(Exception, match=REFUSALS[name][0].replace('.', r'\.')):
        torch.load(files[name])
    assert not marker.exists()


def assert_clear_refusal(message: str) -> None:
    """A refusal says what to do, never advises weights_only=False or allow-listing, and names the converter only
    for timm's saved arguments."""
    assert 'It was not loaded. Give a checkpoint that holds tensors and plain data only' in message, message
    assert not any(word in message for word in ('weights_only', 'safe_globals', 'convert_checkpoint')), message


@pytest.mark.parametrize('name', list(REFUSALS))
def test_mmengines_loader_refuses_crafted_files(crafted, name):
    """The loader behind --resume, load_from, tools/test.py and the inferencers (`CheckpointLoader`)."""
    files, marker = crafted
    with pytest.raises(UnsafeCheckpointError, match=rf'{files[name]} was refused.*{REFUSALS[name][1]}') as error:
        CheckpointLoader.load_checkpoint(str(files[name]), map_location='cpu')
    assert_clear_refusal(str(error.value))
    assert not marker.exists()


@pytest.mark.parametrize('name', list(REFUSALS))
def test_backbone_loader_refuses_crafted_files(crafted, name, tiny_cfg):
    """`init_cfg` reads with the reader behind --resume, so it refuses what that one refuses, in the same words."""
    files, marker = crafted
    model = MAFormer(**tiny_cfg, init_cfg=dict(type='Pretrained', checkpoint=str(files[name])))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(UnsafeCheckpointError, match=rf'{files[name]} was refused.*{REFUSALS[name][1]}') as error:
        model.init_weights()
    assert_clear_refusal(str(error.value))
    assert not marker.exists()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_crafted_exec_runs_under_a_process_wide_getattr(tmp_path, no_forced_unsafe_load):
    """The control: with `builtins.getattr` on torch's allow-list (as maformer_mm had it), the same file runs
    its payload inside torch.load. The refusals above are what stops it."""
    marker = tmp_path / 'payload_ran'
    path = write_crafted('exec_via_counter', tmp_path / 'exec.pth', marker)
    with torch.serialization.safe_globals([getattr]):
        torch.load(path)
    assert marker.exists()


def test_the_crafted_config_runs_when_mmengine_parses_it(tmp_path):
    """The control for `config_code`: torch.load reads it as plain data, and the `Config.fromstring` that
    mmengine's Runner.resume applies to `meta['config']` runs it."""
    marker = tmp_path / 'payload_ran'
    path = write_config_code(tmp_path / 'config.pth', marker)
    text = torch.load(path)['meta']['config']
    Config.fromstring(text, file_format='.py')
    assert marker.exists()


def test_a_refused_history_buffer_leaves_the_class_table_alone(crafted):
    table = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(UnsafeCheckpointError):
        load_mmengine_checkpoint(crafted[0]['callable_in_history_buffer_state'])
    assert HistoryBuffer._statistics_methods == table
    assert HistoryBuffer._statistics_methods['mean'] is HistoryBuffer.mean


def _training_state() -> dict:
    """What mmengine's Runner saves besides weights: message hub, numpy scalars, counters, metadata."""
    hub = MessageHub('security_test')
    for value in (1.5, 2.5, 0.5):
        hub.update_scalar('train/loss', value)
    hub.update_scalar('train/lr', 1)
    hub.update_info('iter', 3)
    weights = nn_state()
    return {
        'meta': {
            'epoch': 1,
            'iter': 3,
            'best': np.float64(0.25),
            'seed': np.int64(7),
            'cfg': Config.fromfile(str(DEMO_DET_CONFIG)).pretty_text,
            'dataset_meta': {'classes': ('a', 'b'), 'palette': [(1, 2, 3)]},
        },
        'state_dict': weights,
        'message_hub': hub.state_dict(),
        'counts': Counter(a=2),
        'optimizer': {'state': {0: {'step': torch.tensor(3.0)}}, 'param_groups': [{'lr': 0.1, 'params': [0]}]},
    }


def nn_state() -> OrderedDict:
    return torch.nn.Linear(2, 2).state_dict()  # an OrderedDict with `_metadata`


def test_mmengine_training_state_loads_unchanged(tmp_path):
    state = _training_state()
    path = tmp_path / 'epoch_1.pth'
    torch.save(state, path)
    loaded = load_mmengine_checkpoint(path)
    buffer = loaded['message_hub']['log_scalars']['train/loss']
    assert type(buffer) is HistoryBuffer  # its real class back, after the check
    assert buffer.mean() == pytest.approx(1.5) and buffer.statistics('max') == 2.5
    assert loaded['meta']['best'] == np.float64(0.25) and type(loaded['meta']['seed']) is np.int64
    assert loaded['meta']['cfg'] == state['meta']['cfg'] and loaded['counts'] == Counter(a=2)
    assert loaded['state_dict']._metadata == state['state_dict']._metadata
    hub = MessageHub('security_test_resumed')
    hub.load_state_dict(loaded['message_hub'])  # what resume does, deep copies included
    assert hub.get_scalar('train/loss').current() == 0.5 and hub.get_info('iter') == 3
    with pytest.raises(
        UnsafeCheckpointError,
        match=r'epoch_1.pth was refused: unpickling stopped: Unsupported global: '
        r'GLOBAL numpy.* was not an allowed global by default',
    ) as error:
        load_weights(path)  # plain weights only: torch's own list, nothing added
    assert_clear_refusal(str(error.value))


def _saved(tmp_path, value, key='x'):
    path = tmp_path / f'{key}.pth'
    torch.save({key: value}, path)
    return path


def _with_attribute(value, name, attribute):
    setattr(value, name, attribute)
    return value


@pytest.mark.parametrize(
    'value, found',
    [
        (
            _with_attribute(OrderedDict(a=1), 'extra', 1),
            r"an OrderedDict with the instance attributes \['extra'\] "
            r"at checkpoint\['x'\]",
        ),
        (Counter(a=codecs.encode), r"the function _codecs.encode at checkpoint\['x'\]\['a'\]"),
        ({'cls': torch.Tensor}, r"the class torch.Tensor at checkpoint\['x'\]\['cls'\]"),
        (
            _with_attribute(torch.ones(2), 'note', 'x'),
            r'a tensor with instance attributes or backward hooks at '
            r"checkpoint\['x'\]",
        ),
        (
            _with_attribute(HistoryBuffer([1.0], [1]), 'extra', 1),
            r'HistoryBuffer state with unexpected entries '
            r"\['extra'\]",
        ),
        (np.zeros(2, dtype='U3'), r"numpy.dtype\('U3'"),
        (np.zeros(2, dtype='M8[s]'), r"numpy.dtype\('M8'"),
        (np.zeros(2, dtype=[('a', 'f8')]), r'numpy.dtype'),
        (
            np.zeros(2, dtype=np.dtype('f8', metadata={'hidden': codecs.encode})),
            r'the checkpoint gives numpy dtype f8 the state a tuple of 9 entries: only the state of a simple numeric '
            r'dtype \(no fields, sub-arrays or metadata\) is admitted',
        ),
        (
            {'a': [({'b': (1, {2, codecs.encode})},)]},  # (a set has no order: the last index is 0 or 1)
            r"the function _codecs.encode at checkpoint\['x'\]\['a'\]\[0\]\[0\]\['b'\]\[1\]\[[01]\]",
        ),
        (
            _with_attribute(OrderedDict(w=torch.ones(1)), '_metadata', {'': {'version': codecs.encode}}),
            r"a state dict whose _metadata for '' has a version that is not an int at checkpoint\['x'\]._metadata",
        ),
    ],
    ids=[
        'ordered_dict_attribute',
        'function_in_counter',
        'class_as_value',
        'tensor_attribute',
        'history_buffer_attribute',
        'unicode_array',
        'datetime_array',
        'structured_array',
        'dtype_metadata',
        'nested_containers',
        'state_dict_metadata',
    ],
)
def test_unexpected_state_is_refused_naming_the_file_and_what_was_found(tmp_path, value, found):
    """No callable survives a load, wherever it hides: a dtype's state (its metadata; for scalars see
    crafted.py), a state dict's metadata, containers nested in any order."""
    path = _saved(tmp_path, value)
    with pytest.raises(UnsafeCheckpointError, match=rf'{path} was refused.*{found}') as error:
        load_mmengine_checkpoint(path)
    assert_clear_refusal(str(error.value))


def test_torchs_advice_never_reaches_a_refusal(crafted, no_forced_unsafe_load):
    """torch.load's own message, with its blank lines and bold advice, reduced to the finding."""
    from maformer_mm.checkpoint.unpickle import torch_detail

    with pytest.raises(Exception) as error:
        torch.load(crafted[0]['exec_via_counter'])
    assert 'weights_only' in str(error.value) and '\n\n' in str(error.value)  # what torch 2.13 writes
    assert torch_detail(str(error.value)) == (
        'Unsupported global: GLOBAL getattr was not an allowed global by default.'
    )


def test_legacy_files_load_and_torchscript_archives_are_refused(tmp_path):
    legacy = tmp_path / 'legacy.pth'
    torch.save({'state_dict': {'w': torch.arange(3.0)}}, legacy, _use_new_zipfile_serialization=False)
    for load in (load_weights, load_mmengine_checkpoint):
        assert torch.equal(load(legacy)['state_dict']['w'], torch.arange(3.0))
    scripted = tmp_path / 'scripted.pth'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(
        UnsafeCheckpointError,
        match=r'scripted.pth was refused: unpickling stopped: it is a TorchScript '
        r'archive',
    ):
        load_mmengine_checkpoint(scripted)


def test_a_process_wide_binding_widens_no_load(tmp_path, no_forced_unsafe_load):
    """With `builtins.getattr` on torch's process-wide list (as maformer_mm once had it), the loaders still use their
    own list: the crafted exec is refused and a good file loads, while plain torch.load runs the payload."""
    marker = tmp_path / 'payload_ran'
    crafted = write_crafted('exec_via_counter', tmp_path / 'exec.pth', marker)
    good = _saved(tmp_path, 1)
    with torch.serialization.safe_globals([getattr]):
        for load in (load_weights, load_mmengine_checkpoint):
            with pytest.raises(UnsafeCheckpointError, match=r'exec\.pth was refused: unpickling stopped'):
                load(crafted)
            assert not marker.exists()
            assert load(good) == {'x': 1}
        torch.load(crafted)
    assert marker.exists()
