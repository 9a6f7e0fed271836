"""Trains a detection, segmentation or classification config (the config's `default_scope` decides).

    python tools/train.py configs/mask_rcnn_maformer_s.py [--work-dir DIR] [--amp] [--resume [CKPT]]
    tools/dist_train.sh configs/mask_rcnn_maformer_s.py 8

The arguments are those of mmdet's and mmseg's tools/train.py.
"""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import maformer_mm  # noqa: F401  (registers MAFormer; lets torch's safe loader read mmengine checkpoints)
from maformer_mm.utils.cli import config_from_args
from maformer_mm.utils.launch import prepare_launcher
from maformer_mm.utils.preflight import check_data


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument('--amp', action='store_true', default=False, help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr to the actual batch size')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from CKPT, or from the latest checkpoint in the work dir if none is given')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override settings of the config, key=value (e.g. model.backbone.arch=tiny)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied, as mmdet's tools/train.py does."""
    cfg = config_from_args(args)
    if args.amp:  # fp16 with loss scaling on GPUs; bf16 (no scaling needed) where mmengine's AMP cannot run
        if torch.cuda.is_available():
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:  # mmcv's CPU ops take float32: autocast the backbone only
            cfg.optim_wrapper.type = 'BF16OptimWrapper'
            cfg.optim_wrapper.scope = 'backbone'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ValueError(f'--auto-scale-lr needs `auto_scale_lr = dict(base_batch_size=...)` in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume checkpoint not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    cfg = build_config(args)
    check_data(cfg, ('train', 'val'))
    prepare_launcher(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
