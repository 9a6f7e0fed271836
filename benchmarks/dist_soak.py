"""Soak check of distributed runs on CPU processes (gloo): N two-process train runs and N two-process test runs
of a tiny Mask R-CNN through `tools/dist_train.sh` and `tools/dist_test.sh`, as a user starts them, counting
exit codes and aborted ranks (SIGABRT, "terminate called without an active exception").

    nice -n 10 python -m benchmarks.dist_soak --runs 30 --label after
    nice -n 10 python -m benchmarks.dist_soak --runs 30 --label before --repo /tmp/main_export   # another checkout

`--repo` names the checkout whose tools, configs and package are run (default: this one), so the same
measurement can be made on older code. Each invocation adds its `--label` to `--out` (JSON, default
benchmarks/dist_soak.json) and rewrites the Markdown table next to it (dist_soak.md) from every label there.
Runs alternate train, test, train, ...; `--parallel K` keeps K runs going at once (more contention for the
CPUs, as in a full test suite). A run that outlives `--timeout` is killed and counted as failed.
"""

import argparse
import json
import os
import os.path as osp
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
ABORT = 'terminate called without an active exception'

# A user config inheriting the repository's demo config: 96x96 images, a backbone of a few thousand
# parameters, one iteration per epoch on each of the two processes. Import time dominates a run. Training
# ends without validation, as a run does whose validation interval does not divide its length: a rank then
# exits right after its last DDP gradient allreduce, where the abort at exit showed most.
CONFIG = """
_base_ = [{base!r}]
data_root = {root!r}
image_size = (96, 96)
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2)),
                  pretrain_img_size=96),
    neck=dict(in_channels=[16, 32, 64, 128], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32), mask_head=dict(in_channels=32, conv_out_channels=32)))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=1))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def make_workspace(repo: str, root: Path) -> Path:
    """Four train and two val images of 96x96 under `root/data` and the tiny config; returns the config."""
    subprocess.run(
        [
            sys.executable,
            osp.join(repo, 'tools', 'make_demo_data.py'),
            'coco',
            '--out',
            str(root / 'data'),
            '--train',
            '4',
            '--val',
            '2',
            '--size',
            '96',
            '96',
        ],
        check=True,
        capture_output=True,
    )
    config = root / 'soak_config.py'
    config.write_text(
        CONFIG.format(base=osp.join(repo, 'configs', 'mask_rcnn_maformer_t_demo.py'), root=str(root / 'data') + '/')
    )
    return config


def launch(args: List[str], cwd: Path, timeout: float, cpus: Optional[str] = None) -> dict:
    """Runs `bash ARGS...` (a launcher script) on CPU processes; returns what the run ended with."""
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env.update(PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='', PORT=str(free_port()))
    start = time.time()
    pin = ['taskset', '-c', cpus] if cpus else []  # all processes of the run share these CPUs
    proc = subprocess.Popen(
        [*pin, 'bash', *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # torchrun stops its ranks
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        rc = 'timeout'
    err = err or ''
    # torchrun's summary names each failed rank's exit code; -6 is SIGABRT
    signals = [int(code) for code in re.findall(r'exitcode\s*:\s*(-?\d+)', err)]
    return dict(
        rc=rc,
        seconds=round(time.time() - start, 1),
        aborted_ranks=err.count(ABORT),
        sigabrt_ranks=signals.count(-6),
        stderr_tail=err[-1500:] if rc != 0 else '',
    )


def soak(repo: str, runs: int, timeout: float, parallel: int = 1, cpus: Optional[str] = None, log=print) -> Dict:
    """`runs` train and `runs` test runs, alternating, `parallel` at a time; returns the summary and every run."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix='dist_soak_') as tmp:
        root = Path(tmp)
        config = make_workspace(repo, root)
        # the checkpoint the test runs evaluate, from one process (not counted)
        subprocess.run(
            [sys.executable, osp.join(repo, 'tools', 'train.py'), str(config), '--work-dir', str(root / 'ckpt')],
            cwd=root,
            check=True,
            capture_output=True,
            env={**os.environ, 'PYTHONPATH': repo, 'CUDA_VISIBLE_DEVICES': ''},
        )
        checkpoint = root / 'ckpt' / 'epoch_1.pth'
        jobs = []
        for i in range(runs):
            jobs.append(
                (
                    'train',
                    i,
                    [osp.join(repo, 'tools', 'dist_train.sh'), str(config), '2', '--work-dir', str(root / f'work_{i}')],
                )
            )
            jobs.append(('test', i, [osp.join(repo, 'tools', 'dist_test.sh'), str(config), str(checkpoint), '2']))

        def run(job) -> dict:
            kind, i, args = job
            record = dict(kind=kind, index=i, **launch(args, root, timeout, cpus))
            log(
                f'{kind} {i + 1}/{runs}: rc={record["rc"]} {record["seconds"]}s aborted ranks={record["aborted_ranks"]}'
            )
            return record

        with ThreadPoolExecutor(parallel) as pool:
            records = list(pool.map(run, jobs))
    summary = {}
    for kind in ('train', 'test'):
        rows = [r for r in records if r['kind'] == kind]
        summary[kind] = dict(
            runs=len(rows),
            exit_0=sum(r['rc'] == 0 for r in rows),
            failed=sum(r['rc'] != 0 for r in rows),
            aborted_ranks=sum(r['aborted_ranks'] for r in rows),
            sigabrt_ranks=sum(r['sigabrt_ranks'] for r in rows),
            runs_with_abort=sum(r['aborted_ranks'] > 0 for r in rows),
            timeouts=sum(r['rc'] == 'timeout' for r in rows),
            median_s=sorted(r['seconds'] for r in rows)[len(rows) // 2] if rows else None,
        )
    return dict(
        summary=summary,
        runs=records,
        parallel=parallel,
        cpus=cpus or 'all',
        load_before=[round(x, 2) for x in load_before],
        load_after=[round(x, 2) for x in os.getloadavg()],
    )


def _commit(repo: str) -> str:
    proc = subprocess.run(['git', '-C', repo, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else 'not a git checkout'


def markdown(results: Dict[str, dict]) -> str:
    lines = [
        '# Distributed soak: two-process CPU (gloo) runs of a tiny Mask R-CNN',
        '',
        'Written by `python -m benchmarks.dist_soak` (see its docstring). A run fails when the launcher exits',
        'non-zero; an aborted rank is one that died of SIGABRT with "terminate called without an active',
        'exception". At once: runs going in parallel. CPUs: those every process of a run was pinned to. Load:',
        'the 1-minute load average before and after the soak (the machine is shared).',
        '',
        '| label | code | at once | CPUs | kind | runs | exit 0 | failed | runs with an aborted rank | aborted ranks '
        '| median s | load |',
        '|---|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for label, res in results.items():
        for kind, s in res['summary'].items():
            cells = [
                label,
                res['code'],
                res.get('parallel', 1),
                res.get('cpus', 'all'),
                kind,
                s['runs'],
                s['exit_0'],
                s['failed'],
                s['runs_with_abort'],
                s['aborted_ranks'],
                s['median_s'],
                f'{res["load_before"][0]} -> {res["load_after"][0]}',
            ]
            lines.append('| ' + ' | '.join(map(str, cells)) + ' |')
    lines += ['', f'Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}.', '']
    return '\n'.join(lines)


def main(argv: Optional[List[str]] = None) -> Dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=30, help='train runs, and as many test runs')
    parser.add_argument('--repo', default=ROOT, help='the checkout whose tools are run (default: this one)')
    parser.add_argument('--label', default='after', help='the name of this measurement in the results')
    parser.add_argument('--parallel', type=int, default=1, help='runs going at once')
    parser.add_argument('--cpus', help='run every process on these CPUs (taskset list, e.g. 0): more contention')
    parser.add_argument('--timeout', type=float, default=300, help='seconds before a run counts as hung')
    parser.add_argument('--code', help='names the code under test when --repo is no git checkout')
    parser.add_argument('--out', default=osp.join(HERE, 'dist_soak.json'), help='JSON results (updated)')
    args = parser.parse_args(argv)
    repo = osp.abspath(args.repo)
    import torch  # only for the version recorded

    result = soak(repo, args.runs, args.timeout, args.parallel, args.cpus)
    result.update(code=args.code or _commit(repo), repo=repo, torch=torch.__version__)
    results = {}
    if osp.isfile(args.out):
        with open(args.out) as f:
            results = json.load(f)
    results[args.label] = result
    with open(args.out, 'w') as f:
        json.dump(results, f, indent=1)
    text = markdown(results)
    with open(osp.splitext(args.out)[0] + '.md', 'w') as f:
        f.write(text)
    print(text)
    return result


if __name__ == '__main__':
    main()
