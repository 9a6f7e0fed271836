"""A detector exported whole by tools/deploy/export_onnx.py, run by ONNX Runtime alone: this file imports only
onnxruntime, numpy and cv2 (no torch, mmengine or mmcv), so it can be copied to a deployment on its own.

    pip install onnxruntime numpy opencv-python-headless
    python ort_runner.py IMAGE_OR_DIR model.onnx [--out-dir outputs] [--pred-score-thr 0.3] [--no-save-pred]

It reads the file's metadata and prepares each image as the config's test pipeline and data preprocessor do: mmdet's
`Resize` (the same size rule and cv2 interpolation), channel order, mean/std, zero padding to `pad_size_divisor`;
runs the graph; pastes each box's mask probabilities into the image as mmdet's `_do_paste_mask` does (bilinear, the
grid's cell centres at the box's edges divided in M) and thresholds them at `mask_thr_binary`. Like tools/infer.py
with a checkpoint, it writes drawn images to OUT_DIR/vis/ and one JSON per image to OUT_DIR/preds/ in mmdet's format
(`labels`, `scores`, `bboxes` as x1 y1 x2 y2 in the original image, `masks` as COCO RLE) and, per detection,
`label_names` and `category_ids` (null where the export did not know them).
"""

import argparse
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import onnxruntime as ort

__all__ = [
    'OnnxDetector',
    'resized_size',
    'paste_masks',
    'encode_rle',
    'draw',
    'list_images',
    'read_image',
    'infer',
    'main',
]

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
INTERPOLATION = {
    'nearest': cv2.INTER_NEAREST,
    'bilinear': cv2.INTER_LINEAR,
    'bicubic': cv2.INTER_CUBIC,
    'area': cv2.INTER_AREA,
    'lanczos': cv2.INTER_LANCZOS4,
}


def resized_size(width: int, height: int, resize: Optional[dict]) -> Tuple[int, int]:
    """(w, h) of an image after mmdet's `Resize` as `resize` (the file's metadata) describes it: `scale` (w, h) or
    `scale_factor`, with or without `keep_ratio` (mmcv's `rescale_size` and `_scale_size`: round half up)."""
    if not resize:
        return width, height
    scale = resize.get('scale')
    if scale is None:  # mmcv's Resize turns a scale factor into a scale first
        factor = resize['scale_factor']
        fw, fh = (factor, factor) if isinstance(factor, (int, float)) else factor
        scale = (int(width * float(fw) + 0.5), int(height * float(fh) + 0.5))
    if not resize.get('keep_ratio', False):
        return int(scale[0]), int(scale[1])
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * float(factor) + 0.5), int(height * float(factor) + 0.5)


def _grid_weights(start: np.ndarray, end: np.ndarray, pixels: np.ndarray, size: int) -> np.ndarray:
    """(N, P, size) bilinear weights of `pixels` (centres at +0.5) along one axis of a size-cell grid spread over
    [start, end] of each box: `grid_sample`'s sampling with align_corners=False and zero padding, as float32."""
    g = ((pixels[None, :] + np.float32(0.5)) - start[:, None]) / (end - start)[:, None] * np.float32(2) - np.float32(1)
    g = ((g + np.float32(1)) * np.float32(size) - np.float32(1)) / np.float32(2)  # grid position in cells
    low = np.floor(g)
    frac = (g - low).astype(np.float32)
    low = low.astype(np.int64)
    weights = np.zeros((*g.shape, size), np.float32)
    n, p = np.indices(g.shape)
    for index, weight in ((low, np.float32(1) - frac), (low + 1, frac)):
        inside = (index >= 0) & (index < size)
        weights[n[inside], p[inside], index[inside]] = weight[inside]
    return weights


