"""Predictions of a model on an image or a folder of images, drawn and saved, through OpenMMLab's inferencers
(`tools/infer.py` is its command line).

    python tools/infer.py IMAGE_OR_DIR CONFIG CHECKPOINT [--out-dir outputs] [--batch-size 4]
                          [--pred-score-thr 0.3] [--device cuda:0] [--no-save-pred] [--data-root DIR]
                          [--cfg-options KEY=VALUE ...]

- detection configs (mmdet's DetInferencer): boxes, masks and class names drawn in `OUT_DIR/vis/`, and one
  JSON per image in `OUT_DIR/preds/` in mmdet's format (`labels`, `scores`, `bboxes` as x1 y1 x2 y2,
  `masks` as COCO RLE) plus, per detection, `label_names` (the class name) and `category_ids` (the data set's
  category id: from `--data-root`, else from the checkpoint when it was trained with `--data-root`, else from the
  config's test annotation file when it is there, else null);
- segmentation configs (mmseg's MMSegInferencer): colourised label maps blended over the image in
  `OUT_DIR/vis/`, and the label maps as PNGs in `OUT_DIR/pred/IMAGE_NAME.png`, with the values of the data set's
  own label maps, as `tools/test.py --out DIR` writes them (class k is k + 1 where the test dataset sets
  `reduce_zero_label`, as in ADE20K; mmseg's inferencer alone writes k);
- classification configs (mmpretrain's ImageClassificationInferencer): the top class drawn in
  `OUT_DIR/vis/`, and one JSON per image in `OUT_DIR/preds/` (`pred_label`, `pred_score`, `pred_class`,
  `pred_scores`).

The model is built for the classes the checkpoint was trained for: a checkpoint trained with `--data-root` on 4
classes, tested with a config for COCO's 80, gets 4-class heads and its class names (from its `meta.dataset_meta`,
which mmengine's Runner saves). `--data-root DIR` (detection) names the classes as tools/train.py and tools/test.py
take them, and a checkpoint trained for others is refused naming both lists; so is a checkpoint that records no
classes and whose tensors do not fit the config's model. A checkpoint whose names maformer_mm recorded in
category-id order (before it followed mmdet's list order) gets the names of `--data-root` in the JSON's order, with
a warning. CHECKPOINT may be a training run's work dir (its last checkpoint). The checkpoint is read as data, once.
A detector exported whole to ONNX (a `.onnx` CHECKPOINT) is handed to the standalone ONNX Runtime runner
(`maformer_mm/deploy/ort_runner.py`; docs/deploy.md), which writes the same files from the file's own metadata.
"""

import json
import logging
import os
import os.path as osp
from contextlib import contextmanager
from typing import Any, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

from mmengine.config import Config
from mmengine.logging import MMLogger

from ..checkpoint.classes import check_checkpoint_classes, checkpoint_classes, rename_id_ordered_classes
from ..checkpoint.inferencers import check_fits, fit_heads, preloaded_checkpoint
from ..checkpoint.remote import checkpoint_file, is_remote, read_checkpoint
from ..config.classes import dataset_setting, leaf_datasets
from ..config.data_root import CocoLayout, apply_coco_layout, read_coco_layout
from ..config.zoo import load_config
from ..datasets.coco_checks import coco_dataset_paths, label_categories, read_coco_categories
from ..engine.runs import default_device, parse_device
from ..hosts import inferencer_type, task_of

__all__ = ['Written', 'IMAGE_EXTENSIONS', 'list_images', 'class_category_ids', 'infer']

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class Written(NamedTuple):
    """What `infer` wrote: drawn images and prediction files (JSON, or PNG label maps for segmentation)."""

    vis: List[str]
    preds: List[str]


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


