"""tools/dist_train.sh, dist_test.sh and slurm_train.sh run the project's environment by default.

Before, they ran whatever `python` came first on PATH, which on a fresh machine after `make test` has no
torch. Each script is copied into a stand-in repository whose `.venv/bin/python`, PATH `python` and
`srun` only record how they were called, so the tests check the interpreter chosen and the command
line in milliseconds."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import REPO

RECORDER = '#!/bin/sh\necho "{name} $@" >> "{log}"\n'
NO_TORCH = '#!/bin/sh\necho "ModuleNotFoundError: No module named \'torch\'" >&2\nexit 1\n'


def _stub(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def fake_repo(tmp_path):
    root = tmp_path / 'repo'
    for name in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh'):
        (root / 'tools').mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / 'tools' / name, root / 'tools' / name)
    log = tmp_path / 'calls.log'
    _stub(tmp_path / 'bin' / 'python', NO_TORCH)  # the first python on PATH lacks torch
    _stub(tmp_path / 'bin' / 'srun', '#!/bin/sh\necho "srun $@" >> "%s"\n' % log)
    env = {k: v for k, v in os.environ.items() if k != 'PYTHON'}
    env['PATH'] = f'{tmp_path / "bin"}:{env["PATH"]}'
    return root, log, env


def _run(root: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ['bash', str(root / 'tools' / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=60
    )


def test_scripts_use_the_project_environment(fake_repo):
    root, log, env = fake_repo
    venv_python = root / '.venv' / 'bin' / 'python'
    _stub(venv_python, RECORDER.format(name='venv-python', log=log))
    for args in (
        ('dist_train.sh', 'cfg.py', '2', '--amp'),
        ('dist_test.sh', 'cfg.py', 'ckpt.pth', '2'),
        ('slurm_train.sh', 'part', 'job', 'cfg.py', 'work'),
    ):
        proc = _run(root, env, *args)
        assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    assert calls[0] == (
        f'venv-python -m torch.distributed.run --nnodes=1 --node_rank=0 --master_addr=127.0.0.1 '
        f'--nproc_per_node=2 --master_port=29500 {root}/tools/train.py cfg.py --launcher pytorch --amp'
    )
    assert calls[1].startswith('venv-python -m torch.distributed.run') and calls[1].endswith(
        f'{root}/tools/test.py cfg.py ckpt.pth --launcher pytorch'
    )
    assert calls[2].startswith('srun -p part --job-name=job') and calls[2].endswith(
        f'{venv_python} -u {root}/tools/train.py cfg.py --work-dir=work --launcher slurm'
    )


def test_scripts_fall_back_to_path_python_and_honour_python(fake_repo, tmp_path):
    root, log, env = fake_repo
    # no .venv (maformer_mm installed into the user's own environment): `python` from PATH
    proc = _run(root, env, 'dist_train.sh', 'cfg.py', '1')
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr
    # PYTHON names the interpreter explicitly
    _stub(tmp_path / 'mine' / 'python3', RECORDER.format(name='mine', log=log))
    proc = _run(root, {**env, 'PYTHON': str(tmp_path / 'mine' / 'python3')}, 'dist_test.sh', 'c.py', 'k.pth', '1')
    assert proc.returncode == 0 and log.read_text().startswith('mine -m torch.distributed.run')
