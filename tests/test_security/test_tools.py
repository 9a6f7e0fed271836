"""The tools refuse crafted checkpoints and read real ones, from files and URLs, in any number of threads.

A real checkpoint comes from one `tools/train.py` run (module fixture): it needs exactly the names the loader
admits, loads through mmengine, converts to safetensors weights that `init_cfg` reads, and initialises a backbone
as it is (with and without `prefix`). Every crafted file is refused by the loader behind `tools/train.py --resume`,
`load_from` and `tools/test.py`, and the tools' `main` refuse one each, also served over http; the crafted config
template rides along a real checkpoint through a resume; no payload runs. That real checkpoints resume and test
under torch's default with no environment variable is checked by tests/test_det/test_det_tools.py, whose `run_tool`
strips TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD.
"""

import hashlib
import importlib.util
import runpy
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from maformer_mm.checkpoint.safe_load import (
    ADMITTED_DTYPES,
    MMENGINE_GLOBAL_NAMES,
    UnsafeCheckpointError,
    load_mmengine_checkpoint,
)
from maformer_mm.models import MAFormer
from tests.helpers import REPO, USER_ARCH, make_det_workspace, run_tool
from tests.test_security.crafted import all_crafted, config_template, with_config_texts
from tests.test_security.serving import serving
from tests.test_security.test_loading import REFUSALS


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f'security_{name}', REPO / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch of make_det_workspace's user config with a narrow box head (its 1024-wide layers and their Adam
    state would be 90 MB of a checkpoint that tests load 80 times)."""
    root = tmp_path_factory.mktemp('security_train')
    config = root / 'narrow_head.py'
    config.write_text(
        f'_base_ = [{str(make_det_workspace(root))!r}]\n'
        'model = dict(roi_head=dict(bbox_head=dict(fc_out_channels=64)))\n'
    )
    run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', root / 'work'], cwd=root)
    crafted = all_crafted(root, root / 'payload_ran')
    return config, root / 'work' / 'epoch_1.pth', crafted, root / 'payload_ran'


def test_a_real_checkpoint_needs_exactly_the_names_the_loader_admits(trained):
    """The pickled names torch does not allow, and the numpy dtypes, of a checkpoint from tools/train.py: all of
    them are admitted (by name, each bound to a stand-in)."""
    _, checkpoint, _, _ = trained
    needed = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(checkpoint)))
    assert needed == {
        'mmengine.logging.history_buffer.HistoryBuffer',
        'builtins.getattr',
        'numpy.dtype',
        'numpy.ndarray',
        'numpy._core.multiarray._reconstruct',
        'numpy._core.multiarray.scalar',
    }
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
    assert dtypes and dtypes <= set(ADMITTED_DTYPES)  # float64 and int64 logs here; metrics add float32 (corpus)


def test_a_real_checkpoint_loads_and_converts_to_safetensors_weights(trained, tmp_path, capsys):
    _, checkpoint, _, _ = trained
    loaded = load_mmengine_checkpoint(checkpoint, map_location='cpu')
    assert loaded['meta']['epoch'] == 1 and 'cfg' in loaded['meta']
    weights = tmp_path / 'maformer.safetensors'
    _tool('convert_checkpoint').main([str(checkpoint), str(weights), '--safetensors'])
    out = capsys.readouterr().out
    assert 'is an mmengine training checkpoint: read as --resume reads it' in out and 'safetensors' in out
    model = MAFormer(arch=USER_ARCH, pretrain_img_size=96, init_cfg=dict(type='Pretrained', checkpoint=str(weights)))
    model.init_weights()
    expected = {k[len('backbone.') :]: v for k, v in loaded['state_dict'].items() if k.startswith('backbone.')}
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
TOOL_CASES = {
    'resume': 'exec_via_counter',  # refused while unpickling
    'load_from': 'exec_via_history_buffer',  # refused while unpickling
    'test': 'callable_in_counter_state',
}  # refused by the check after the load


@pytest.mark.parametrize('path', list(TOOL_CASES))
def test_tools_refuse_crafted_checkpoints(trained, tmp_path, path):
    config, _, crafted, marker = trained
    name = TOOL_CASES[path]
    tool = _tool('test' if path == 'test' else 'train')
    with pytest.raises(UnsafeCheckpointError, match=rf'{crafted[name]} was refused.*{REFUSALS[name][1]}'):
        tool.main(_argv(path, config, crafted[name], tmp_path / 'work'))
    assert not marker.exists()
    assert not list((tmp_path / 'work').rglob('*.pth'))


def test_4_threads_load_a_real_checkpoint_20_times_each(trained):
    """No load is refused because of another, every result is the file's, and torch's allow-list never changes
    (sampled by a fifth thread while the loads run)."""
    from mmengine.runner import CheckpointLoader

    _, checkpoint, _, _ = trained
    expected = load_mmengine_checkpoint(checkpoint)['state_dict']
    before = set(torch.serialization.get_safe_globals())
    errors, seen, done = [], set(), threading.Event()

    def load(index: int) -> None:
        for i in range(20):
            try:
                loaded = (
                    CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu', logger='silent')
                    if (index + i) % 2
                    else load_mmengine_checkpoint(checkpoint)
                )
                assert loaded['meta']['epoch'] == 1
                assert type(loaded['message_hub']['log_scalars']['train/loss']) is HistoryBuffer
                assert all(torch.equal(loaded['state_dict'][k], v) for k, v in expected.items())
            except Exception as error:  # noqa: BLE001  (collected, reported below)
                errors.append(f'thread {index}, load {i}: {type(error).__name__}: {error}')

    def watch() -> None:
        while not done.wait(0.001):  # a sample a millisecond; a busy loop would hold the GIL the loads need
            seen.add(frozenset(torch.serialization.get_safe_globals()))

    watcher = threading.Thread(target=watch)
    watcher.start()
    threads = [threading.Thread(target=load, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    watcher.join()
    assert errors == []
    assert seen == {frozenset(before)} and set(torch.serialization.get_safe_globals()) == before


@pytest.mark.parametrize('prefix', ['backbone.', None])
def test_a_training_checkpoint_initialises_a_backbone(trained, prefix, mm_log):
    """mmdet's epoch_1.pth as `init_cfg`, read like --resume reads it: `prefix='backbone.'` as mmdet users write
    it, or no prefix (the `backbone.*` keys say where the backbone is)."""
    _, checkpoint, _, _ = trained
    init = dict(type='Pretrained', checkpoint=str(checkpoint), **({'prefix': prefix} if prefix else {}))
    model = MAFormer(arch=USER_ARCH, pretrain_img_size=96, init_cfg=init)
    model.init_weights()
    state = load_mmengine_checkpoint(checkpoint)['state_dict']
    own = model.state_dict()
    assert len(own) > 0 and all(torch.equal(v, state['backbone.' + k]) for k, v in own.items())
    assert f'Loaded {len(own)}/{len(own)} backbone tensors from {checkpoint}' in mm_log()


def test_resume_with_the_crafted_config_template_runs_nothing(trained, tmp_path, monkeypatch):
    """The template in meta['config'] (which Runner.resume parses), meta['cfg'] and the message hub: the resume
    runs, the payload does not."""
    config, checkpoint, _, _ = trained
    marker = tmp_path / 'payload_ran'
    templated = tmp_path / 'templated.pth'
    torch.save(with_config_texts(load_mmengine_checkpoint(checkpoint), config_template(marker)), templated)
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    _tool('train').main([str(config), '--work-dir', str(tmp_path / 'work'), '--resume', str(templated)])
    log = next((tmp_path / 'work').rglob('*.log')).read_text()
    assert 'resumed epoch: 1, iter: 2' in log
    assert not marker.exists()


def test_resume_still_checks_the_gpu_count_a_saved_config_states(trained, tmp_path):
    """mmcv 1.x checkpoints saved `gpu_ids = range(0, 2)` in meta['config']: read as data, handed to mmengine as
    `gpu_ids = [0, 1]`, and mmengine's check of the process count still applies."""
    config, checkpoint, _, _ = trained
    two_gpus = tmp_path / 'two_gpus.pth'
    state = load_mmengine_checkpoint(checkpoint)
    state['meta']['config'] = "model = dict(type='MaskRCNN')\ngpu_ids = range(0, 2)\n"
    torch.save(state, two_gpus)
    with pytest.raises(RuntimeError, match='Number of GPUs used for current experiment is not consistent'):
        _tool('train').main([str(config), '--work-dir', str(tmp_path / 'work'), '--resume', str(two_gpus)])