def paste_masks(probs: np.ndarray, boxes: np.ndarray, height: int, width: int, threshold: float) -> np.ndarray:
    """Per-box mask probabilities (N, M, M) pasted into an image (height, width) at their boxes (N, 4), then
    `>= threshold`: (N, height, width) bool, as mmdet's FCNMaskHead (`_do_paste_mask`, grid_sample)."""
    masks = np.zeros((len(probs), height, width), bool)
    boxes = boxes.astype(np.float32)
    probs = probs.astype(np.float32)
    for i, (box, prob) in enumerate(zip(boxes, probs)):
        x0, y0, x1, y1 = box
        if not (x1 > x0 and y1 > y0):
            continue
        # rows and columns that can reach the threshold lie within the box (outside, a weight is below 0.5)
        top, bottom = max(int(np.floor(y0)) - 1, 0), min(int(np.ceil(y1)) + 1, height)
        left, right = max(int(np.floor(x0)) - 1, 0), min(int(np.ceil(x1)) + 1, width)
        if top >= bottom or left >= right:
            continue
        rows = _grid_weights(box[None, 1], box[None, 3], np.arange(top, bottom, dtype=np.float32), prob.shape[0])[0]
        cols = _grid_weights(box[None, 0], box[None, 2], np.arange(left, right, dtype=np.float32), prob.shape[1])[0]
        masks[i, top:bottom, left:right] = rows @ prob @ cols.T >= threshold
    return masks


def encode_rle(mask: np.ndarray) -> Dict[str, object]:
    """COCO's compressed RLE of a binary mask (what pycocotools' `mask.encode` gives, with `counts` as str): run
    lengths in column-major order starting with a run of zeros, each written as the difference to the run two
    before (from the third on), 5 bits a character from '0', bit 0x20 for "more follows"."""
    flat = np.asfortranarray(mask).reshape(-1, order='F').astype(np.uint8)
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    runs = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        runs = [0] + runs
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            chars.append(chr((c | 0x20 if more else c) + 48))
    return {'size': [int(mask.shape[0]), int(mask.shape[1])], 'counts': ''.join(chars)}


def _palette(count: int, palette: Optional[Sequence[Sequence[int]]]) -> List[Tuple[int, int, int]]:
    """RGB colours, one a class: the file's palette, else evenly spaced hues."""
    if palette and len(palette) >= count:
        return [tuple(int(v) for v in c) for c in palette[:count]]
    hsv = np.array([[[int(180 * i / max(count, 1)), 200, 230]] for i in range(count)], np.uint8)
    return [tuple(int(v) for v in c[0]) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)]


