"""Interrupted training continues with --resume; two-process distributed training on CPU, and how such a run
ends when a rank fails, when the launcher gets Ctrl-C, and when a checkpoint save is killed."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint  # reads mmengine checkpoints as data
from tests.helpers import ABORT, REPO, launcher_env, make_det_workspace, run_launcher, run_tool


def test_sigkill_mid_run_then_resume_finishes(tmp_path):
    config = make_det_workspace(tmp_path, epochs=6)
    work_dir = tmp_path / 'work'
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    proc = subprocess.Popen(
        [sys.executable, REPO / 'tools' / 'train.py', config, '--work-dir', work_dir],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not (work_dir / 'epoch_2.pth').exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, 'training ended before it could be killed'
    saved = sorted(p.name for p in work_dir.glob('epoch_*.pth'))
    assert 'epoch_6.pth' not in saved

    log = run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', work_dir, '--resume'], cwd=tmp_path)
    text = log.stdout + log.stderr
    resumed = int(text.split('resumed epoch: ')[1].split(',')[0])
    assert 1 <= resumed < 6  # last_checkpoint names the newest complete checkpoint
    assert f'Epoch(train) [{resumed + 1}][1/2]' in text and 'Epoch(train) [6][2/2]' in text
    final = load_mmengine_checkpoint(work_dir / 'epoch_6.pth', map_location='cpu')
    assert final['meta']['epoch'] == 6 and final['meta']['iter'] == 12
    for name in saved:  # nothing saved before the kill was lost or overwritten
        assert (work_dir / name).is_file()


def test_dist_train_two_processes_on_cpu(tmp_path):
    config = make_det_workspace(tmp_path, num_train=4, epochs=1)
    proc = run_launcher([REPO / 'tools' / 'dist_train.sh', config, '2', '--work-dir', tmp_path / 'work'], tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    assert 'Distributed training: True' in text and "'backend': 'gloo'" in text
    assert 'Epoch(train) [1][1/1]' in text  # 4 images, 2 per process, 2 processes: one iteration each
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    assert 'outlive the process group' not in text  # the teardown joined gloo's worker threads on both ranks


# The three other ways a distributed run ends: a rank fails, the launcher is interrupted, a save is killed.
# Smaller heads than the shared user config: an 8 MB checkpoint, iterations of a fraction of a second.
SMALL_DET_CONFIG = """
_base_ = ['./user_config.py']
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32), mask_head=dict(in_channels=32, conv_out_channels=32)))
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
"""

FAILING_HOOK = """
import time

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class FailOnRankOne(Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if get_rank() == 1 and runner.iter == 2:  # rank 0 goes on into the third iteration's collectives
            raise RuntimeError(f'injected failure on rank 1 at {time.time():.3f}')
"""


def _small_workspace(root: Path, epochs: int, extra: str = '', **data) -> Path:
    make_det_workspace(root, epochs=epochs, **data)
    config = root / 'small_config.py'
    config.write_text(SMALL_DET_CONFIG.format(epochs=epochs) + extra)
    return config


def test_a_rank_that_raises_stops_the_job_promptly_with_its_error(tmp_path):
    (tmp_path / 'fail_on_rank_one.py').write_text(FAILING_HOOK)
    config = _small_workspace(
        tmp_path,
        epochs=20,
        extra=(
            "custom_imports = dict(imports=['maformer_mm', 'fail_on_rank_one'], allow_failed_imports=False)\n"
            "custom_hooks = [dict(type='FailOnRankOne')]\n"
        ),
    )
    proc = run_launcher(
        [REPO / 'tools' / 'dist_train.sh', config, '2', '--work-dir', tmp_path / 'work'],
        tmp_path,
        extra_env={'PYTHONPATH': str(tmp_path)},
    )
    ended = time.time()
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert re.search(r'Epoch\(train\) +\[ *2\]\[1/1\]', text) and not re.search(r'Epoch\(train\) +\[ *3\]', text)
    raised = float(re.search(r'RuntimeError: injected failure on rank 1 at ([\d.]+)', proc.stderr).group(1))
    # gloo's timeout is 30 minutes: rank 0, blocked in the third iteration's collectives, did not wait for it
    assert ended - raised < 30, f'the job ended {ended - raised:.0f} s after rank 1 raised'
    root_cause = proc.stderr.split('Root Cause (first observed failure):')[1]
    assert 'rank      : 1 ' in root_cause and 'injected failure on rank 1' in root_cause  # torchrun's summary
    assert not (tmp_path / 'work' / 'epoch_20.pth').exists()


def _descendants(pid: int) -> List[int]:
    children: Dict[int, List[int]] = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                stat = Path(f'/proc/{entry}/stat').read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(')', 1)[1].split()[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError:
        return False


def test_ctrl_c_to_the_launcher_ends_every_rank_and_leaves_no_process(tmp_path):
    config = _small_workspace(
        tmp_path,
        epochs=200,
        extra=(  # far longer than the test waits
            'train_dataloader = dict(num_workers=1, persistent_workers=True)\n'
        ),
    )
    log = tmp_path / 'launcher.log'
    with open(log, 'w') as out:
        launcher = subprocess.Popen(
            ['bash', REPO / 'tools' / 'dist_train.sh', config, '2', '--work-dir', tmp_path / 'work'],
            cwd=tmp_path,
            env=launcher_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    processes: List[int] = []
    try:
        deadline = time.time() + 300
        while (
            not re.search(r'Epoch\(train\) +\[ *2\]\[1/1\]', log.read_text())
            and launcher.poll() is None
            and time.time() < deadline
        ):
            time.sleep(0.2)
        assert launcher.poll() is None, log.read_text()[-3000:]
        processes = _descendants(launcher.pid)  # two ranks, each with its data loader's worker
        assert len(processes) >= 4, processes
        interrupted = time.time()
        os.kill(launcher.pid, signal.SIGINT)  # what Ctrl-C sends to the launcher
        launcher.wait(timeout=120)
        assert time.time() - interrupted < 60
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
        for pid in processes:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = log.read_text()
    assert launcher.returncode != 0 and f'got signal: {int(signal.SIGINT)}' in text  # torchrun passed it on
    assert [pid for pid in processes if _alive(pid)] == []  # nothing left behind
    assert ABORT not in text


# Run as a script: trains, and once the first checkpoint is saved lowers this process's file size limit to half
# its size, so that the kernel kills the process (SIGXFSZ) in the middle of writing the second checkpoint.
KILL_DURING_SAVE = """
import os, resource, signal, sys, threading, time

from maformer_mm.tools.train import main

work = sys.argv[1]


def arm():
    while not os.path.exists(os.path.join(work, 'last_checkpoint')):
        time.sleep(0.02)
    half = os.path.getsize(os.path.join(work, 'epoch_1.pth')) // 2
    resource.setrlimit(resource.RLIMIT_FSIZE, (half, resource.RLIM_INFINITY))


signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # CPython ignores SIGXFSZ; writing past the limit now kills
threading.Thread(target=arm, daemon=True).start()
main(sys.argv[2:])
"""


def test_a_kill_while_saving_keeps_the_previous_checkpoint_and_resume_skips_a_truncated_one(tmp_path):
    config = _small_workspace(
        tmp_path, epochs=3, extra='default_hooks = dict(checkpoint=dict(max_keep_ckpts=1))\n', num_train=2, num_val=1
    )
    work = tmp_path / 'work'
    (tmp_path / 'kill_during_save.py').write_text(KILL_DURING_SAVE)
    killed = run_tool([tmp_path / 'kill_during_save.py', work, config, '--work-dir', work], cwd=tmp_path, check=False)
    assert killed.returncode == -signal.SIGXFSZ, killed.stderr[-3000:]
    assert 'Saving checkpoint at 2 epochs' in killed.stdout + killed.stderr
    # the first checkpoint (max_keep_ckpts=1) is still there and whole, and last_checkpoint names it
    assert load_mmengine_checkpoint(work / 'epoch_1.pth', map_location='cpu')['meta']['epoch'] == 1
    assert (work / 'last_checkpoint').read_text() == str(work / 'epoch_1.pth')
    # the second was cut off while written, under a name no reader takes for a checkpoint
    assert not (work / 'epoch_2.pth').exists()
    partial = work / 'epoch_2.pth.part'
    assert partial.stat().st_size == (work / 'epoch_1.pth').stat().st_size // 2

    # what an in-place writer killed at the same moment leaves: a truncated checkpoint that last_checkpoint names
    shutil.copy(partial, work / 'epoch_2.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    resumed = run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', work, '--resume'], cwd=tmp_path)
    text = resumed.stdout + resumed.stderr
    assert f'--resume: skipping {work / "epoch_2.pth"}, which is missing or incomplete' in text
    assert 'resumed epoch: 1,' in text and 'Epoch(train) [2][1/1]' in text and 'Epoch(train) [3][1/1]' in text
    final = load_mmengine_checkpoint(work / 'epoch_3.pth', map_location='cpu')
    assert final['meta']['epoch'] == 3 and final['meta']['iter'] == 3
    assert sorted(p.name for p in work.glob('epoch_*')) == ['epoch_3.pth']  # max_keep_ckpts=1, nothing partial