def _hash_named(path: Path, folder: Path) -> Path:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return Path(shutil.copy(path, folder / f'{path.stem}-{digest}{path.suffix}'))


def test_tools_read_checkpoints_by_url_and_refuse_hostile_ones(trained, tmp_path, monkeypatch):
    """`load_from=URL` (tools/train.py), `--resume URL` (mmdet's stock tools/train.py; ours takes files), and
    tools/test.py with a URL: a served training checkpoint is used; a hostile one is refused, deleted, not cached."""
    import mmdet

    config, checkpoint, crafted, marker = trained
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    served_dir = tmp_path / 'served'
    served_dir.mkdir()
    good = _hash_named(checkpoint, served_dir)
    hostile = Path(shutil.copy(crafted['exec_via_counter'], served_dir / 'hostile.pth'))
    stock = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    with serving(served_dir) as served:
        with pytest.raises(UnsafeCheckpointError, match=rf'{served(hostile.name)} \(downloaded\) was refused'):
            _tool('train').main(
                [str(config), '--work-dir', str(tmp_path / 'w1'), '--cfg-options', f'load_from={served(hostile.name)}']
            )
        monkeypatch.setattr(
            'sys.argv', [str(stock), str(config), '--work-dir', str(tmp_path / 'w2'), '--resume', served(hostile.name)]
        )
        with pytest.raises(UnsafeCheckpointError, match=rf'{served(hostile.name)} \(downloaded\) was refused'):
            runpy.run_path(str(stock), run_name='__main__')
        monkeypatch.setattr(
            'sys.argv', [str(stock), str(config), '--work-dir', str(tmp_path / 'w3'), '--resume', served(good.name)]
        )
        runpy.run_path(str(stock), run_name='__main__')
        metrics = _tool('test').main([str(config), served(good.name), '--work-dir', str(tmp_path / 'w4')])
    assert 'resumed epoch: 1, iter: 2' in next((tmp_path / 'w3').rglob('*.log')).read_text()
    assert 0 <= metrics['coco/bbox_mAP'] <= 1
    # the good file is cached with the record of its URL; the refused one is not kept
    assert sorted(p.name for p in (tmp_path / 'torch_home' / 'hub' / 'checkpoints').iterdir()) == [
        good.name,
        f'{good.name}.url',
    ]
    assert not marker.exists()


