"""Params and FLOPs (multiply-adds, attention counted) without a dataset.

python tools/get_flops.py                                    # backbone variants at 224x224
python tools/get_flops.py --arch tiny small --shape 512 512  # some variants at another size
python tools/get_flops.py configs/mask_rcnn_maformer_s.py    # a whole model, at its task's default
python tools/get_flops.py CONFIG --shape 800 1280            # ... at H W
python tools/get_flops.py mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py   # an installed package's config
"""

import argparse
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction
from mmengine.registry import MODELS, init_default_scope

from ..models import MAFormer
from ..utils.flops import model_complexity
from .cli import load_config, parse_hw

__all__ = ['DEFAULT_SHAPES', 'parse_args', 'backbone_rows', 'config_complexity', 'main']

# Sizes at which each task's FLOPs are usually reported, as (H, W).
DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', nargs='?', help='config file; without it the backbone variants are measured')
    parser.add_argument(
        '--arch',
        nargs='+',
        default=['tiny', 'small', 'base', 'large'],
        help='backbone variants to measure when no config is given',
    )
    parser.add_argument('--shape', type=int, nargs='+', help='input H W (one value: square)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def backbone_rows(archs: Sequence[str], hw: Tuple[int, int]) -> List[Tuple[str, float, float]]:
    """(arch, params in M, FLOPs in G) of each backbone variant."""
    rows = []
    for arch in archs:
        flops, params = model_complexity(MAFormer(arch=arch), 'backbone', hw)
        rows.append((arch, params / 1e6, flops / 1e9))
    return rows


def config_complexity(cfg: Config, hw: Optional[Tuple[int, int]] = None) -> Tuple[int, int, Tuple[int, int]]:
    """(FLOPs, params, (H, W)) of the model a config describes."""
    scope = cfg.get('default_scope', 'mmdet')
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    hw = hw or DEFAULT_SHAPES.get(scope, (224, 224))
    flops, params = model_complexity(model, scope, hw)
    return flops, params, hw


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
