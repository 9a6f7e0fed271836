"""Draws a model's predictions on an image or a folder of images.

    python tools/infer.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir DIR] [--score-thr 0.3] [--device cpu]

Detection configs get boxes, masks and class names (mmdet's DetInferencer); segmentation configs
get colourised label maps blended over the image (mmseg's MMSegInferencer). Images go to
`OUT_DIR/vis/`.
"""
import argparse
import os.path as osp
from typing import List, Optional, Sequence

from mmengine.config import Config

import maformer_mm  # noqa: F401


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='outputs', help='where drawn images are written')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detection score threshold')
    parser.add_argument('--device', default='cpu', help='e.g. cpu or cuda:0')
    return parser.parse_args(argv)


def infer(inputs: str, config: str, checkpoint: str, out_dir: str, score_thr: float = 0.3,
          device: str = 'cpu') -> List[str]:
    """Runs inference and returns the paths of the drawn images."""
    for name, path in (('input', inputs), ('config', config), ('checkpoint', checkpoint)):
        if not osp.exists(path):
            raise FileNotFoundError(f'{name} not found: {path}')
    scope = Config.fromfile(config).get('default_scope', 'mmdet')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False)
        inferencer(inputs, out_dir=out_dir, pred_score_thr=score_thr, no_save_pred=True)
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=config, weights=checkpoint, device=device)
        inferencer(inputs, out_dir=out_dir, show=False)
    else:
        raise ValueError(f'{config}: inference drawing supports mmdet and mmseg configs, not scope {scope!r}')
    vis_dir = osp.join(out_dir, 'vis')
    import glob
    return sorted(glob.glob(osp.join(vis_dir, '*')))


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    written = infer(args.inputs, args.config, args.checkpoint, args.out_dir, args.score_thr, args.device)
    print(f'wrote {len(written)} images to {osp.join(args.out_dir, "vis")}')


if __name__ == '__main__':
    main()
