"""Makes mmengine's own launchers (torchrun / slurm / mpi) also work on machines without a GPU.

mmengine 0.10.7's `pytorch` launcher calls `torch.cuda.set_device` and its DDP wrapper passes
`device_ids=[LOCAL_RANK]`, both of which fail on CPU. Without CUDA this joins the process group
that torchrun describes with the gloo backend (the Runner reuses an existing group) and lets DDP
wrap CPU modules with `device_ids=None`. With CUDA nothing changes: mmengine uses nccl as usual.
"""
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.distributed as dist
from mmengine.config import Config

__all__ = ['prepare_launcher', 'closing_process_group']


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


@contextmanager
def closing_process_group() -> Iterator[None]:
    """Destroys the default process group when the run ends, while the interpreter is still whole.

    Left to interpreter shutdown, gloo's worker threads can abort a rank that finished its work (SIGABRT,
    "terminate called without an active exception"), and torchrun then reports the run as failed.
    """
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
