"""Checkpoints survive a kill while saving: SafeCheckpointHook writes each whole or not at all and removes the
old one only after the new one is whole; an automatic --resume takes the newest complete checkpoint (crafted
truncated, corrupted and missing files)."""

import os
import shutil
import time

import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from maformer_mm.engine.checkpointing import is_complete_checkpoint, latest_complete_checkpoint, use_safe_checkpoints


def _checkpoint(path, epoch: int = 1) -> str:
    torch.save({'meta': {'epoch': epoch}, 'state_dict': {'w': torch.randn(64, 64)}}, path)
    return str(path)


def _truncate(path, keep: float = 0.5) -> None:
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[: int(len(data) * keep)])


def test_a_whole_checkpoint_is_complete_and_any_cut_or_damage_is_not(tmp_path):
    whole = _checkpoint(tmp_path / 'whole.pth')
    assert is_complete_checkpoint(whole)
    size = os.path.getsize(whole)
    for keep in (0.0, 0.1, 0.5, (size - 1) / size):  # cut anywhere, down to the last byte
        shutil.copy(whole, tmp_path / 'cut.pth')
        _truncate(tmp_path / 'cut.pth', keep)
        assert not is_complete_checkpoint(str(tmp_path / 'cut.pth')), keep
    damaged = bytearray(open(whole, 'rb').read())
    damaged[size // 2] ^= 0xFF  # inside the tensor data: the record's CRC no longer matches
    (tmp_path / 'damaged.pth').write_bytes(bytes(damaged))
    assert not is_complete_checkpoint(str(tmp_path / 'damaged.pth'))
    (tmp_path / 'text.pth').write_text('not a checkpoint')
    assert not is_complete_checkpoint(str(tmp_path / 'text.pth'))
    assert not is_complete_checkpoint(str(tmp_path / 'missing.pth'))


def _work_dir(tmp_path, names=('epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth')):
    for i, name in enumerate(names):
        _checkpoint(tmp_path / name, i + 1)
        os.utime(tmp_path / name, (time.time() - 100 + i, time.time() - 100 + i))  # later epochs are newer
    return tmp_path


def test_resume_takes_what_last_checkpoint_names_when_it_is_complete(tmp_path):
    work = _work_dir(tmp_path)
    (work / 'last_checkpoint').write_text(str(work / 'epoch_2.pth'))
    assert latest_complete_checkpoint(str(work)) == (str(work / 'epoch_2.pth'), [])


def test_resume_passes_over_a_truncated_or_missing_named_checkpoint_to_the_newest_complete_one(tmp_path):
    work = _work_dir(tmp_path)
    _truncate(work / 'epoch_3.pth')
    (work / 'epoch_4.pth.part').write_bytes(b'PK\x03\x04 half written')  # a save that was cut off: not a candidate
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    assert latest_complete_checkpoint(str(work)) == (str(work / 'epoch_2.pth'), [str(work / 'epoch_3.pth')])
    (work / 'last_checkpoint').write_text(str(work / 'epoch_9.pth'))  # removed since
    path, skipped = latest_complete_checkpoint(str(work))
    assert path == str(work / 'epoch_2.pth') and skipped == [str(work / 'epoch_9.pth'), str(work / 'epoch_3.pth')]


def test_resume_finds_nothing_when_no_checkpoint_is_complete(tmp_path):
    work = _work_dir(tmp_path, ['epoch_1.pth'])
    _truncate(work / 'epoch_1.pth')
    assert latest_complete_checkpoint(str(work)) == (None, [str(work / 'epoch_1.pth')])
    assert latest_complete_checkpoint(str(tmp_path / 'empty_dir_that_is_not_there')) == (None, [])


def _cfg(work_dir, **kw) -> Config:
    return Config(
        dict(work_dir=str(work_dir), default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)), **kw)
    )


