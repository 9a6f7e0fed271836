"""Pictures that can be read by eye: each image's ground truth beside the prediction, enlarged, with a title row
and a legend of the classes.

mmdet's and mmseg's visualizers draw the two panels (boxes, masks, class names and scores; label maps with class
names); this module enlarges the image and the annotations first, so that the labels do not overlap on small
images, and adds the titles and the legend. The demos draw every validation image this way.
"""

import math
import os
import os.path as osp
import tempfile
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch

__all__ = ['MIN_LONG_SIDE', 'enlargement', 'framed', 'detection_pictures', 'segmentation_pictures']

MIN_LONG_SIDE = 512  # pixels on the long side of each panel
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def enlargement(height: int, width: int, min_long_side: int = MIN_LONG_SIDE) -> int:
    """The integer factor that brings the long side of an image to at least `min_long_side` (1 if it is)."""
    return max(1, math.ceil(min_long_side / max(height, width)))


def _text_row(width: int, height: int, texts: Sequence[Tuple[int, str, Optional[Tuple[int, int, int]]]]) -> np.ndarray:
    """A white row of `height` px with each (x, text, swatch colour or None) written at x."""
    row = np.full((height, width, 3), 255, np.uint8)
    for x, text, colour in texts:
        if colour is not None:
            cv2.rectangle(row, (x, height // 4), (x + height // 2, 3 * height // 4), tuple(int(c) for c in colour), -1)
            x += height // 2 + 6
        cv2.putText(
            row, text, (x, int(height * 0.68)), _FONT, height / 48, (0, 0, 0), max(1, height // 24), cv2.LINE_AA
        )
    return row


def framed(
    panels: np.ndarray, titles: Sequence[str], classes: Sequence[str], palette: Sequence[Sequence[int]]
) -> np.ndarray:
    """`panels` (RGB, equal-width panels side by side) with a title above each panel and a legend below."""
    height, width = panels.shape[:2]
    row = max(28, min(48, height // 12))
    panel_width = width // len(titles)
    top = _text_row(width, row, [(i * panel_width + 8, title, None) for i, title in enumerate(titles)])
    legend, x, rows = [], 8, []
    for name, colour in zip(classes, palette):
        size = cv2.getTextSize(str(name), _FONT, row / 48, 1)[0][0] + row // 2 + 24
        if x + size > width and legend:
            rows.append(_text_row(width, row, legend))
            legend, x = [], 8
        legend.append((x, str(name), colour))
        x += size
    rows.append(_text_row(width, row, legend))
    return np.concatenate([top, panels, *rows], axis=0)


def _drawn(visualizer, name: str, image: np.ndarray, sample, **kwargs) -> np.ndarray:
    """The library's ground-truth | prediction drawing of `sample` on `image` (RGB). It is written to a file and
    read back: mmseg's visualizer composes the two panels only there (its canvas keeps the last panel)."""
    with tempfile.TemporaryDirectory() as folder:
        out = osp.join(folder, 'drawn.png')
        visualizer.add_datasample(name, image, sample, draw_gt=True, draw_pred=True, out_file=out, **kwargs)
        return cv2.cvtColor(cv2.imread(out, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _save(image_rgb: np.ndarray, out_dir: str, image_path: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    out = osp.join(out_dir, osp.splitext(osp.basename(image_path))[0] + '.png')
    cv2.imwrite(out, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    return out


def _enlarged_image(path: str) -> Tuple[np.ndarray, int]:
    image = cv2.cvtColor(cv2.imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    factor = enlargement(*image.shape[:2])
    return cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST), factor


def _enlarged_masks(masks: np.ndarray, factor: int) -> np.ndarray:
    """(N, H, W) masks, each pixel repeated `factor` times along both axes."""
    return masks.repeat(factor, axis=-2).repeat(factor, axis=-1)


def _coco_ground_truth(ann_file: str, classes: Sequence[str]):
    """file name -> InstanceData (bboxes x1y1x2y2, labels by class name, masks) of a COCO JSON file."""
    from mmengine.structures import InstanceData
    from pycocotools.coco import COCO

    coco = COCO(ann_file)
    names = {c['id']: c['name'] for c in coco.loadCats(coco.getCatIds())}
    truth = {}
    for image_id, info in coco.imgs.items():
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if names[a['category_id']] in classes]
        boxes = [[a['bbox'][0], a['bbox'][1], a['bbox'][0] + a['bbox'][2], a['bbox'][1] + a['bbox'][3]] for a in anns]
        instances = InstanceData()
        instances.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        instances.labels = torch.tensor([list(classes).index(names[a['category_id']]) for a in anns], dtype=torch.long)
        masks = [coco.annToMask(a).astype(bool) for a in anns]
        instances.masks = np.stack(masks) if masks else np.zeros((0, info['height'], info['width']), bool)
        truth[info['file_name']] = instances
    return truth


def detection_pictures(
    config,
    checkpoint: str,
    images: Sequence[str],
    ann_file: str,
    out_dir: str,
    device: str = 'cpu',
    score_thr: float = 0.3,
) -> List[str]:
    """Draws ground truth (from the COCO `ann_file`) beside the predictions of `checkpoint` for each image."""
    from mmdet.apis import DetInferencer
    from mmdet.structures import DetDataSample

    inferencer = DetInferencer(model=config, weights=checkpoint, device=device, show_progress=False)
    inferencer.visualizer.dataset_meta = inferencer.model.dataset_meta  # the checkpoint's classes and colours
    classes = inferencer.model.dataset_meta['classes']
    palette = inferencer.model.dataset_meta.get('palette') or [(0, 128, 255)] * len(classes)
    truth = _coco_ground_truth(ann_file, classes)
    written = []
    for path in images:
        predicted = inferencer(path, return_datasamples=True, no_save_vis=True)['predictions'][0].cpu()
        image, factor = _enlarged_image(path)
        sample = DetDataSample()
        gt = truth[osp.basename(path)].clone()
        gt.bboxes = gt.bboxes * factor
        gt.masks = _enlarged_masks(gt.masks, factor)
        pred = predicted.pred_instances.clone()
        pred.bboxes = pred.bboxes * factor
        if 'masks' in pred:
            pred.masks = _enlarged_masks(pred.masks.numpy().astype(bool), factor)
        sample.gt_instances, sample.pred_instances = gt, pred
        panels = _drawn(inferencer.visualizer, osp.basename(path), image, sample, pred_score_thr=score_thr)
        titles = ['ground truth', f'prediction (score >= {score_thr:g})']
        written.append(_save(framed(panels, titles, classes, palette), out_dir, path))
    return written


def segmentation_pictures(
    config,
    checkpoint: str,
    images: Sequence[str],
    label_dir: str,
    out_dir: str,
    device: str = 'cpu',
    reduce_zero_label: bool = True,
) -> List[str]:
    """Draws the ground-truth label map (`label_dir/<image name>.png`) beside the prediction of `checkpoint`.

    With `reduce_zero_label` (ADE20K's convention), label 0 is ignored in training and evaluation, so the
    prediction is drawn only where the ground truth has a class."""
    from mmengine.structures import PixelData
    from mmseg.apis import MMSegInferencer
    from mmseg.structures import SegDataSample

    inferencer = MMSegInferencer(model=config, weights=checkpoint, device=device)
    inferencer.visualizer.dataset_meta = inferencer.model.dataset_meta  # the checkpoint's classes and colours
    classes = inferencer.model.dataset_meta['classes']
    palette = inferencer.model.dataset_meta['palette']
    written = []
    for path in images:
        predicted = inferencer(path, return_datasamples=True)
        predicted = (predicted[0] if isinstance(predicted, list) else predicted).cpu()
        image, factor = _enlarged_image(path)
        label = cv2.imread(osp.join(label_dir, osp.splitext(osp.basename(path))[0] + '.png'), cv2.IMREAD_UNCHANGED)
        if reduce_zero_label:  # 0 is background (ignored), class k is k + 1
            label = np.where(label == 0, 255, label.astype(np.int64) - 1)
        prediction = predicted.pred_sem_seg.data.numpy()
        if reduce_zero_label:  # unlabelled pixels are neither learnt nor scored: the model's class there is noise
            prediction = np.where(label[None] == 255, 255, prediction)
        sample = SegDataSample()
        sample.gt_sem_seg = PixelData(data=torch.from_numpy(_enlarged_masks(label[None], factor)))
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(_enlarged_masks(prediction, factor)))
        panels = _drawn(inferencer.visualizer, osp.basename(path), image, sample, with_labels=True)
        titles = ['ground truth', 'prediction (labelled pixels)' if reduce_zero_label else 'prediction']
        written.append(_save(framed(panels, titles, classes, palette), out_dir, path))
    return written
