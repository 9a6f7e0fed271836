"""Predictions of a model on an image or a folder of images, drawn and saved, through OpenMMLab's inferencers.

    python tools/infer.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir outputs] [--batch-size 4]
                          [--pred-score-thr 0.3] [--device cuda:0] [--no-save-pred] [--data-root DIR]

- detection configs (mmdet's DetInferencer): boxes, masks and class names drawn in `OUT_DIR/vis/`, and one
  JSON per image in `OUT_DIR/preds/` in mmdet's format (`labels`, `scores`, `bboxes` as x1 y1 x2 y2,
  `masks` as COCO RLE);
- segmentation configs (mmseg's MMSegInferencer): colourised label maps blended over the image in
  `OUT_DIR/vis/`, and the label maps as PNGs in `OUT_DIR/pred/`;
- classification configs (mmpretrain's ImageClassificationInferencer): the top class drawn in
  `OUT_DIR/vis/`, and one JSON per image in `OUT_DIR/preds/` (`pred_label`, `pred_score`, `pred_class`,
  `pred_scores`).

The model is built for the classes the checkpoint was trained for: a checkpoint trained with `--data-root` on 4
classes, tested with a config for COCO's 80, gets 4-class heads and its class names (from its `meta.dataset_meta`,
which mmengine's Runner saves). `--data-root DIR` (detection) names the classes as tools/train.py and tools/test.py
take them, and a checkpoint trained for others is refused naming both lists; so is a checkpoint that records no
classes and whose tensors do not fit the config's model. The checkpoint is read as data, once.
"""

import argparse
import json
import logging
import os
import os.path as osp
from contextlib import contextmanager
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Union

from mmengine.config import Config
from mmengine.logging import MMLogger

import maformer_mm  # noqa: F401

from ..checkpoint.inferencers import check_fits, fit_heads, preloaded_checkpoint
from ..checkpoint.remote import read_checkpoint
from ..utils.classes import check_checkpoint_classes, checkpoint_classes, leaf_datasets
from .cli import add_checkpoint_sha256_argument, add_device_argument, default_device, parse_device
from .data_root import CocoLayout, apply_coco_layout, read_coco_layout

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
    parser.add_argument('checkpoint', help='checkpoint file, URL or hub name')
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


class _RegistryFallbackNotice(logging.Filter):
    """Drops mmengine's warning that a scope has no "function" registry: mmdet and mmseg define none, and the
    inferencers look their collate function up there only to fall back to mmengine's `pseudo_collate`."""

    def filter(self, record: logging.LogRecord) -> bool:
        return 'in the "function" registry tree' not in record.getMessage()


@contextmanager
def _without_spurious_notices() -> Iterator[None]:
    logger = MMLogger.get_current_instance()
    notice = _RegistryFallbackNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def _drawing_only(config: Config) -> None:
    """The inferencers save drawn images themselves: the config's visualizer needs no storage backends (a
    `LocalVisBackend` without `save_dir` is only a warning)."""
    if isinstance(config.get('visualizer'), dict):
        config.visualizer.pop('vis_backends', None)


def _read_for(config: Config, checkpoint: str, layout: Optional[CocoLayout], sha256: Optional[str] = None) -> Any:
    """The checkpoint, read once as data (with the full SHA-256 `sha256` when given); with `--data-root`, refused
    when it records other classes."""
    loaded = read_checkpoint(checkpoint, map_location='cpu', sha256=sha256)
    if layout is not None:
        check_checkpoint_classes(loaded, checkpoint, layout.classes, f'--data-root {layout.root}')
    return loaded


def _set_classes(inferencer: Any, loaded: Any, layout: Optional[CocoLayout], config: Config) -> None:
    """`--data-root`'s classes (and palette) for a checkpoint that records none, where mmdet would name COCO's."""
    if layout is None or checkpoint_classes(loaded) is not None:
        return
    metainfo = dict(next(leaf_datasets(config.test_dataloader.dataset)).metainfo)
    inferencer.model.dataset_meta = metainfo
    inferencer.visualizer.dataset_meta = metainfo