def _read_for(checkpoint: str, layout: Optional[CocoLayout], config: Config, sha256: Optional[str] = None) -> Any:
    """The checkpoint, read once as data (with the full SHA-256 `sha256` when given); with `--data-root`, refused
    when it records other classes. Class names that an older maformer_mm recorded in category-id order are renamed
    in its meta data (which the inferencers name the labels by) to the JSON's list order, mmdet's, with a warning:
    from `--data-root`, else from the config's test data where it is a local COCO JSON."""
    loaded = read_checkpoint(checkpoint, map_location='cpu', sha256=sha256)
    if layout is None:
        detection = config.get('default_scope', 'mmdet') == 'mmdet'
        renamed = rename_id_ordered_classes(loaded, config, checkpoint) if detection else None
    else:
        source = f'--data-root {layout.root}'
        renamed = check_checkpoint_classes(loaded, checkpoint, layout.classes, source, layout.id_order)
        if renamed:
            loaded['meta'].setdefault('dataset_meta', {})['classes'] = layout.classes
    if renamed:
        MMLogger.get_current_instance().warning(renamed)
    return loaded


def _set_classes(inferencer: Any, loaded: Any, layout: Optional[CocoLayout], config: Config) -> None:
    """`--data-root`'s classes (and palette, category ids) for a checkpoint that records none, where mmdet would
    name COCO's."""
    if layout is None or checkpoint_classes(loaded) is not None:
        return
    metainfo = dict(next(leaf_datasets(config.test_dataloader.dataset)).metainfo)
    inferencer.model.dataset_meta = metainfo
    inferencer.visualizer.dataset_meta = metainfo


def _name_detections(paths: Sequence[str], classes: Sequence[str], category_ids: Optional[Sequence[Any]]) -> None:
    """Adds `label_names` and `category_ids` (one per detection, beside mmdet's `labels`) to prediction files."""
    for path in paths:
        with open(path) as f:
            pred = json.load(f)
        labels = pred.get('labels', [])
        pred['label_names'] = [str(classes[k]) if 0 <= k < len(classes) else None for k in labels]
        pred['category_ids'] = [
            category_ids[k] if category_ids is not None and 0 <= k < len(category_ids) else None for k in labels
        ]
        with open(path, 'w') as f:
            json.dump(pred, f)


def class_category_ids(
    classes: Sequence[str], dataset_meta: dict, layout: Optional[CocoLayout], config: Config
) -> Optional[Tuple[Any, ...]]:
    """The category id of each of `classes`: from `--data-root`, else from the checkpoint's `dataset_meta`
    (`--data-root` records them), else from the config's test annotation file where it is a local COCO JSON naming
    the classes (as mmdet's CocoMetric maps labels to ids); None when none of these knows them. The ONNX export
    stores them for the standalone runner the same way."""
    classes = tuple(classes)
    ids = layout.category_ids if layout is not None else dataset_meta.get('category_ids')
    loader = config.get('test_dataloader')
    if ids is None and loader and 'dataset' in loader:
        ann_file = coco_dataset_paths(next(leaf_datasets(loader.dataset)))[0]
        if ann_file and ann_file.endswith('.json') and osp.isfile(ann_file):
            categories = label_categories(read_coco_categories(ann_file), classes)
            if tuple(str(c['name']) for c in categories) == classes:
                ids = [c['id'] for c in categories]
    if ids is None or len(ids) != len(classes):
        MMLogger.get_current_instance().info(
            'the predictions carry no category ids (category_ids null): neither --data-root, the checkpoint nor '
            "the config's test annotation file gives them"
        )
        return None
    return tuple(ids)


