"""Makes mmengine's own launchers (torchrun / slurm / mpi) also work on machines without a GPU, and ends
distributed runs cleanly.

mmengine 0.10.7's `pytorch` launcher calls `torch.cuda.set_device` and its DDP wrapper passes
`device_ids=[LOCAL_RANK]`, both of which fail on CPU. Without CUDA this joins the process group
that torchrun describes with the gloo backend (the Runner reuses an existing group) and lets DDP
wrap CPU modules with `device_ids=None`. With CUDA nothing changes: mmengine uses nccl as usual.
"""

import gc
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.model import is_model_wrapper

from ..messages import warn

__all__ = ['prepare_launcher', 'closing_process_group', 'gloo_worker_threads']

# torch names the worker threads of ProcessGroupGloo so (c10::setThreadName in ProcessGroupGloo::runLoop).
GLOO_WORKER_THREAD = 'pt_gloo_runloop'


def prepare_launcher(cfg: Config) -> None:
    """Prepares `cfg` (and the process group) for a CPU-only distributed run; a no-op otherwise."""
    if cfg.get('launcher', 'none') == 'none' or torch.cuda.is_available():
        return
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')  # rank, world size and address from torchrun's env
    wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    env_cfg = cfg.get('env_cfg') or {}
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    cfg.env_cfg = env_cfg


def gloo_worker_threads() -> int:
    """How many gloo worker threads this process has (read from /proc; 0 where there is none)."""
    try:
        tasks = os.listdir('/proc/self/task')
    except OSError:
        return 0
    count = 0
    for task in tasks:
        try:
            with open(f'/proc/self/task/{task}/comm') as f:
                count += f.read().strip() == GLOO_WORKER_THREAD
        except OSError:  # the thread ended meanwhile
            pass
    return count


@contextmanager
def closing_process_group() -> Iterator[Callable[[Any], Any]]:
    """Ends a distributed run so that every rank exits with the run's status, also on CPU (gloo).

    Yields `hold`: pass it the Runner (`runner = hold(Runner.from_cfg(cfg))`). When the block ends:

    - normally: the Runner's model wrapper (DDP) is replaced by the model it wraps, the process group is
      destroyed and garbage is collected, so that ProcessGroupGloo's worker threads are joined while the
      interpreter is whole. Upstream fault (torch 2.13 with CPython 3.11): `destroy_process_group` leaves
      gloo's worker threads running while anything still references the group (DDP does), and such a thread
      drops a finished collective's work after the caller's `wait()` returned; the work's tensors and the
      thread-local state captured with it hold Python objects. If that falls after interpreter shutdown
      began, taking the GIL to release them ends the thread (`pthread_exit`), whose unwinding through the
      noexcept `~AsyncWork` calls `std::terminate`: the rank dies of SIGABRT with "terminate called without
      an active exception" after a finished run.
      Reproduction: benchmarks/repro/gloo_exit_abort.py.
    - with an exception in a run of several processes: this rank prints the error, records it for torchrun
      (shown as the root cause) and exits at once with status 1 (130 for Ctrl-C). Waiting for its worker
      threads, or for interpreter shutdown, could block it in a collective that the other ranks never join
      until the gloo timeout (30 minutes); its exit instead ends their collectives and torchrun stops them.
    - with an exception in one process: the group is destroyed and the exception propagates.
    """
    held: List[Any] = []

    def hold(runner: Any) -> Any:
        held.append(runner)
        return runner

    try:
        yield hold
    except BaseException as error:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            _exit_failed_rank(error)
        _destroy(held)
        raise
    _destroy(held)


def _destroy(held: List[Any]) -> None:
    for runner in held:
        if is_model_wrapper(getattr(runner, 'model', None)):
            runner.model = runner.model.module  # DDP keeps the process group (and its threads) alive
    held.clear()
    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.destroy_process_group()
    gc.collect()  # wrappers in reference cycles
    left = gloo_worker_threads()
    if left:
        warn(
            f'{left} gloo worker threads outlive the process group (something still references it); '
            'this process may abort at exit with "terminate called without an active exception"'
        )


def _exit_failed_rank(error: BaseException) -> None:
    """Prints `error`, records it in torchrun's error file and ends this process now (no shutdown)."""
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    if isinstance(error, SystemExit):
        code = error.code if isinstance(error.code, int) else int(error.code is not None)
        if not isinstance(error.code, (int, type(None))):  # sys.exit('message')
            print(error.code, file=sys.stderr)
    elif isinstance(error, KeyboardInterrupt):
        code = 130
        print(f'[rank {dist.get_rank()}] interrupted; this rank exits now', file=sys.stderr)
    else:
        code = 1
        print(f'[rank {dist.get_rank()}] the run failed; this rank exits now (status 1):', file=sys.stderr)
        traceback.print_exc()
        get_error_handler().record_exception(error)  # torchrun's summary then names this error as the root cause
    logging.shutdown()  # flushes the log files
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
