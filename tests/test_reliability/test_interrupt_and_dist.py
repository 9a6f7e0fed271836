"""Interrupted training continues with --resume; two-process distributed training on CPU."""
import os
import signal
import subprocess
import sys
import time

import torch

from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint  # reads mmengine checkpoints as data

from tests.helpers import REPO, make_det_workspace, run_launcher, run_tool


def test_sigkill_mid_run_then_resume_finishes(tmp_path):
    config = make_det_workspace(tmp_path, epochs=6)
    work_dir = tmp_path / 'work'
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    proc = subprocess.Popen([sys.executable, REPO / 'tools' / 'train.py', config, '--work-dir', work_dir],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
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
