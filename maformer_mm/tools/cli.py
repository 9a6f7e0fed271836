"""What the tools' command lines share: the arguments of tools/train.py and tools/test.py (mmdet's, plus
`--data-root`, `--device` and `--checkpoint-sha256`), and the config they make of them."""

import argparse
import os
import os.path as osp
from typing import Any, Callable, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from maformer_mm.checkpoint.remote import check_sha256
from maformer_mm.config.data_root import CocoLayout, apply_coco_layout, read_coco_layout
from maformer_mm.config.zoo import load_config
from maformer_mm.engine.runs import default_device, parse_device

__all__ = [
    'add_device_argument',
    'add_checkpoint_sha256_argument',
    'parse_hw',
    'run_arg_parser',
    'parse_run_args',
    'config_from_args',
]


def _option_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """`parse` as an argparse type: its ValueError becomes argparse's message for the option."""

    def checked(value: str) -> Any:
        try:
            return parse(value)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return checked


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """`--device`, parsed and checked by `parse_device` into a torch.device (the same option in every tool)."""
    parser.add_argument(
        '--device',
        type=_option_type(parse_device),
        default=default_device(),
        help='cpu, cuda or cuda:N (default: cuda when available, else cpu)',
    )


def add_checkpoint_sha256_argument(parser: argparse.ArgumentParser) -> None:
    """`--checkpoint-sha256 HEX`: the checkpoint file (local, downloaded or cached) must have this full SHA-256."""
    parser.add_argument(
        '--checkpoint-sha256',
        type=_option_type(lambda value: check_sha256(value, '--checkpoint-sha256')),
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