def _crafted_runtime_info(trained, tmp_path, victim: Path) -> Path:
    """The real checkpoint with runtime info that names `victim` as the previous best checkpoint (with a score any
    result beats) and a kept step that climbs out of the work dir."""
    _, checkpoint, _, _ = trained
    state = load_mmengine_checkpoint(checkpoint)
    state['message_hub']['runtime_info'].update(best_ckpt=str(victim), best_score=-1.0, keep_ckpt_ids=['../../x', 1])
    path = tmp_path / 'crafted_runtime_info.pth'
    torch.save(state, path)
    return path


@pytest.mark.parametrize('hook', ['SafeCheckpointHook', 'CheckpointHook'])
def test_resume_deletes_no_folder_the_checkpoint_names(trained, tmp_path, hook, monkeypatch):
    """A resume with `save_best`, by mmdet's own tools/train.py: at the first better score mmengine's CheckpointHook
    removes "the previous best", the folder the checkpoint named (the control); SafeCheckpointHook, which our configs
    name, dropped it with a warning at the start and deletes nothing outside the run."""
    import mmdet

    config, _, _, _ = trained
    victim = tmp_path / 'precious'
    victim.mkdir()
    (victim / 'data.txt').write_text('keep me')
    crafted = _crafted_runtime_info(trained, tmp_path, victim)
    work = tmp_path / 'work'
    options = [
        'train_cfg.max_epochs=2',
        f'default_hooks.checkpoint.type={hook}',
        'default_hooks.checkpoint.save_best=coco/bbox_mAP',
        'default_hooks.checkpoint.rule=greater',
    ]
    stock = Path(mmdet.__file__).parent / '.mim' / 'tools' / 'train.py'
    argv = [str(stock), str(config), '--work-dir', str(work), '--resume', str(crafted), '--cfg-options', *options]
    monkeypatch.setattr('sys.argv', argv)
    runpy.run_path(str(stock), run_name='__main__')
    log = next(work.rglob('*.log')).read_text()
    assert 'resumed epoch: 1, iter: 2' in log and 'The best checkpoint with' in log
    if hook == 'CheckpointHook':
        assert not victim.exists() and f'The previous best checkpoint {victim} is removed' in log
        return
    assert (victim / 'data.txt').read_text() == 'keep me'
    assert f"resume: dropped best_ckpt='{victim}': not a regular file named best_<metric>_epoch_{{}}.pth" in log
    assert "resume: dropped keep_ckpt_ids entry '../../x'" in log
    assert list(work.glob('best_coco_bbox_mAP_epoch_2.pth'))