def _label_maps_as_test_writes_them(out_dir: str, images: Sequence[str], config: Config) -> List[str]:
    """Renames mmseg's `pred/00000000_pred.png` ... to `pred/IMAGE_NAME.png` and shifts the values back by one
    where the test dataset sets reduce_zero_label, as `tools/test.py --out DIR` (mmseg's IoUMetric) writes them."""
    import numpy as np
    from PIL import Image

    shift = bool(dataset_setting(next(leaf_datasets(config.test_dataloader.dataset)), 'reduce_zero_label', False))
    written = []
    for index, image in enumerate(images):
        source = osp.join(out_dir, 'pred', f'{index:08d}_pred.png')
        target = osp.join(out_dir, 'pred', osp.splitext(osp.basename(image))[0] + '.png')
        with Image.open(source) as png:
            labels = np.asarray(png).astype(np.uint8)
        Image.fromarray(labels + 1 if shift else labels).save(target)
        if target != source:
            os.remove(source)
        written.append(target)
    return written


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
    cfg_options: Optional[dict] = None,
    checkpoint_sha256: Optional[str] = None,
) -> Written:
    """Runs the inferencer of the config's scope on `inputs` (a file or a folder); returns what it wrote.
    `config` is a file, one of maformer_mm's configs by name, or a loaded Config (e.g. with command-line options
    applied); `data_root` a detection data set in the COCO 2017 layout whose classes the checkpoint must have been
    trained for; `cfg_options` settings applied after it (as tools/train.py and tools/test.py apply
    `--cfg-options`)."""
    if checkpoint.endswith('.onnx'):  # a detector exported whole: the standalone ONNX Runtime runner (docs/deploy.md)
        from ..deploy.ort_runner import infer as infer_onnx

        return Written(*infer_onnx(inputs, checkpoint, out_dir, pred_score_thr, save_pred))
    paths = [('input', inputs)]
    checkpoint = checkpoint_file(checkpoint)
    if not is_remote(checkpoint):  # URLs and hub names are fetched by the checkpoint loaders
        paths.append(('checkpoint', checkpoint))
    for name, path in paths:
        if not osp.exists(path):
            raise FileNotFoundError(f'{name} not found: {path}')
    device = str(parse_device(str(device or default_device())))
    images = list_images(inputs)
    config = load_config(config) if isinstance(config, str) else config  # a file or a name; parsed once
    scope = config.get('default_scope', 'mmdet')
    task_of(scope, config.filename)
    layout = None
    if data_root is not None:
        if scope != 'mmdet':
            raise ValueError(f'--data-root reads COCO-format detection data; {config.filename} is an {scope} config')
        layout = read_coco_layout(data_root, ('test',))
        apply_coco_layout(config, layout)
    if cfg_options:
        config.merge_from_dict(cfg_options)
    _drawing_only(config)
    loaded = _read_for(checkpoint, layout, config, checkpoint_sha256)
    if scope == 'mmpretrain':
        _classify(images, config, checkpoint, loaded, out_dir, batch_size, device, save_pred)
        return Written(
            vis=_files(osp.join(out_dir, 'vis')), preds=_files(osp.join(out_dir, 'preds')) if save_pred else []
        )
    quiet = dict(show_progress=False) if scope == 'mmdet' else {}  # mmseg's inferencer takes no such argument
    with preloaded_checkpoint(checkpoint, loaded), _without_spurious_notices():
        inferencer = inferencer_type(scope)(model=config, weights=checkpoint, device=device, **quiet)
    _set_classes(inferencer, loaded, layout, config)
    if scope == 'mmdet':
        inferencer(
            images, batch_size=batch_size, out_dir=out_dir, pred_score_thr=pred_score_thr, no_save_pred=not save_pred
        )
        if save_pred:
            names = [osp.join(out_dir, 'preds', osp.splitext(osp.basename(i))[0] + '.json') for i in images]
            meta = inferencer.model.dataset_meta
            _name_detections(names, meta['classes'], class_category_ids(meta['classes'], meta, layout, config))
        preds = _files(osp.join(out_dir, 'preds'))
    else:
        inferencer(images, batch_size=batch_size, out_dir=out_dir, pred_out_dir='pred' if save_pred else '')
        preds = _label_maps_as_test_writes_them(out_dir, images, config) if save_pred else []
    return Written(vis=_files(osp.join(out_dir, 'vis')), preds=preds if save_pred else [])
