"""Minimal reproduction, mmengine only: resuming from a checkpoint makes CheckpointHook delete a folder the
checkpoint names.

Report (ready to file at open-mmlab/mmengine):

    Title: CheckpointHook removes (rmtree) whatever path a resumed checkpoint stores as best_ckpt

    On resume, `Runner.resume` loads the checkpoint's `message_hub` into the run's message hub, and
    `CheckpointHook.before_train` takes `runtime_info['best_ckpt']` (and `best_ckpt_<key>`) as the path of the
    previous best checkpoint. At the first better score, `_save_best_checkpoint` removes that path: `remove` for a
    file, `rmtree` for a folder. A checkpoint whose runtime info holds `best_ckpt='/some/folder'` and a low
    `best_score` (plain strings and floats, which every weights-only loader admits) deletes that folder, wherever it
    is. `keep_ckpt_ids` entries are formatted into file names of the hook's folder without a type check either.

    Expected: the hook deletes only files it wrote for this run: a best checkpoint in its `out_dir` under its own
    name, a regular file, not a link or a folder outside it; anything else from the runtime info is dropped with a
    warning. Seen with mmengine 0.10.7.

    python benchmarks/repro/mmengine_checkpoint_hook_rmtree.py   # exits with 1 when the folder was deleted

mmengine 0.10.7 cannot resume its own checkpoints under torch >= 2.6's weights-only default (mmengine issue 1655):
the script sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, the usual workaround, for the files it writes itself.
"""

import os
import sys
import tempfile

os.environ['TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'] = '1'  # before torch loads anything

import torch
from mmengine.evaluator import BaseMetric
from mmengine.model import BaseModel
from mmengine.runner import Runner


class Toy(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        if mode == 'loss':
            return {'loss': (self.w * inputs).sum()}
        return [self.w.detach()] * len(inputs)


class Score(BaseMetric):
    def process(self, data_batch, data_samples) -> None:
        self.results.append(1.0)

    def compute_metrics(self, results) -> dict:
        return {'score': 1.0}


def _runner(work_dir: str, resume_from=None) -> Runner:
    loader = dict(
        dataset=[dict(inputs=torch.ones(1))] * 2,
        sampler=dict(type='DefaultSampler', shuffle=False),
        batch_size=1,
        collate_fn=dict(type='default_collate'),
    )
    return Runner(
        model=Toy(),
        work_dir=work_dir,
        train_dataloader=loader,
        val_dataloader=loader,
        val_evaluator=[Score()],
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=2 if resume_from else 1),
        val_cfg=dict(),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, save_best='score', rule='greater')),
        load_from=resume_from,
        resume=resume_from is not None,
        experiment_name=f'repro_{bool(resume_from)}',
    )


def main() -> int:
    root = tempfile.mkdtemp()
    victim = os.path.join(root, 'precious')
    os.makedirs(victim)
    open(os.path.join(victim, 'data.txt'), 'w').write('keep me')
    _runner(os.path.join(root, 'first')).train()
    checkpoint = torch.load(os.path.join(root, 'first', 'epoch_1.pth'), weights_only=False)  # our own file
    checkpoint['message_hub']['runtime_info'].update(best_ckpt=victim, best_score=-1.0)
    crafted = os.path.join(root, 'crafted.pth')
    torch.save(checkpoint, crafted)
    _runner(os.path.join(root, 'second'), resume_from=crafted).train()
    deleted = not os.path.exists(victim)
    print(f'{victim} {"was deleted by the resumed run" if deleted else "is still there"}')
    return 1 if deleted else 0


if __name__ == '__main__':
    sys.exit(main())
