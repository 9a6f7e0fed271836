"""Tests (evaluates) a checkpoint of a detection, segmentation or classification config.

    python tools/test.py configs/mask_rcnn_maformer_s.py CKPT [--out results.pkl] [--show-dir DIR] [--tta]
    python tools/test.py configs/mask_rcnn_maformer_t.py CKPT --data-root data/my_coco   # your own COCO data
    python tools/test.py configs/mask_rcnn_maformer_t.py work_dirs/mask_rcnn_maformer_t   # its last checkpoint
    python tools/test.py configs/upernet_maformer_t_512x512_160k_ade20k.py CKPT --out preds/  # one PNG per image
    python tools/test.py configs/mask_rcnn_maformer_t.py det.onnx --backend onnxruntime  # an exported detector
    tools/dist_test.sh configs/mask_rcnn_maformer_s.py CKPT 8

Prints the config's metrics (COCO bbox/segm AP, per-class IoU and mIoU, top-1) and returns them from main().
"""

import argparse
import os.path as osp
from typing import Optional, Sequence, Tuple

from mmengine.config import Config

from maformer_mm.checkpoint.remote import checkpoint_file, is_remote
from maformer_mm.config.data_root import CocoLayout
from maformer_mm.engine.runs import test, test_onnx
from maformer_mm.tools.cli import config_from_args, parse_run_args, run_arg_parser

__all__ = ['parse_args', 'build_config', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = run_arg_parser(__doc__, checkpoint=True)
    parser.add_argument(
        '--out',
        help='raw predictions to a .pkl file; for segmentation configs a folder '
        "gets one prediction PNG per image instead (as mmseg's tools/test.py)",
    )
    parser.add_argument('--show', action='store_true', help='show prediction results in a window')
    parser.add_argument('--show-dir', help='save images with drawn predictions under this dir')
    parser.add_argument('--wait-time', type=float, default=2, help='the interval of --show (s)')
    parser.add_argument('--tta', action='store_true', help="test-time augmentation (the config's tta_model)")
    parser.add_argument(
        '--backend',
        choices=('pytorch', 'onnxruntime'),
        default='pytorch',
        help='onnxruntime: CHECKPOINT is a detector exported whole by tools/deploy/export_onnx.py, run in ONNX '
        "Runtime on the CPU and scored by the config's metric (docs/deploy.md)",
    )
    return parse_run_args(parser, argv)


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


def _is_pickle(path: str) -> bool:
    return path.endswith(('.pkl', '.pickle'))


def _segmentation_pngs(cfg: Config, out_dir: str) -> None:
    """`--out DIR` for segmentation configs, as mmseg's tools/test.py: IoUMetric writes each prediction as
    a PNG of label values (shifted back by one where reduce_zero_label removed the background)."""
    metrics = cfg.test_evaluator if isinstance(cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    iou = [m for m in metrics if m.get('type') in ('IoUMetric', 'CityscapesMetric')]
    if not iou:
        raise ValueError(
            f'--out {out_dir}: writing prediction PNGs needs an IoUMetric in test_evaluator of {cfg.filename}'
        )
    for metric in iou:
        metric['output_dir'] = out_dir
        metric['keep_results'] = True


def _build(args: argparse.Namespace) -> Tuple[Config, Optional[CocoLayout]]:
    args.checkpoint = checkpoint_file(args.checkpoint)
    if not is_remote(args.checkpoint) and not osp.isfile(args.checkpoint):  # URLs and hub names: the loaders fetch them
        raise FileNotFoundError(f'checkpoint not found: {args.checkpoint}')
    cfg, layout = config_from_args(args, ('test',))
    cfg.load_from = args.checkpoint
    if args.out and not _is_pickle(args.out):
        if cfg.get('default_scope') != 'mmseg':
            raise ValueError(
                f'--out must be a .pkl or .pickle file, got {args.out} (a folder of prediction PNGs '
                'is for segmentation configs)'
            )
        _segmentation_pngs(cfg, args.out)
    if args.show or args.show_dir:
        _enable_visualization(cfg, args)
    if args.tta:
        if 'tta_model' not in cfg or 'tta_pipeline' not in cfg:
            raise ValueError(f'--tta needs `tta_model` and `tta_pipeline` in {args.config}')
        cfg.model = dict(**cfg.tta_model, module=cfg.model)
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    return cfg, layout


def build_config(args: argparse.Namespace) -> Config:
    """The config with the command line applied, as mmdet's tools/test.py does."""
    return _build(args)[0]


def _dump_metric(cfg: Config, out: str):
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.evaluation import DumpDetResults

        return DumpDetResults(out_file_path=out)
    from mmengine.evaluator import DumpResults

    return DumpResults(out_file_path=out)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Evaluates; returns the metrics."""
    args = parse_args(argv)
    if args.backend == 'onnxruntime':
        return test_onnx(config_from_args(args, ('test',))[0], args.checkpoint, args.out)
    cfg, layout = _build(args)
    extra = [_dump_metric(cfg, args.out)] if args.out and _is_pickle(args.out) else []
    return test(cfg, args.checkpoint, args.device, args.config, layout, args.checkpoint_sha256, extra)


if __name__ == '__main__':
    main()
