"""Draws the training curve of a work dir: the loss, and the validation metric, against iterations.

    python tools/plot_curve.py WORK_DIR [--metric coco/bbox_mAP] [--out WORK_DIR/curve.png]

What is read, and how runs of one work dir are joined: `maformer_mm/visualization/curves.py`.
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from maformer_mm.visualization.curves import DEFAULT_METRICS, Curve, plot_curve, read_curve

__all__ = ['parse_args', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('work_dir', help='the work dir of a training run')
    parser.add_argument(
        '--metric',
        help=f'the validation metric to draw (default: the first of {", ".join(DEFAULT_METRICS)} that was logged)',
    )
    parser.add_argument('--out', help='the PNG to write (default: WORK_DIR/curve.png)')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Curve:
    """Draws the curve; returns its points."""
    args = parse_args(argv)
    curve = read_curve(args.work_dir, args.metric)
    out = plot_curve(curve, args.out or osp.join(args.work_dir, 'curve.png'), osp.basename(osp.abspath(args.work_dir)))
    metric = f'{len(curve.metric)} points of {curve.metric_name}' if curve.metric else 'no validation metric'
    print(f'{out}: {len(curve.loss)} loss points, {metric}')
    return curve


if __name__ == '__main__':
    main()
