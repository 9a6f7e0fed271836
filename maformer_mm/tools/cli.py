"""What the tools share: finding a config, the argument set of tools/train.py and tools/test.py, the
config they build from it, and the device a run uses."""

import argparse
import itertools
import os
import os.path as osp
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence, Tuple

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..zoo import PREFIX, resolve_config
from .data_root import CocoLayout, apply_coco_layout, read_coco_layout

__all__ = [
    'load_config',
    'default_device',
    'parse_device',
    'add_device_argument',
    'add_checkpoint_sha256_argument',
    'parse_hw',
    'on_device',
    'run_arg_parser',
    'parse_run_args',
    'config_from_args',
    'checkpoint_file',
    'build_runner',
]


def load_config(name: str) -> Config:
    """Loads a config file, one of maformer_mm's configs by name (`mask_rcnn_maformer_t`,
    `maformer_mm::maformer/mask_rcnn_maformer_t.py`), or another package's config named as `_base_` names them
    (`mmdet::swin/x.py`, through mmengine's `get_config`)."""
    if '::' in name and not name.startswith(PREFIX):
        from mmengine.hub import get_config

        return get_config(name)
    return Config.fromfile(resolve_config(name))


def default_device() -> str:
    """`cuda` where torch sees a GPU, else `cpu` (the `--device` default of every tool)."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def parse_device(device: str) -> torch.device:
    """`--device` as a torch.device; ValueError naming the value when it is not a usable cpu/cuda device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f'--device {device!r} is not a device (expected cpu, cuda or cuda:N): {error}') from None
    if parsed.type not in ('cpu', 'cuda'):
        raise ValueError(f'--device {device!r}: only cpu and cuda devices are supported')
    if parsed.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(
                f'--device {device!r}: CUDA is not available on this machine '
                '(torch.cuda.is_available() is False); use --device cpu'
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f'--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return parsed


def _device_type(value: str) -> torch.device:
    try:
        return parse_device(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """`--device`, parsed and checked by `parse_device` into a torch.device (the same option in every tool)."""
    parser.add_argument(
        '--device',
        type=_device_type,
        default=default_device(),
        help='cpu, cuda or cuda:N (default: cuda when available, else cpu)',
    )


def _sha256_type(value: str) -> str:
    from ..checkpoint.remote import check_sha256

    try:
        return check_sha256(value, '--checkpoint-sha256')
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_checkpoint_sha256_argument(parser: argparse.ArgumentParser) -> None:
    """`--checkpoint-sha256 HEX`: the checkpoint file (local, downloaded or cached) must have this full SHA-256."""
    parser.add_argument(
        '--checkpoint-sha256',
        type=_sha256_type,
        help="the checkpoint's full SHA-256 (64 hex digits, as sha256sum prints it): the file read, wherever it "
        'comes from, must have it',
    )


def parse_hw(values: Optional[Sequence[int]], option: str = '--shape') -> Optional[Tuple[int, int]]:
    """An `H W` or single-side (square) option as (H, W); None when it was not given.

    Raises:
        ValueError: more than two values, or a side below 1 (the message names `option`).
    """
    if not values:
        return None
    if len(values) > 2 or min(values) < 1:
        raise ValueError(f'{option} takes H W or one side, positive, got {list(values)}')
    return values[0], values[-1]


@contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Makes mmengine place the model (and map resumed checkpoints) on `device` for the duration.

    mmengine's Runner moves the model to `mmengine.device.get_device()`, which returns the module-level
    `DEVICE` chosen once at import (cuda whenever torch sees a GPU) and offers no setting; `cuda:N`
    becomes the current CUDA device, so that mmengine's plain `cuda` means it.
    """
    import mmengine.device.utils as mmengine_device

    previous = mmengine_device.DEVICE
    mmengine_device.DEVICE = device.type
    if device.type == 'cuda' and device.index is not None:
        torch.cuda.set_device(device.index)
    try:
        yield
    finally:
        mmengine_device.DEVICE = previous


def run_arg_parser(description: str, checkpoint: bool = False) -> argparse.ArgumentParser:
    """The arguments tools/train.py and tools/test.py share (those of mmdet's tools, plus `--data-root`
    and `--device`); each tool adds its own."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help="config file, or the name of one of maformer_mm's configs")
    if checkpoint:
        parser.add_argument(
            'checkpoint', help="checkpoint file, URL or hub name, or a training run's work dir (its last checkpoint)"
        )
        add_checkpoint_sha256_argument(parser)
    parser.add_argument(
        '--work-dir', help='where logs, metrics and checkpoints go (default: ./work_dirs/<config name>)'
    )
    parser.add_argument(
        '--data-root',
        help="a data set in mmdet's COCO 2017 layout (annotations/instances_"
        '{train,val}2017.json, train2017/, val2017/): sets the data paths, '
        "the classes (from the JSON) and every head's num_classes",
    )
    add_device_argument(parser)
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value (e.g. model.backbone.arch=tiny)',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none', help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    return parser


def parse_run_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parses `argv`, checks `--device` and exports LOCAL_RANK as mmdet's tools do."""
    args = parser.parse_args(argv)
    if args.launcher != 'none' and args.device.type != default_device():
        parser.error(
            f'--device {args.device} with --launcher {args.launcher}: distributed runs use the default '
            f'device ({default_device()}); hide GPUs with CUDA_VISIBLE_DEVICES= for CPU processes'
        )
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def config_from_args(
    args: argparse.Namespace, data_splits: Sequence[str] = ('train', 'val', 'test')
) -> Tuple[Config, Optional[CocoLayout]]:
    """Loads `args.config` and applies, in this order, `--data-root` (for `data_splits`), `--cfg-options`
    (so explicit settings win), `--launcher` and `--work-dir` (default ./work_dirs/<config name>).

    Returns the config and the `CocoLayout` that `--data-root` read (None without it).
    """
    cfg = load_config(args.config)
    layout = None
    if getattr(args, 'data_root', None):
        if cfg.get('default_scope') != 'mmdet':
            raise ValueError(
                f'--data-root reads COCO-format detection data; {args.config} is an '
                f'{cfg.get("default_scope")} config: set its data in a config of your own (README: '
                '"Your own data")'
            )
        layout = read_coco_layout(args.data_root, data_splits)
        apply_coco_layout(cfg, layout)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg.launcher = args.launcher
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg, layout


def checkpoint_file(path: str) -> str:
    """A CHECKPOINT argument: a file, URL or hub name as it is, or a work dir: the checkpoint its `last_checkpoint`
    names (mmengine writes that file into the work dir with each checkpoint), so that a command can name a training
    run's result without knowing its schedule.

    Raises:
        FileNotFoundError: a folder without `last_checkpoint`, or whose `last_checkpoint` names no file there.
    """
    if not osp.isdir(path):
        return path
    record = osp.join(path, 'last_checkpoint')
    if not osp.isfile(record):
        raise FileNotFoundError(
            f'checkpoint {path} is a folder without a last_checkpoint file (mmengine writes one into the work dir '
            'with each checkpoint): give a checkpoint file'
        )
    with open(record) as f:
        named = f.read().strip()
    for candidate in (osp.join(path, osp.basename(named)), named):  # the work dir may have moved since
        if named and osp.isfile(candidate):
            return candidate
    raise FileNotFoundError(f'{record} names {named!r}, which is not in {path}')


_RUNS = itertools.count()


def build_runner(cfg: Config) -> Runner:
    """The config's Runner (its `runner_type` if it names one), with a visualizer of its own.

    mmdet's and mmseg's runtime bases name the visualizer 'visualizer', and mmengine builds a named visualizer
    once per process (`ManagerMixin.get_instance`): a second run in the same process (the demos train and then
    test, so do notebooks and the tests) would log its scalars and draw into the first run's folder. A name per
    run gives each its own.
    """
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer['name'] = f'{cfg.visualizer.get("name", "visualizer")}_{os.getpid()}_{next(_RUNS)}'
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
