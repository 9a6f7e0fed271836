"""Predictions of a model on an image or a folder of images, drawn and saved, through OpenMMLab's inferencers.

    python tools/infer.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir outputs] [--batch-size 4]
                          [--pred-score-thr 0.3] [--device cuda:0] [--no-save-pred] [--data-root DIR]
                          [--cfg-options KEY=VALUE ...]

CONFIG is a file or one of maformer_mm's configs by name; CHECKPOINT a file, URL, hub name or a training run's work
dir. What is written where, and how the classes are named: `maformer_mm/apis/inference.py`.
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from mmengine.config import DictAction

from maformer_mm.apis.inference import Written, infer
from maformer_mm.tools.cli import add_checkpoint_sha256_argument, add_device_argument

__all__ = ['parse_args', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument(
        'config', help="config file (detection, segmentation or classification), or one of maformer_mm's by name"
    )
    parser.add_argument(
        'checkpoint',
        help="checkpoint file, URL or hub name, a training run's work dir (its last checkpoint), or a detector "
        'exported whole to ONNX (.onnx: run by the standalone ONNX Runtime runner)',
    )
    add_checkpoint_sha256_argument(parser)
    parser.add_argument('--out-dir', default='outputs', help='where drawn images and predictions are written')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument(
        '--pred-score-thr',
        '--score-thr',
        dest='pred_score_thr',
        type=float,
        default=0.3,
        help='detections below this score are not drawn (--score-thr is an alias)',
    )
    add_device_argument(parser)
    parser.add_argument('--no-save-pred', action='store_true', help='draw only; write no prediction files')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value (e.g. test_dataloader.dataset.pipeline.1.scale="(640,640)")',
    )
    parser.add_argument(
        '--data-root',
        help="detection: the classes of a data set in mmdet's COCO 2017 layout, as "
        'tools/train.py and tools/test.py take them (default: the classes the '
        'checkpoint records)',
    )
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    if not 0 <= args.pred_score_thr <= 1:
        parser.error(f'--pred-score-thr must be within [0, 1], got {args.pred_score_thr}')
    return args


def main(argv: Optional[Sequence[str]] = None) -> Written:
    args = parse_args(argv)
    written = infer(
        args.inputs,
        args.config,
        args.checkpoint,
        args.out_dir,
        args.pred_score_thr,
        args.device,
        args.batch_size,
        not args.no_save_pred,
        args.data_root,
        args.cfg_options,
        args.checkpoint_sha256,
    )
    print(
        f'wrote {len(written.vis)} images to {osp.join(args.out_dir, "vis")}'
        + (f' and {len(written.preds)} predictions' if written.preds else '')
    )
    return written


if __name__ == '__main__':
    main()