def test_use_safe_checkpoints_swaps_the_hook_and_points_auto_resume_at_a_complete_checkpoint(tmp_path, mm_log):
    work = _work_dir(tmp_path)
    _truncate(work / 'epoch_3.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_3.pth'))
    cfg = _cfg(work, resume=True, load_from=None)
    use_safe_checkpoints(cfg)
    assert cfg.default_hooks.checkpoint.type == 'SafeCheckpointHook' and cfg.default_hooks.checkpoint.interval == 1
    assert cfg.resume and cfg.load_from == str(work / 'epoch_2.pth')
    assert f'--resume: skipping {work / "epoch_3.pth"}, which is missing or incomplete' in mm_log()

    explicit = _cfg(work, resume=True, load_from=str(work / 'epoch_1.pth'))  # --resume CKPT: as given
    use_safe_checkpoints(explicit)
    assert explicit.load_from == str(work / 'epoch_1.pth')
    mine = Config(dict(work_dir=str(work), default_hooks=dict(checkpoint=dict(type='MyCheckpointHook'))))
    use_safe_checkpoints(mine)  # a hook of the user's own stays
    assert mine.default_hooks.checkpoint.type == 'MyCheckpointHook' and 'load_from' not in mine


def test_without_a_complete_checkpoint_auto_resume_starts_over_and_says_so(tmp_path, mm_log):
    work = _work_dir(tmp_path, ['epoch_1.pth'])
    _truncate(work / 'epoch_1.pth')
    (work / 'last_checkpoint').write_text(str(work / 'epoch_1.pth'))
    cfg = _cfg(work, resume=True, load_from=None)
    use_safe_checkpoints(cfg)
    assert not cfg.resume and cfg.load_from is None  # mmengine would otherwise load the truncated file
    assert 'no complete checkpoint in' in mm_log()


class _Points(Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return dict(inputs=torch.full((2,), float(i)), target=torch.tensor([float(i)]))


class _Linear(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(2, 1)

    def forward(self, inputs, target, mode='tensor'):
        out = self.fc(inputs)  # default_collate stacked the batch
        return dict(loss=((out - target) ** 2).mean()) if mode == 'loss' else out


class _SeeWhatIsOnDisk(Hook):
    """Records the work dir's checkpoints at the moment each checkpoint is about to be written."""

    def __init__(self) -> None:
        self.seen = []

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        self.seen.append(sorted(n for n in os.listdir(runner.work_dir) if n.startswith('epoch_')))


def test_safe_checkpoint_hook_keeps_the_old_checkpoint_until_the_new_one_is_whole(tmp_path):
    seen = _SeeWhatIsOnDisk()
    runner = Runner(
        model=_Linear(),
        work_dir=str(tmp_path),
        custom_hooks=[seen],
        train_dataloader=dict(
            dataset=_Points(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='default_collate'),
        ),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=1)),
        default_scope='mmengine',
    )
    runner.train()
    # mmengine's CheckpointHook would have removed epoch_1.pth before writing epoch_2.pth: [[], [], []]
    assert seen.seen == [[], ['epoch_1.pth'], ['epoch_2.pth']]
    assert sorted(n for n in os.listdir(tmp_path) if 'epoch_' in n) == ['epoch_3.pth']  # nothing partial left
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'epoch_3.pth')
    assert is_complete_checkpoint(str(tmp_path / 'epoch_3.pth'))
    assert torch.load(tmp_path / 'epoch_3.pth', weights_only=False)['meta']['epoch'] == 3


@pytest.mark.parametrize('max_keep', [-1, 2])
def test_safe_checkpoint_hook_keeps_as_many_as_asked(tmp_path, max_keep):
    runner = Runner(
        model=_Linear(),
        work_dir=str(tmp_path),
        train_dataloader=dict(
            dataset=_Points(),
            sampler=dict(type='DefaultSampler', shuffle=False),
            batch_size=2,
            collate_fn=dict(type='default_collate'),
        ),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(checkpoint=dict(type='SafeCheckpointHook', interval=1, max_keep_ckpts=max_keep)),
        default_scope='mmengine',
    )
    runner.train()
    kept = sorted(n for n in os.listdir(tmp_path) if n.startswith('epoch_'))
    assert kept == (['epoch_1.pth', 'epoch_2.pth', 'epoch_3.pth'] if max_keep == -1 else ['epoch_2.pth', 'epoch_3.pth'])
