"""Helpers shared by the tests: the small backbones the tests build, the fragments of users' own configs,
running the project's tools the way a user does (as subprocesses), and checks that several configs' recipes
share."""

import contextlib
import io
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

from maformer_mm.config.zoo import memoised_package_config_index  # noqa: F401  (the tests import it from here)

REPO = Path(__file__).resolve().parents[1]

# Backbones small enough that a forward takes milliseconds on the CPU (embed dims, depths, heads).
TINY_ARCH = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
TINY_CFG = dict(arch=TINY_ARCH, pretrain_img_size=64, window_size=4, drop_path_rate=0.0)  # GLD grids 16x16, 8x8
MIN_ARCH = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))  # one block and one head per stage
USER_ARCH = dict(embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))  # the users' configs below


def widths(arch: dict) -> List[int]:
    """The channels of the four stages' outputs (a neck's or decode head's in_channels)."""
    return [arch['embed_dims'] * 2**i for i in range(4)]


def _keywords(values: dict) -> str:
    return ', '.join(f'{key}={value!r}' for key, value in values.items())


def backbone_override(arch: dict = USER_ARCH, img: int = 96, **settings) -> str:
    """The `backbone=dict(...)` of a user's config that replaces the inherited arch (config-file text)."""
    settings = _keywords(dict(pretrain_img_size=img, **settings))
    return f'backbone=dict(arch=dict(_delete_=True, {_keywords(arch)}), {settings})'


