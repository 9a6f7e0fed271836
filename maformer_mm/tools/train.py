"""Trains a detection, segmentation or classification config (the config's `default_scope` decides).

    python tools/train.py configs/mask_rcnn_maformer_s.py [--work-dir DIR] [--amp] [--resume [CKPT]]
    python tools/train.py configs/mask_rcnn_maformer_t.py --data-root data/my_coco   # your own COCO-format data
    python tools/train.py configs/mask_rcnn_maformer_t.py --no-pretrained   # without checkpoints/maformer_t_in1k.pth
    tools/dist_train.sh configs/mask_rcnn_maformer_s.py 8

The arguments are those of mmdet's and mmseg's tools/train.py, plus `--data-root`, `--no-pretrained` and `--device`.
A pretrained checkpoint the config names but that is not there stops the run before anything is built, naming the
setting and `--no-pretrained`.
"""

import argparse
import os.path as osp
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from maformer_mm.checkpoint.remote import is_remote
from maformer_mm.config.data_root import CocoLayout
from maformer_mm.config.pretrained import drop_pretrained
from maformer_mm.engine.runs import train
from maformer_mm.tools.cli import config_from_args, parse_run_args, run_arg_parser

__all__ = ['parse_args', 'build_config', 'apply_amp', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = run_arg_parser(__doc__)
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='automatic mixed precision (fp16 with loss scaling on CUDA, bf16 on CPU)',
    )
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr to the actual batch size')
    parser.add_argument(
        '--no-pretrained',
        action='store_true',
        help="train from scratch: drop the config's pretrained weights (init_cfg type='Pretrained', e.g. "
        'checkpoints/maformer_t_in1k.pth)',
    )
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from CKPT (a file, URL or hub name), or from the latest checkpoint in the work '
        'dir if none is given',
    )
    return parse_run_args(parser, argv)


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied, as mmdet's tools/train.py does."""
    return _build(args)[0]


def apply_amp(cfg: Config, device: torch.device) -> None:
    """`--amp`: fp16 with dynamic loss scaling (mmengine's AmpOptimWrapper) on CUDA; bf16 on the CPU, where
    mmengine's AMP cannot run, autocasting the backbone only (no mmcv kernel takes bf16) on the device of the run,
    never on whichever device torch happens to see (a `--device cpu` run on a GPU machine autocasts the CPU)."""
    if device.type == 'cuda':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        cfg.optim_wrapper.type = 'BF16OptimWrapper'
        cfg.optim_wrapper.scope = 'backbone'
        cfg.optim_wrapper.device_type = device.type


def _build(args: argparse.Namespace) -> Tuple[Config, Optional[CocoLayout], List[str]]:
    """The config, the layout `--data-root` read, and the pretrained inits `--no-pretrained` removed."""
    cfg, layout = config_from_args(args, ('train', 'val', 'test'))
    dropped = drop_pretrained(cfg.model) if args.no_pretrained else []
    if args.amp:
        apply_amp(cfg, args.device)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError(f'--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)` in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not is_remote(args.resume) and not osp.isfile(args.resume):  # URLs and hub names are read when resuming
            raise FileNotFoundError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg, layout, dropped


def main(argv: Optional[Sequence[str]] = None) -> Runner:
    """Trains; returns the finished Runner."""
    args = parse_args(argv)
    cfg, layout, dropped = _build(args)
    notes = []
    if args.no_pretrained:
        notes.append(
            f'--no-pretrained: training from scratch (removed {", ".join(dropped)})'
            if dropped
            else '--no-pretrained: the config names no pretrained weights'
        )
    return train(cfg, args.device, args.config, layout, notes)


if __name__ == '__main__':
    main()
