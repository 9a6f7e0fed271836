"""Generates small synthetic data sets in the layouts the real ones use, for the demos and tests.

    python tools/make_demo_data.py coco --out data/demo_coco   # COCO instance segmentation
    python tools/make_demo_data.py coco2017 --out data/my_coco --classes ball box wedge pentagon
    python tools/make_demo_data.py ade --out data/demo_ade     # ADE20K semantic segmentation

What the images hold and how each layout names its files: `maformer_mm/datasets/synthetic.py`.
"""

import argparse
import os.path as osp
from typing import Optional, Sequence

from maformer_mm.datasets.synthetic import CLASSES, SHAPES, ShapesSet

__all__ = ['parse_args', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('layout', choices=['coco', 'coco2017', 'ade'], help='which data set layout to write')
    parser.add_argument('--out', required=True, help='output directory')
    parser.add_argument('--train', type=int, default=64, help='training images')
    parser.add_argument('--val', type=int, default=16, help='validation images')
    parser.add_argument('--size', type=int, nargs=2, default=(192, 192), metavar=('W', 'H'), help='image size')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument(
        '--class-hues', action='store_true', help='fill each class from its own hue band instead of random colours'
    )
    parser.add_argument(
        '--classes',
        nargs='+',
        default=list(CLASSES),
        help=f'class names, 1 to {len(SHAPES)} (drawn as {", ".join(SHAPES)})',
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    shapes = ShapesSet(args.train, args.val, tuple(args.size), args.seed, args.class_hues, args.classes)
    if args.layout == 'ade':
        shapes.write_ade(args.out)
    else:
        shapes.write_coco(args.out, year='2017' if args.layout == 'coco2017' else '')
    print(f'wrote a {args.layout} set ({args.train} train / {args.val} val images) to {osp.abspath(args.out)}')


if __name__ == '__main__':
    main()