def run_tool(args: Sequence[str], cwd: Path, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `python ARGS...` in `cwd` with a clean torch loading environment; returns the completed process."""
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env['PYTHONUNBUFFERED'] = '1'
    proc = subprocess.run(
        [sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f'{args} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}')
    return proc


# How a rank dies when something aborts it at exit (std::terminate); see docs/distributed.md.
ABORT = 'terminate called without an active exception'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def launcher_env(extra_env: Optional[dict] = None) -> dict:
    """The environment of a `tools/dist_*.sh` run on CPU processes (gloo): the test's interpreter, a free port."""
    env = {k: v for k, v in os.environ.items() if k != 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD'}
    env.update(PYTHON=sys.executable, CUDA_VISIBLE_DEVICES='', PORT=str(free_port()), **(extra_env or {}))
    return env


def run_launcher(
    args: Sequence, cwd: Path, extra_env: Optional[dict] = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Runs `bash tools/dist_*.sh ARGS...` once, on CPU processes (gloo); returns the completed process.
    A rank that aborted fails the test here, whatever the caller expects of the run."""
    proc = subprocess.run(
        ['bash', *map(str, args)], cwd=cwd, env=launcher_env(extra_env), capture_output=True, text=True, timeout=timeout
    )
    assert ABORT not in proc.stderr, f'a rank aborted ({proc.returncode}):\n{proc.stderr[-3000:]}'
    return proc


DEMO_DET_CONFIG = REPO / 'configs' / 'mask_rcnn_maformer_t_demo.py'


def train_on_data_root_argv(config: Path, data_root: Path, work_dir: Path) -> List[str]:
    """tools/train.py arguments: `config` on the COCO data under `data_root` (--data-root), one epoch on the CPU,
    no validation."""
    return [
        str(config),
        '--data-root',
        str(data_root),
        '--work-dir',
        str(work_dir),
        '--device',
        'cpu',
        '--cfg-options',
        'train_cfg.max_epochs=1',
        'val_cfg=None',
        'val_dataloader=None',
        'val_evaluator=None',
    ]


def user_det_config(base: str, root: str, epochs: int = 1) -> str:
    """A user's own config, outside the repository: inherits `base` by path, points at small COCO data under
    `root`, and shrinks the backbone with a custom arch, so that a few iterations take seconds."""
    return f"""
_base_ = [{base!r}]
data_root = {root!r}
image_size = (96, 96)
model = dict({backbone_override()}, neck=dict(in_channels={widths(USER_ARCH)}))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs={epochs}, val_interval={epochs})
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=-1))
"""


def make_det_workspace(root: Path, num_train: int = 4, num_val: int = 2, epochs: int = 1) -> Path:
    """Generates a small COCO set under `root/data` and a user config inheriting ours; returns its path."""
    run_tool(
        [
            REPO / 'tools' / 'make_demo_data.py',
            'coco',
            '--out',
            root / 'data',
            '--train',
            num_train,
            '--val',
            num_val,
            '--size',
            96,
            96,
        ],
        cwd=REPO,
    )
    config = root / 'user_config.py'
    config.write_text(user_det_config(str(DEMO_DET_CONFIG), str(root / 'data') + '/', epochs))
    return config


def assert_no_decay_on_norms_and_position_terms(config: str, weight_decay: float) -> None:
    """The optimizer `config` builds gives norms, relative-position tables and GLD position biases no
    weight decay, and every other MAFormer parameter `weight_decay`."""
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper

    from maformer_mm.models import MAFormer

    cfg = Config.fromfile(config)
    model = MAFormer(arch=MIN_ARCH, pretrain_img_size=32)
    optim = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {id(p): g['weight_decay'] for g in optim.param_groups for p in g['params']}
    for name, param in model.named_parameters():
        no_decay = 'norm' in name or 'relative_position_bias_table' in name or name.endswith('gld.fc.bias')
        assert decay[id(param)] == (0.0 if no_decay else weight_decay), name


def coco_perfect_score(cfg, split: str = 'val', metrics: Sequence[str] = ('bbox',), model_classes=None) -> dict:
    """The metrics the config's `split` evaluator gives a model that finds every (non-crowd) object of the split's
    COCO JSON exactly, each with the label its category name has among `model_classes` (by default the train
    dataset's classes: what a trained model's label k means)."""
    import copy

    import numpy as np
    import torch
    from mmdet.datasets.api_wrappers import COCO
    from mmdet.registry import METRICS
    from mmengine.registry import init_default_scope

    from maformer_mm.config.classes import leaf_datasets

    init_default_scope('mmdet')
    evaluator = cfg[f'{split}_evaluator']
    metric = METRICS.build(dict(copy.deepcopy(dict(evaluator)), metric=list(metrics), outfile_prefix=None))
    metric.dataset_meta = dict(next(leaf_datasets(cfg[f'{split}_dataloader'].dataset)).metainfo)
    classes = tuple(model_classes or next(leaf_datasets(cfg.train_dataloader.dataset)).metainfo['classes'])
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(evaluator['ann_file'])
    names = {c['id']: c['name'] for c in coco.dataset['categories']}
    images = coco.dataset['images']
    for image in images:
        anns = [
            a for a in coco.imgToAnns[image['id']] if not a.get('iscrowd') and names.get(a['category_id']) in classes
        ]
        pred = dict(
            bboxes=torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (a['bbox'] for a in anns)]).reshape(-1, 4),
            scores=torch.ones(len(anns)),
            labels=torch.tensor([classes.index(names[a['category_id']]) for a in anns], dtype=torch.long),
        )
        if 'segm' in metrics:
            masks = [coco.annToMask(a) for a in anns] or [np.zeros((0, image['height'], image['width']))]
            pred['masks'] = torch.from_numpy(np.stack(masks) if anns else masks[0]).bool()
        metric.process({}, [dict(img_id=image['id'], ori_shape=(image['height'], image['width']), pred_instances=pred)])
    with contextlib.redirect_stdout(io.StringIO()):
        return metric.evaluate(len(images))


def assert_every_label_names_its_category(dataset, ann_file) -> int:
    """Each instance of a built mmdet dataset carries, through its label and the dataset's classes, the name of the
    JSON category of the annotation with its box; returns how many instances were checked."""
    import json

    data = json.loads(Path(ann_file).read_text())
    names = {c['id']: c['name'] for c in data['categories']}
    per_image = {}
    for ann in data['annotations']:
        per_image.setdefault(ann['image_id'], []).append(ann)
    classes = dataset.metainfo['classes']
    checked = 0
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        for instance in info['instances']:
            x1, y1, x2, y2 = instance['bbox']
            same_box = [
                names[a['category_id']]
                for a in per_image[info['img_id']]
                if max(abs(p - q) for p, q in zip(a['bbox'], (x1, y1, x2 - x1, y2 - y1))) < 1e-6
            ]
            assert same_box and set(same_box) == {classes[instance['bbox_label']]}, (info['img_id'], instance)
            checked += 1
    return checked
