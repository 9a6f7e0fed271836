"""Predictions of a model on an image or a folder of images, drawn and saved, through OpenMMLab's inferencers.

    python tools/infer.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir outputs] [--batch-size 4]
                          [--pred-score-thr 0.3] [--device cuda:0] [--no-save-pred]

- detection configs (mmdet's DetInferencer): boxes, masks and class names drawn in `OUT_DIR/vis/`, and one
  JSON per image in `OUT_DIR/preds/` in mmdet's format (`labels`, `scores`, `bboxes` as x1 y1 x2 y2,
  `masks` as COCO RLE);
- segmentation configs (mmseg's MMSegInferencer): colourised label maps blended over the image in
  `OUT_DIR/vis/`, and the label maps as PNGs in `OUT_DIR/pred/`;
- classification configs (mmpretrain's ImageClassificationInferencer): the top class drawn in
  `OUT_DIR/vis/`, and one JSON per image in `OUT_DIR/preds/` (`pred_label`, `pred_score`, `pred_class`,
  `pred_scores`).
"""
import argparse
import json
import os
import os.path as osp
from typing import List, NamedTuple, Optional, Sequence, Union

from mmengine.config import Config

import maformer_mm  # noqa: F401
from .cli import add_device_argument, default_device, parse_device

__all__ = ['Written', 'list_images', 'infer', 'parse_args', 'main']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class Written(NamedTuple):
    """What `infer` wrote: drawn images and prediction files (JSON, or PNG label maps for segmentation)."""
    vis: List[str]
    preds: List[str]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('config', help='config file (detection, segmentation or classification)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-dir', default='outputs', help='where drawn images and predictions are written')
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--pred-score-thr', '--score-thr', dest='pred_score_thr', type=float, default=0.3,
                        help='detections below this score are not drawn (--score-thr is an alias)')
    add_device_argument(parser)
    parser.add_argument('--no-save-pred', action='store_true', help='draw only; write no prediction files')
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    if not 0 <= args.pred_score_thr <= 1:
        parser.error(f'--pred-score-thr must be within [0, 1], got {args.pred_score_thr}')
    return args


def list_images(inputs: str) -> List[str]:
    """`inputs` itself, or the image files of the folder `inputs` in name order."""
    if osp.isfile(inputs):
        return [inputs]
    images = sorted(osp.join(inputs, name) for name in os.listdir(inputs) if name.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {inputs}')
    return images


def _files(folder: str) -> List[str]:
    return sorted(osp.join(folder, n) for n in os.listdir(folder)) if osp.isdir(folder) else []


def _classify(images: List[str], config: Config, checkpoint: str, out_dir: str, batch_size: int, device: str,
              save_pred: bool) -> None:
    from mmpretrain.apis import ImageClassificationInferencer
    inferencer = ImageClassificationInferencer(model=config, pretrained=checkpoint, device=device)
    os.makedirs(osp.join(out_dir, 'vis'), exist_ok=True)
    results = inferencer(images, batch_size=batch_size, show_dir=osp.join(out_dir, 'vis'))
    if save_pred:
        os.makedirs(osp.join(out_dir, 'preds'), exist_ok=True)
        for image, result in zip(images, results):
            pred = dict(pred_label=int(result['pred_label']), pred_score=float(result['pred_score']),
                        pred_class=result.get('pred_class'), pred_scores=result['pred_scores'].tolist())
            name = osp.splitext(osp.basename(image))[0] + '.json'
            with open(osp.join(out_dir, 'preds', name), 'w') as f:
                json.dump(pred, f)


def infer(inputs: str, config: Union[str, Config], checkpoint: str, out_dir: str, pred_score_thr: float = 0.3,
          device: Optional[str] = None, batch_size: int = 1, save_pred: bool = True) -> Written:
    """Runs the inferencer of the config's scope on `inputs` (a file or a folder); returns what it wrote.
    `config` is a file or a loaded Config (e.g. with command-line options applied)."""
    paths = [('input', inputs), ('checkpoint', checkpoint)]
    if isinstance(config, str):
        paths.append(('config', config))
    for name, path in paths:
        if not osp.exists(path):
            raise FileNotFoundError(f'{name} not found: {path}')
    device = str(parse_device(str(device or default_device())))
    images = list_images(inputs)
    config = Config.fromfile(config) if isinstance(config, str) else config  # parsed once, handed on
    scope = config.get('default_scope', 'mmdet')
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer
        inferencer = DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False)
        inferencer(images, batch_size=batch_size, out_dir=out_dir, pred_score_thr=pred_score_thr,
                   no_save_pred=not save_pred)
        preds = _files(osp.join(out_dir, 'preds'))
    elif scope == 'mmseg':
        from mmseg.apis import MMSegInferencer
        inferencer = MMSegInferencer(model=config, weights=checkpoint, device=device)
        inferencer(images, batch_size=batch_size, out_dir=out_dir, pred_out_dir='pred' if save_pred else '')
        preds = _files(osp.join(out_dir, 'pred'))
    elif scope == 'mmpretrain':
        _classify(images, config, checkpoint, out_dir, batch_size, device, save_pred)
        preds = _files(osp.join(out_dir, 'preds'))
    else:
        raise ValueError(f'{config.filename}: inference supports mmdet, mmseg and mmpretrain configs, not scope '
                         f'{scope!r}')
    return Written(vis=_files(osp.join(out_dir, 'vis')), preds=preds if save_pred else [])


def main(argv: Optional[Sequence[str]] = None) -> Written:
    args = parse_args(argv)
    written = infer(args.inputs, args.config, args.checkpoint, args.out_dir, args.pred_score_thr, args.device,
                    args.batch_size, not args.no_save_pred)
    print(f'wrote {len(written.vis)} images to {osp.join(args.out_dir, "vis")}'
          + (f' and {len(written.preds)} predictions' if written.preds else ''))
    return written


if __name__ == '__main__':
    main()
