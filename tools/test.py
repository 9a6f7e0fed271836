"""Tests (evaluates) a checkpoint of a detection, segmentation or classification config.

    python tools/test.py configs/mask_rcnn_maformer_s.py CKPT [--out results.pkl] [--show-dir DIR] [--tta]
    tools/dist_test.sh configs/mask_rcnn_maformer_s.py CKPT 8

Prints the config's metrics (COCO bbox/segm AP, per-class IoU and mIoU, top-1).
"""
import argparse
import os
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

import maformer_mm  # noqa: F401
from maformer_mm.utils.cli import config_from_args
from maformer_mm.utils.launch import prepare_launcher
from maformer_mm.utils.preflight import check_data


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save the evaluation metrics')
    parser.add_argument('--out', help='dump raw predictions to this pickle file')
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='save images with drawn predictions under this dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of --show (s)')
    parser.add_argument('--tta', action='store_true', help='test-time augmentation (the config\'s tta_model)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override settings of the config')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def _enable_visualization(cfg: Config, args: argparse.Namespace) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ValueError(f'--show/--show-dir need a `visualization` hook in default_hooks of {args.config}')
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if args.show_dir:
        if cfg.get('default_scope') == 'mmdet':
            hook['test_out_dir'] = args.show_dir
        else:  # mmseg and mmpretrain save through the visualizer
            hook['interval'] = 1
            cfg.visualizer['save_dir'] = args.show_dir


def build_config(args: argparse.Namespace) -> Config:
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg = config_from_args(args)
    cfg.load_from = args.checkpoint
    if args.show or args.show_dir:
        _enable_visualization(cfg, args)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise ValueError(f'--tta needs `tta_model` and `tta_pipeline` in {args.config}')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg


def _dump_metric(cfg: Config, out: str):
    if not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file, got {out}')
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults
    return DumpResults(out_file_path=out)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    cfg = build_config(args)
    check_data(cfg, ('test', ))
    prepare_launcher(cfg)
    runner = RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)
    if args.out:
        runner.test_evaluator.metrics.append(_dump_metric(cfg, args.out))
    return runner.test()


if __name__ == '__main__':
    main()
