"""Checkpoints that survive a kill, and a resume that deletes nothing a checkpoint names.

mmengine 0.10.7's CheckpointHook first removes the oldest checkpoint beyond `max_keep_ckpts`, then writes the new
one in place (`open(path, 'wb')`), then `last_checkpoint`. A kill during the write leaves a truncated file under
the checkpoint's name, and with `max_keep_ckpts=1` no usable checkpoint at all. SafeCheckpointHook writes to
`NAME.part`, syncs it and renames it to NAME (atomic), writes `last_checkpoint` the same way, and removes old
checkpoints only after that.

On resume, CheckpointHook takes from the checkpoint's runtime info the path of the previous best checkpoint
(`best_ckpt`, `best_ckpt_<key>`) and the steps of the kept checkpoints (`keep_ckpt_ids`), and deletes them later
(`remove`, or `rmtree` for a folder). A checkpoint can name any path there. SafeCheckpointHook first keeps only
what it would have written itself for this run (`resumed_paths`): a best checkpoint in its own folder under its
own name, kept steps that are ints whose files are regular files; every other entry is dropped with a warning.

`use_safe_checkpoints` puts the hook in place of the config's CheckpointHook (the configs of this package name it
already) and points an automatic `--resume` at the newest complete checkpoint of the work dir.
"""

import glob
import numbers
import os
import os.path as osp
import re
import zipfile
from typing import Any, List, Optional, Tuple

from mmengine.config import Config
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, get_file_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..messages import warn

__all__ = [
    'SafeCheckpointHook',
    'resumed_paths',
    'is_complete_checkpoint',
    'latest_complete_checkpoint',
    'use_safe_checkpoints',
]

PARTIAL = '.part'  # suffix of a checkpoint (or last_checkpoint) being written


def _replace_synced(partial: str, path: str) -> None:
    with open(partial, 'rb') as f:
        os.fsync(f.fileno())  # the data is on disk before the name points at it
    os.replace(partial, path)


def _write_text_atomically(path: str, text: str) -> None:
    with open(path + PARTIAL, 'w') as f:
        f.write(text)
    _replace_synced(path + PARTIAL, path)


def _hook_out_dir(hook: CheckpointHook, work_dir: str) -> str:
    """The folder CheckpointHook.before_train settles on: `out_dir` joined with the work dir's name, or the work dir."""
    out_dir = hook.out_dir if hook.out_dir is not None else work_dir
    if out_dir != work_dir:
        out_dir = osp.join(out_dir, osp.basename(work_dir.rstrip(osp.sep)))
    return out_dir


def _step_pattern(filename_tmpl: str) -> str:
    """`epoch_{}.pth` -> a regular expression of the names it formats from a step."""
    return r'(\d+)'.join(re.escape(part) for part in filename_tmpl.split('{}'))


def _own_file(path: str) -> bool:
    return osp.isfile(path) and not osp.islink(path)


def resumed_paths(hook: CheckpointHook, info: dict, work_dir: str) -> List[str]:
    """Drops from `info` (a resumed message hub's runtime info, changed in place) every path and step that `hook`
    would not have written itself for this run; returns what was dropped, one sentence each.

    Kept: `best_ckpt*` naming a regular file (not a link) in the hook's folder under the hook's own best name
    (`best_<key>_<filename_tmpl of a step>`, with the configured key unless `save_best='auto'`); `keep_ckpt_ids`
    entries that are non-negative ints whose checkpoint is a regular file or absent; `best_score*` that are numbers.
    """
    out_dir = _hook_out_dir(hook, work_dir)
    step_name = _step_pattern(hook.filename_tmpl)
    keys = [k.replace('/', '_') for k in (hook.save_best or [])]
    key_pattern = '.+' if 'auto' in keys or not keys else '|'.join(re.escape(k) for k in keys)
    best_name = re.compile(rf'best_({key_pattern})_{step_name}')
    dropped = []
    for key in [k for k in info if isinstance(k, str) and k.startswith('best_ckpt')]:
        path = info[key]
        own = (
            isinstance(path, str)
            and osp.dirname(path) == out_dir
            and best_name.fullmatch(osp.basename(path))
            and _own_file(path)
        )
        if not own:
            del info[key]
            dropped.append(
                f'{key}={_shown(path)}: not a regular file named best_<metric>_{hook.filename_tmpl} in {out_dir}'
            )
    for key in [k for k in info if isinstance(k, str) and k.startswith('best_score')]:
        score = info[key]
        if not isinstance(score, numbers.Real) or isinstance(score, bool):
            del info[key]
            dropped.append(f'{key}={_shown(score)}: not a number')
    if 'keep_ckpt_ids' in info:
        steps = info['keep_ckpt_ids']
        kept = []
        for step in steps if isinstance(steps, list) else [steps]:
            path = osp.join(out_dir, hook.filename_tmpl.format(step)) if type(step) is int and step >= 0 else None
            if path is not None and (_own_file(path) or not osp.lexists(path)):
                kept.append(step)
            else:
                dropped.append(f'keep_ckpt_ids entry {_shown(step)}: not the step of a checkpoint file in {out_dir}')
        info['keep_ckpt_ids'] = kept
    return dropped


def _shown(value: Any) -> str:
    text = repr(value) if isinstance(value, (str, int, float, type(None))) else f'a {type(value).__name__}'
    return text if len(text) <= 120 else text[:117] + '...'


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's CheckpointHook, except that a kill while saving cannot leave a truncated checkpoint behind a
    checkpoint's name or `last_checkpoint`, nor remove the previous checkpoint before the next one is whole, and that
    a resumed checkpoint cannot make it delete what it did not write (`resumed_paths`).

    It takes the same arguments. Checkpoints on other storage than the local file system (`backend_args`,
    `file_client_args`) are saved by CheckpointHook's own code; their resumed paths are dropped.
    """

    def before_train(self, runner) -> None:
        info = runner.message_hub.runtime_info
        if self.file_client_args is None and isinstance(
            get_file_backend(_hook_out_dir(self, runner.work_dir)), LocalBackend
        ):
            dropped = resumed_paths(self, info, runner.work_dir)
        else:  # remote storage: no way to tell a file from a link or a folder there
            dropped = [
                f'{k}={_shown(info[k])}' for k in list(info) if str(k).startswith(('best_ckpt', 'keep_ckpt_ids'))
            ]
            for key in [k for k in list(info) if str(k).startswith(('best_ckpt', 'keep_ckpt_ids'))]:
                del info[key]
        for sentence in dropped:
            warn(
                f'resume: dropped {sentence} from the runtime info of the resumed checkpoint: CheckpointHook would '
                'delete it later, and it is not a file this run would have written'
            )
        super().before_train(runner)

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
        warn(f'--resume: skipping {bad}, which is missing or incomplete (truncated while it was written?)')
    if path is not None:
        cfg.load_from = path
    elif skipped:  # mmengine would read last_checkpoint and fail on it
        warn(f'--resume: no complete checkpoint in {cfg.work_dir}; training starts from the beginning')
        cfg.resume = False
