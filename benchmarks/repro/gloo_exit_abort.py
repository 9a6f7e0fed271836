"""Minimal reproduction, torch only, of a gloo rank that aborts at exit after a finished run.

Seen with torch 2.13.0 (CPU, gloo) and CPython 3.11 on Linux: a rank that trained with DistributedDataParallel,
gathered a result and called `destroy_process_group()` sometimes dies at exit of SIGABRT with

    terminate called without an active exception

and torchrun reports the whole run as failed. Backtrace of the aborting thread (from a core dump):

    std::terminate <- __gxx_personality_v0 <- _Unwind_ForcedUnwind <- pthread_exit <- PyThread_exit_thread
    <- take_gil <- PyEval_AcquireThread <- pybind11::gil_scoped_acquire
    <- ConcretePyInterpreterVTable::decref <- c10::TensorImpl::decref_pyobject
    <- std::vector<std::vector<at::Tensor>>::~vector <- ProcessGroupGloo::AsyncWork::~AsyncWork
    <- ProcessGroupGloo::runLoop

while the main thread is in Py_FinalizeEx. A second form ends the same way from
`at::ThreadLocalState::~ThreadLocalState` (the thread-local state the work captured holds a `c10::SafePyObject`)
instead of the tensors. The cause:
`destroy_process_group()` does not stop gloo's worker threads (ProcessGroupGloo's shutdown leaves them running)
while anything still references the group, and DDP does. A worker thread drops a finished collective's work only
after the caller's `wait()` has returned, and releasing its Python objects needs the GIL. If interpreter shutdown
has begun by then, CPython ends the thread with pthread_exit, and the forced unwinding through the noexcept
`~AsyncWork` calls std::terminate. The DDP step alone is enough (the gathered result is not needed).

Releasing the last reference (here: the DDP model) before exit lets the group's destructor join its threads
while the interpreter is whole: with `--release` no run aborts.

    python benchmarks/repro/gloo_exit_abort.py --runs 40             # some runs abort (more on a loaded machine)
    python benchmarks/repro/gloo_exit_abort.py --runs 40 --release   # none does

Each run is `python -m torch.distributed.run --nproc_per_node 2` of this file's rank code on CPU. The script
prints the runs whose ranks aborted and a summary line; it exits with 1 when any rank aborted.
"""

import argparse
import gc
import os
import socket
import subprocess
import sys
from typing import List, Optional

ABORT = 'terminate called without an active exception'


def rank_main(release: bool) -> None:
    """One rank: a DDP step, a gathered result, the process group destroyed; then the interpreter exits."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group('gloo')
    model = DistributedDataParallel(torch.nn.Linear(8, 2))
    model(torch.randn(4, 8)).sum().backward()  # allreduce of the gradients
    results: List[Optional[dict]] = [None] * dist.get_world_size()
    dist.all_gather_object(results, {'rank': dist.get_rank()})  # as a test loop collects its results
    if release:
        del model  # the last reference to the process group besides torch's own
        gc.collect()
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--runs', type=int, default=40)
    parser.add_argument('--release', action='store_true', help='drop the DDP model before exit (the work-around)')
    parser.add_argument('--rank', action='store_true', help=argparse.SUPPRESS)  # set for the ranks themselves
    args = parser.parse_args(argv)
    if args.rank:
        rank_main(args.release)
        return 0
    failed = aborted = 0
    for i in range(args.runs):
        cmd = [
            sys.executable,
            '-m',
            'torch.distributed.run',
            '--nproc_per_node',
            '2',
            '--master_port',
            str(_free_port()),
            os.path.abspath(__file__),
            '--rank',
        ]
        cmd += ['--release'] if args.release else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, 'CUDA_VISIBLE_DEVICES': ''})
        ranks = proc.stderr.count(ABORT)
        failed += proc.returncode != 0
        aborted += ranks
        if proc.returncode != 0:
            print(f'run {i + 1}: exit {proc.returncode}, {ranks} rank(s) aborted with "{ABORT}"', flush=True)
    import torch

    print(
        f'torch {torch.__version__}, Python {sys.version.split()[0]}, release={args.release}: '
        f'{failed} of {args.runs} runs failed, {aborted} ranks aborted'
    )
    return int(aborted > 0)


if __name__ == '__main__':
    sys.exit(main())
