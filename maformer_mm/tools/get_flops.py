"""Params and FLOPs (multiply-adds, attention counted) without a dataset.

python tools/get_flops.py                                    # backbone variants at 224x224
python tools/get_flops.py --arch tiny small --shape 512 512  # some variants at another size
python tools/get_flops.py configs/mask_rcnn_maformer_s.py    # a whole model, at its task's default
python tools/get_flops.py CONFIG --shape 800 1280            # ... at H W
python tools/get_flops.py mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py   # an installed package's config
"""

import argparse
from typing import Optional, Sequence

from mmengine.config import DictAction

from maformer_mm.analysis.complexity import backbone_rows, config_complexity
from maformer_mm.config.zoo import load_config
from maformer_mm.models import MAFormer
from maformer_mm.tools.cli import parse_hw

__all__ = ['parse_args', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file; without it the backbone variants are measured')
    parser.add_argument(
        '--arch',
        nargs='+',
        default=list(MAFormer.variants()),
        help='backbone variants to measure when no config is given',
    )
    parser.add_argument('--shape', type=int, nargs='+', help='input H W (one value: square)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    if args.config:
        cfg = load_config(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        flops, params, hw = config_complexity(cfg, parse_hw(args.shape))
        print(f'{args.config}\ninput (H, W): {hw}\nparams: {params / 1e6:.2f} M\nFLOPs: {flops / 1e9:.1f} G')
        return
    hw = parse_hw(args.shape) or (224, 224)
    print(f'MAFormer backbones at {hw[0]}x{hw[1]} (FLOPs = multiply-adds, attention included)')
    print('| arch | params (M) | FLOPs (G) |\n|---|---|---|')
    for arch, params, flops in backbone_rows(args.arch, hw):
        print(f'| {arch} | {params:.1f} | {flops:.2f} |')


if __name__ == '__main__':
    main()
