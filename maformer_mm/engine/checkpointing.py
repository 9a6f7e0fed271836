"""Checkpoints that survive a kill: each is saved whole or not at all, and `--resume` continues from a complete one.

mmengine 0.10.7's CheckpointHook first removes the oldest checkpoint beyond `max_keep_ckpts`, then writes the new
one in place (`open(path, 'wb')`), then `last_checkpoint`. A kill during the write leaves a truncated file under
the checkpoint's name, and with `max_keep_ckpts=1` no usable checkpoint at all. SafeCheckpointHook writes to
`NAME.part`, syncs it and renames it to NAME (atomic), writes `last_checkpoint` the same way, and removes old
checkpoints only after that. `use_safe_checkpoints` puts it in place of the config's CheckpointHook and points an
automatic `--resume` at the newest complete checkpoint of the work dir.
"""

import glob
import logging
import os
import os.path as osp
import zipfile
from typing import List, Optional, Tuple

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

__all__ = ['SafeCheckpointHook', 'is_complete_checkpoint', 'latest_complete_checkpoint', 'use_safe_checkpoints']

PARTIAL = '.part'  # suffix of a checkpoint (or last_checkpoint) being written


def _replace_synced(partial: str, path: str) -> None:
    with open(partial, 'rb') as f:
        os.fsync(f.fileno())  # the data is on disk before the name points at it
    os.replace(partial, path)


def _write_text_atomically(path: str, text: str) -> None:
    with open(path + PARTIAL, 'w') as f:
        f.write(text)
    _replace_synced(path + PARTIAL, path)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook, except that a kill while saving cannot leave a truncated checkpoint behind a
    checkpoint's name or `last_checkpoint`, nor remove the previous checkpoint before the next one is whole.

    It takes the same arguments. Checkpoints on other storage than the local file system (`backend_args`,
    `file_client_args`) are saved by CheckpointHook's own code.
    """

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        if self.file_client_args is not None or not isinstance(self.file_backend, LocalBackend):
            return super()._save_checkpoint_with_step(runner, step, meta)
        dropped = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                dropped.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(
            self.out_dir,
            filename + PARTIAL,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args,
        )
        if not is_main_process():  # only the main process writes checkpoints
            return
        _replace_synced(self.last_ckpt + PARTIAL, self.last_ckpt)
        _write_text_atomically(osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        for old in dropped:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):  # checkpoints saved by deepspeed are directories
                self.file_backend.rmtree(path)


def is_complete_checkpoint(path: str) -> bool:
    """Whether `path` is a whole checkpoint as torch.save writes it: a zip archive with its central directory
    (written last, so a truncated file has none), a `data.pkl` record and every record's CRC intact."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith('/data.pkl') for name in archive.namelist()) and archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError, ValueError):
        return False


def latest_complete_checkpoint(work_dir: str) -> Tuple[Optional[str], List[str]]:
    """The checkpoint an automatic resume continues from, and the incomplete ones passed over.

    The one `last_checkpoint` names when it is complete; else the newest complete `*.pth` of `work_dir` (by
    modification time); None when there is none.
    """
    candidates = []
    last = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(last):
        with open(last) as f:
            candidates.append(f.read().strip())
    named = {osp.realpath(p) for p in candidates}
    candidates += [
        p
        for p in sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime, reverse=True)
        if osp.realpath(p) not in named
    ]
    skipped = []
    for path in candidates:
        if is_complete_checkpoint(path):
            return path, skipped
        skipped.append(path)
    return None, skipped


def use_safe_checkpoints(cfg: Config) -> None:
    """Saves `cfg`'s checkpoints with SafeCheckpointHook (when the config uses mmengine's CheckpointHook) and
    points an automatic resume (`resume=True` without `load_from`) at the newest complete checkpoint."""
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if hook is not None and hook.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook):
        hook['type'] = 'SafeCheckpointHook'
    if not cfg.get('resume') or cfg.get('load_from') or not osp.isdir(cfg.work_dir):
        return
    path, skipped = latest_complete_checkpoint(cfg.work_dir)
    for bad in skipped:
        print_log(
            f'--resume: skipping {bad}, which is missing or incomplete (truncated while it was written?)',
            logger='current',
            level=logging.WARNING,
        )
    if path is not None:
        cfg.load_from = path
    elif skipped:  # mmengine would read last_checkpoint and fail on it
        print_log(
            f'--resume: no complete checkpoint in {cfg.work_dir}; training starts from the beginning',
            logger='current',
            level=logging.WARNING,
        )
        cfg.resume = False