def draw(image: np.ndarray, result: Dict[str, np.ndarray], classes: Sequence[str], palette, score_thr: float):
    """The image (BGR) with the detections scoring at least `score_thr` drawn: masks blended, boxes, "class: score"."""
    canvas = image.copy()
    colours = _palette(max(len(classes), int(result['labels'].max(initial=-1)) + 1), palette)
    keep = result['scores'] >= score_thr
    masks = result.get('masks')
    for i in np.flatnonzero(keep):
        r, g, b = colours[int(result['labels'][i])]
        if masks is not None:
            region = masks[i]
            canvas[region] = (0.5 * canvas[region] + 0.5 * np.array([b, g, r])).astype(np.uint8)
    for i in np.flatnonzero(keep):
        label = int(result['labels'][i])
        r, g, b = colours[label]
        x0, y0, x1, y1 = (int(round(float(v))) for v in result['bboxes'][i])
        cv2.rectangle(canvas, (x0, y0), (x1, y1), (b, g, r), 2)
        name = classes[label] if label < len(classes) else str(label)
        cv2.putText(
            canvas, f'{name}: {result["scores"][i]:.2f}', (x0, max(y0 - 4, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
            (b, g, r), 1, cv2.LINE_AA,
        )  # fmt: skip
    return canvas


def prepare(
    image: np.ndarray,
    resize: Optional[dict],
    mean: np.ndarray,
    std: np.ndarray,
    bgr_to_rgb: bool,
    pad_size_divisor: int,
) -> Tuple[Dict[str, np.ndarray], Tuple[float, float]]:
    """A BGR uint8 image (H, W, 3) as the graph's inputs (`images`, `img_shape`, `scale_factor`), as mmdet's test
    pipeline (`Resize`) and DetDataPreprocessor (channel order, (x - mean) / std, zero padding) make them; also the
    (w, h) scale factor."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'expected a colour image (H, W, 3), got shape {image.shape}')
    h, w = image.shape[:2]
    new_w, new_h = resized_size(w, h, resize)
    if resize:  # mmdet resizes even to the same size (a copy)
        image = cv2.resize(image, (new_w, new_h), interpolation=INTERPOLATION[resize.get('interpolation', 'bilinear')])
    pixels = image.astype(np.float32)
    if bgr_to_rgb:
        pixels = pixels[..., ::-1]
    pixels = (pixels - mean) / std
    d = pad_size_divisor
    padded = np.zeros((1, 3, -(-new_h // d) * d, -(-new_w // d) * d), np.float32)
    padded[0, :, :new_h, :new_w] = pixels.transpose(2, 0, 1)
    scale = (new_w / w, new_h / h)
    feed = {
        'images': padded,
        'img_shape': np.array([new_h, new_w], np.int64),
        'scale_factor': np.array(scale, np.float64),
    }
    return feed, scale


class OnnxDetector:
    """A whole-detector ONNX file in an ONNX Runtime session; `detector(image)` takes a BGR uint8 image (H, W, 3) as
    cv2 reads it and returns `bboxes` (N, 4) in its coordinates, `scores` (N,), `labels` (N,) and, for mask
    models, `masks` (N, H, W) bool."""

    def __init__(
        self,
        path: str,
        providers: Sequence[str] = ('CPUExecutionProvider',),
        options: Optional[ort.SessionOptions] = None,
    ) -> None:
        self.session = ort.InferenceSession(str(path), options, providers=list(providers))
        meta = self.session.get_modelmeta().custom_metadata_map
        self.output_names = [o.name for o in self.session.get_outputs()]
        inputs = [i.name for i in self.session.get_inputs()]
        if meta.get('kind') != 'detection' or inputs != ['images', 'img_shape', 'scale_factor']:
            raise ValueError(
                f'{path} is not a whole detector exported by tools/deploy/export_onnx.py (its kind is '
                f'{meta.get("kind")!r}, its inputs {inputs}; expected detection and images, img_shape, scale_factor)'
            )
        self.mean = np.array(json.loads(meta['mean']), np.float32)
        self.std = np.array(json.loads(meta['std']), np.float32)
        self.bgr_to_rgb = json.loads(meta.get('bgr_to_rgb', 'false'))
        self.pad_size_divisor = int(meta.get('pad_size_divisor', '1'))
        self.resize = json.loads(meta.get('resize', 'null'))
        self.classes = json.loads(meta.get('classes', '[]'))
        self.palette = json.loads(meta.get('palette', 'null'))
        self.category_ids = json.loads(meta.get('category_ids', 'null'))
        self.mask_thr_binary = float(meta.get('mask_thr_binary', '0.5'))
        self.with_mask = 'masks' in self.output_names

    def preprocess(self, image: np.ndarray, resize: bool = True) -> Tuple[Dict[str, np.ndarray], Tuple[float, float]]:
        """The graph's inputs for a BGR image, and the (w, h) scale factor of its resize (without `resize`: none)."""
        return prepare(
            image, self.resize if resize else None, self.mean, self.std, self.bgr_to_rgb, self.pad_size_divisor
        )

    def detect(self, feed: Dict[str, np.ndarray], height: int, width: int) -> Dict[str, np.ndarray]:
        """The graph run on `feed` (see `preprocess`): `bboxes`, `scores`, `labels` and, for mask models, `masks`
        pasted into the original image of (height, width)."""
        outputs = dict(zip(self.output_names, self.session.run(None, feed)))
        result = {'bboxes': outputs['boxes'], 'scores': outputs['scores'], 'labels': outputs['labels']}
        if self.with_mask:
            result['masks'] = paste_masks(outputs['masks'], outputs['boxes'], height, width, self.mask_thr_binary)
        return result

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        feed, _ = self.preprocess(image)
        return self.detect(feed, *image.shape[:2])


def list_images(inputs: str) -> List[str]:
    """`inputs` itself, or the image files of the folder `inputs` in name order."""
    if osp.isfile(inputs):
        return [inputs]
    if not osp.isdir(inputs):
        raise FileNotFoundError(f'input not found: {inputs}')
    images = sorted(osp.join(inputs, n) for n in os.listdir(inputs) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise FileNotFoundError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {inputs}')
    return images


def read_image(path: str) -> np.ndarray:
    """A BGR uint8 image as mmdet's LoadImageFromFile reads it (cv2, colour); ValueError naming an unreadable file."""
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f'cannot read the image {path}')
    return image


def infer(
    inputs: str, model: str, out_dir: str, pred_score_thr: float = 0.3, save_pred: bool = True
) -> Tuple[List[str], List[str]]:
    """Runs the ONNX detector `model` on `inputs` (a file or a folder); writes OUT_DIR/vis/NAME (drawn) and
    OUT_DIR/preds/STEM.json; returns the paths written (drawn images, prediction files)."""
    if not osp.isfile(model):
        raise FileNotFoundError(f'ONNX file not found: {model}')
    detector = OnnxDetector(model)
    os.makedirs(osp.join(out_dir, 'vis'), exist_ok=True)
    if save_pred:
        os.makedirs(osp.join(out_dir, 'preds'), exist_ok=True)
    vis, preds = [], []
    for path in list_images(inputs):
        image = read_image(path)
        result = detector(image)
        name = osp.basename(path)
        vis.append(osp.join(out_dir, 'vis', name))
        cv2.imwrite(vis[-1], draw(image, result, detector.classes, detector.palette, pred_score_thr))
        if save_pred:
            pred = {
                'labels': result['labels'].tolist(),
                'scores': result['scores'].tolist(),
                'bboxes': result['bboxes'].tolist(),
            }
            if 'masks' in result:
                pred['masks'] = [encode_rle(m) for m in result['masks']]
            classes, ids = detector.classes, detector.category_ids or []
            pred['label_names'] = [str(classes[k]) if k < len(classes) else None for k in pred['labels']]
            pred['category_ids'] = [ids[k] if k < len(ids) else None for k in pred['labels']]
            preds.append(osp.join(out_dir, 'preds', osp.splitext(name)[0] + '.json'))
            with open(preds[-1], 'w') as f:
                json.dump(pred, f)
    return vis, preds


def main(argv: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('inputs', help='an image file or a folder of images')
    parser.add_argument('model', help='a detector exported whole by tools/deploy/export_onnx.py')
    parser.add_argument('--out-dir', default='outputs', help='where drawn images and predictions are written')
    parser.add_argument('--pred-score-thr', type=float, default=0.3, help='detections below it are not drawn')
    parser.add_argument('--no-save-pred', action='store_true', help='draw only; write no prediction files')
    args = parser.parse_args(argv)
    if not 0 <= args.pred_score_thr <= 1:
        parser.error(f'--pred-score-thr must be within [0, 1], got {args.pred_score_thr}')
    vis, preds = infer(args.inputs, args.model, args.out_dir, args.pred_score_thr, not args.no_save_pred)
    print(
        f'wrote {len(vis)} images to {osp.join(args.out_dir, "vis")}'
        + (f' and {len(preds)} predictions' if preds else '')
    )
    return vis, preds


if __name__ == '__main__':
    main()