def _classify(
    images: List[str],
    config: Config,
    checkpoint: str,
    loaded: Any,
    out_dir: str,
    batch_size: int,
    device: str,
    save_pred: bool,
) -> None:
    """mmpretrain's inferencer on a model built here: heads for the checkpoint's classes, weights strictly."""
    from mmengine.runner.checkpoint import _load_checkpoint_to_model
    from mmpretrain.apis import ImageClassificationInferencer, get_model

    fit_heads(config, loaded, checkpoint)
    model = get_model(config, pretrained=False)
    check_fits(model, loaded, checkpoint, config)
    _load_checkpoint_to_model(model, loaded)
    trained = checkpoint_classes(loaded)
    if trained is not None:
        model._dataset_meta = dict(model._dataset_meta, classes=trained)
    inferencer = ImageClassificationInferencer(model=model, device=device)
    os.makedirs(osp.join(out_dir, 'vis'), exist_ok=True)
    results = inferencer(images, batch_size=batch_size, show_dir=osp.join(out_dir, 'vis'))
    if save_pred:
        os.makedirs(osp.join(out_dir, 'preds'), exist_ok=True)
        for image, result in zip(images, results):
            pred = dict(
                pred_label=int(result['pred_label']),
                pred_score=float(result['pred_score']),
                pred_class=result.get('pred_class'),
                pred_scores=result['pred_scores'].tolist(),
            )
            name = osp.splitext(osp.basename(image))[0] + '.json'
            with open(osp.join(out_dir, 'preds', name), 'w') as f:
                json.dump(pred, f)


def infer(
    inputs: str,
    config: Union[str, Config],
    checkpoint: str,
    out_dir: str,
    pred_score_thr: float = 0.3,
    device: Optional[str] = None,
    batch_size: int = 1,
    save_pred: bool = True,
    data_root: Optional[str] = None,
    checkpoint_sha256: Optional[str] = None,
) -> Written:
    """Runs the inferencer of the config's scope on `inputs` (a file or a folder); returns what it wrote.
    `config` is a file or a loaded Config (e.g. with command-line options applied); `data_root` a detection data
    set in the COCO 2017 layout whose classes the checkpoint must have been trained for."""
    if checkpoint.endswith('.onnx'):  # a detector exported whole: the standalone ONNX Runtime runner (docs/deploy.md)
        from ..deploy.ort_runner import infer as infer_onnx

        return Written(*infer_onnx(inputs, checkpoint, out_dir, pred_score_thr, save_pred))
    paths = [('input', inputs)]
    if '://' not in checkpoint:  # URLs and hub names are fetched by the checkpoint loaders
        paths.append(('checkpoint', checkpoint))
    if isinstance(config, str):
        paths.append(('config', config))
    for name, path in paths:
        if not osp.exists(path):
            raise FileNotFoundError(f'{name} not found: {path}')
    device = str(parse_device(str(device or default_device())))
    images = list_images(inputs)
    config = Config.fromfile(config) if isinstance(config, str) else config  # parsed once, handed on
    scope = config.get('default_scope', 'mmdet')
    if scope not in ('mmdet', 'mmseg', 'mmpretrain'):
        raise ValueError(
            f'{config.filename}: inference supports mmdet, mmseg and mmpretrain configs, not scope {scope!r}'
        )
    layout = None
    if data_root is not None:
        if scope != 'mmdet':
            raise ValueError(f'--data-root reads COCO-format detection data; {config.filename} is an {scope} config')
        layout = read_coco_layout(data_root, ('test',))
        apply_coco_layout(config, layout)
    _drawing_only(config)
    loaded = _read_for(config, checkpoint, layout, checkpoint_sha256)
    if scope == 'mmpretrain':
        _classify(images, config, checkpoint, loaded, out_dir, batch_size, device, save_pred)
        return Written(
            vis=_files(osp.join(out_dir, 'vis')), preds=_files(osp.join(out_dir, 'preds')) if save_pred else []
        )
    with preloaded_checkpoint(checkpoint, loaded), _without_spurious_notices():
        if scope == 'mmdet':
            from mmdet.apis import DetInferencer

            inferencer = DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False)
        else:
            from mmseg.apis import MMSegInferencer

            inferencer = MMSegInferencer(model=config, weights=checkpoint, device=device)
    _set_classes(inferencer, loaded, layout, config)
    if scope == 'mmdet':
        inferencer(
            images, batch_size=batch_size, out_dir=out_dir, pred_score_thr=pred_score_thr, no_save_pred=not save_pred
        )
        preds = _files(osp.join(out_dir, 'preds'))
    else:
        inferencer(images, batch_size=batch_size, out_dir=out_dir, pred_out_dir='pred' if save_pred else '')
        preds = _files(osp.join(out_dir, 'pred'))
    return Written(vis=_files(osp.join(out_dir, 'vis')), preds=preds if save_pred else [])


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
        args.checkpoint_sha256,
    )
    print(
        f'wrote {len(written.vis)} images to {osp.join(args.out_dir, "vis")}'
        + (f' and {len(written.preds)} predictions' if written.preds else '')
    )
    return written


if __name__ == '__main__':
    main()
