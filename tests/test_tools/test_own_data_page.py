"""docs/own_data.md's commands run as written from a fresh clone: the page's `bash` block, read from the page (so
the two cannot drift), each line run as a user runs it in a folder holding only the clone's `configs/` and
`tools/` (no checkpoints, no data), with only options that shrink the run appended the way the page says options
are added (`--cfg-options`: one epoch, 64-pixel images, a checkpoint without the optimizer's state; a 2 + 1 image
generated set)."""

import json
import re
import shlex
from pathlib import Path
from typing import List

from tests.helpers import REPO, run_tool

PAGE = REPO / 'docs' / 'own_data.md'
SHRINK = {
    'tools/make_demo_data.py': ['--train', 2, '--val', 1, '--size', 64, 64],
    'tools/train.py': [
        '--cfg-options',
        'train_cfg.max_epochs=1',
        'train_dataloader.dataset.pipeline.2.scale=(64,64)',
        'val_dataloader.dataset.pipeline.1.scale=(64,64)',
        'default_hooks.checkpoint.save_optimizer=False',
    ],
    'tools/test.py': ['--cfg-options', 'test_dataloader.dataset.pipeline.1.scale=(64,64)'],
    'tools/infer.py': ['--cfg-options', 'test_dataloader.dataset.pipeline.1.scale=(64,64)'],
}


def page_commands() -> List[List[str]]:
    """The command lines of the page's `bash` blocks, split as the shell splits them (comments dropped)."""
    blocks = re.findall(r'^```bash\n(.*?)^```', PAGE.read_text(), re.S | re.M)
    return [shlex.split(line, comments=True) for block in blocks for line in block.splitlines() if line.strip()]


def test_the_pages_commands_run_as_written_in_a_fresh_clone(tmp_path):
    commands = page_commands()
    assert [c[:2] for c in commands] == [['.venv/bin/python', tool] for tool in SHRINK]
    clone = tmp_path / 'clone'
    clone.mkdir()
    for folder in ('configs', 'tools'):
        (clone / folder).symlink_to(REPO / folder)
    output = {}
    for command in commands:
        tool = command[1]
        proc = run_tool([*command[1:], *SHRINK[tool]], cwd=clone)
        output[tool] = proc.stdout + proc.stderr

    work_dir = clone / 'work_dirs' / 'mask_rcnn_maformer_t'
    assert (work_dir / 'epoch_1.pth').is_file() and not (clone / 'checkpoints').exists()
    train = output['tools/train.py']
    assert '--no-pretrained: training from scratch (removed model.backbone.init_cfg)' in train
    assert "labelled in the order the JSON lists them (mmdet's): 0 ball (id 1), 1 box (id 2)" in train
    assert re.search(r'coco/bbox_mAP: \d', output['tools/test.py'])
    preds = sorted((clone / 'outputs' / 'preds').glob('*.json'))
    assert [p.name for p in preds] == ['000001.json']
    pred = json.loads(preds[0].read_text())
    names = ('ball', 'box', 'wedge', 'ring')
    assert pred['label_names'] == [names[k] for k in pred['labels']]
    assert pred['category_ids'] == [k + 1 for k in pred['labels']]  # the generated set's ids, 1..4 in list order
    assert Path(clone / 'outputs' / 'vis' / '000001.png').is_file()