def test_resumed_paths_keep_only_the_hooks_own_files(tmp_path):
    """Unit: what survives the check, for each kind of entry a checkpoint can hold."""
    from mmengine.hooks import CheckpointHook

    from maformer_mm.engine.checkpointing import resumed_paths

    work = tmp_path / 'work'
    work.mkdir()
    own = work / 'best_coco_bbox_mAP_epoch_3.pth'
    own.write_bytes(b'x')
    (work / 'epoch_2.pth').write_bytes(b'x')
    (work / 'epoch_4.pth').mkdir()  # a folder where a kept checkpoint should be: never rmtree'd
    (work / 'best_coco_bbox_mAP_epoch_5.pth').symlink_to(tmp_path)
    outside = tmp_path / 'best_coco_bbox_mAP_epoch_3.pth'
    outside.write_bytes(b'x')
    hook = CheckpointHook(interval=1, save_best='coco/bbox_mAP')
    cases = {
        str(own): True,
        str(outside): False,  # the right name in another folder
        str(work / 'best_coco_bbox_mAP_epoch_5.pth'): False,  # a link
        str(work / 'best_coco_segm_mAP_epoch_3.pth'): False,  # another metric, and no such file
        str(work): False,  # the work dir itself
        str(work / 'epoch_2.pth'): False,  # a kept checkpoint is not a best one
    }
    for path, kept in cases.items():
        info = {'best_ckpt': path, 'best_score': 0.5, 'keep_ckpt_ids': [1, 2, 4, -1, '3', 2.0]}
        dropped = resumed_paths(hook, info, str(work))
        assert ('best_ckpt' in info) == kept, path
        assert info['keep_ckpt_ids'] == [1, 2] and info['best_score'] == 0.5
        assert len(dropped) == 4 + (not kept)
    info = {'best_score': 'nan', 'best_score_coco': True}
    resumed_paths(hook, info, str(work))
    assert info == {}
    other_out = CheckpointHook(interval=1, out_dir=str(tmp_path / 'ckpts'), save_best='auto')
    expected = tmp_path / 'ckpts' / 'work' / 'best_accuracy_top1_epoch_1.pth'
    expected.parent.mkdir(parents=True)
    expected.write_bytes(b'x')
    info = {'best_ckpt': str(expected)}
    assert resumed_paths(other_out, info, str(work)) == [] and info['best_ckpt'] == str(expected)
