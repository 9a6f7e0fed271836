"""Checks an exported ONNX file against the PyTorch module it came from, in ONNX Runtime on the CPU: every output
within a tolerance of its scale, or, for a whole detector, its detections matched box by box with those of the
mmdet model's own `predict`."""

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = [
    'OnnxVerificationError',
    'Comparison',
    'verify_onnx',
    'other_sizes',
    'DetectionMatch',
    'match_detections',
    'verify_detector',
]


class OnnxVerificationError(RuntimeError):
    """The ONNX file cannot be run, or its outputs differ from PyTorch's beyond the tolerance."""


@dataclass
class Comparison:
    """One output at one input size: the largest absolute difference, the output's scale (its largest
    absolute value in PyTorch) and whether the difference is within `rtol` times that scale."""

    size: Tuple[int, int]
    name: str
    shape: Tuple[int, ...]
    max_abs_diff: float
    scale: float
    ok: bool

    def line(self, rtol: float) -> str:
        verdict = 'ok' if self.ok else f'FAILED (limit {rtol:g} x scale = {rtol * self.scale:.2e})'
        return (
            f'{self.size[0]}x{self.size[1]} {self.name} {tuple(self.shape)}: max |onnx - torch| = '
            f'{self.max_abs_diff:.2e}, scale {self.scale:.3g}, {verdict}'
        )


def other_sizes(size: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Two input sizes unlike the export size, for checking a dynamic export: one smaller on H and larger on
    W, one the other way round, both odd (so every stage pads to its window and merging grids differently)."""
    h, w = size
    return [(h // 2 + 13, w + 37), (h + 53, w // 2 + 7)]


def _session(path: str):
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        raise OnnxVerificationError(f'ONNX Runtime cannot load {path}: {e}') from e


def verify_onnx(
    path: str,
    module: nn.Module,
    output_names: Sequence[str],
    sizes: Sequence[Tuple[int, int]],
    in_channels: int = 3,
    batch: int = 1,
    rtol: float = 1e-4,
    log: Callable[[str], None] = print,
) -> List[Comparison]:
    """Runs the ONNX file in ONNX Runtime (CPU) and `module` in PyTorch on the same random inputs at each
    size, logs the largest absolute difference of every output, and raises `OnnxVerificationError` when one
    exceeds `rtol` times the output's scale, or when shapes or the number of outputs differ.

    The inputs are standard-normal, like normalised images.
    """
    session = _session(path)
    input_name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(0)
    results, problems = [], []
    module.eval()
    for size in sizes:
        images = torch.randn(batch, in_channels, *size, generator=generator)
        with torch.no_grad():
            expected = [t.float().numpy() for t in module(images)]
        try:
            got = session.run(None, {input_name: images.numpy()})
        except Exception as e:
            raise OnnxVerificationError(f'ONNX Runtime failed to run {path} at {size[0]}x{size[1]}: {e}') from e
        if len(got) != len(expected):
            raise OnnxVerificationError(
                f'{path} gives {len(got)} outputs at {size[0]}x{size[1]}, PyTorch {len(expected)}'
            )
        for name, ref, out in zip(output_names, expected, got):
            if ref.shape != out.shape:
                problems.append(f'{size[0]}x{size[1]} {name}: ONNX shape {out.shape}, PyTorch {ref.shape}')
                continue
            diff = float(np.abs(out.astype(np.float64) - ref).max()) if ref.size else 0.0
            scale = float(np.abs(ref).max()) if ref.size else 0.0
            ok = bool(np.isfinite(diff)) and diff <= rtol * max(scale, 1e-12)
            result = Comparison(tuple(size), name, tuple(ref.shape), diff, scale, ok)
            log(result.line(rtol))
            results.append(result)
            if not ok:
                problems.append(result.line(rtol))
    if problems:
        raise OnnxVerificationError(f'{path} does not reproduce the PyTorch model:\n  ' + '\n  '.join(problems))
    return results


# ---------------------------------------------------------------------------------------------------------------
# Whole detectors: detections matched box by box against the PyTorch model's own `predict`.

BOX_IOU, SCORE_TOL, MASK_IOU = 0.99, 1e-3, 0.98
MAX_EXEMPT, MAX_EXEMPT_FRACTION = 4, 0.1  # exemptions beyond max(4, 10% of the detections) fail the match


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (N, 4) with every box in `b` (M, 4), x1 y1 x2 y2: (N, M)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), (inter == 0) * 1.0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@dataclass
class DetectionMatch:
    """ONNX Runtime's detections on one image against PyTorch's: pairs matched (same label, box IoU >= 0.99, score
    within 1e-3, masks IoU >= 0.98), detections left over that a threshold explains (score within 1e-3 of
    `score_thr`, or of the last score kept when `max_per_img` cut the list) or an NMS tie (a box of the same label
    on its side whose IoU with it is within 1e-3 of the NMS threshold; or on the other side, without a partner
    either, overlapping it beyond the threshold with a score within 1e-3: either could have won), and failures,
    among them more exemptions than max(4, 10% of the detections): ties are rare, a systematic difference is not."""

    size: Tuple[int, int]
    counts: Tuple[int, int]  # ONNX, PyTorch
    matched: int = 0
    exempt: Dict[str, int] = field(default_factory=dict)
    failures: List[str] = field(default_factory=list)
    max_score_diff: float = 0.0
    min_box_iou: float = 1.0
    min_mask_iou: float = 1.0
    with_masks: bool = False

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        exempt = ', '.join(f'{n} {reason}' for reason, n in sorted(self.exempt.items())) or 'none'
        text = (
            f'{self.size[0]}x{self.size[1]}: {self.counts[0]} detections (PyTorch {self.counts[1]}), {self.matched} '
            f'matched (largest score difference {self.max_score_diff:.1e}, smallest box IoU {self.min_box_iou:.5f}'
            + (f', smallest mask IoU {self.min_mask_iou:.4f}' if self.with_masks else '')
            + f'), exempt: {exempt}'
        )
        return text + ('' if self.ok else ', FAILED: ' + '; '.join(self.failures))


def _exemption(
    i: int, own: Dict[str, np.ndarray], other: Dict[str, np.ndarray], unpaired: np.ndarray, settings: Dict[str, float]
) -> Optional[str]:
    """Why detection `i` of `own` may lack a partner in `other` (whose detections without a partner are
    `unpaired`), or None."""
    score, label = float(own['scores'][i]), int(own['labels'][i])
    if abs(score - settings['score_thr']) <= SCORE_TOL:
        return 'near the score threshold'
    count = settings.get('max_per_img', -1)
    for side in (own, other):
        if count > 0 and len(side['scores']) >= count and abs(score - float(side['scores'].min())) <= SCORE_TOL:
            return 'at the max_per_img cut'
    threshold = settings['nms_iou']
    same = np.flatnonzero(own['labels'] == label)
    same = same[same != i]
    if len(same) and (np.abs(box_iou(own['bboxes'][i : i + 1], own['bboxes'][same])[0] - threshold) <= SCORE_TOL).any():
        return 'NMS tie'  # a box it barely overlaps: suppressed on one side, kept on the other
    rivals = unpaired[other['labels'][unpaired] == label]
    if len(rivals):  # either could have won NMS: the other side kept a rival of a score within the tolerance
        ious = box_iou(own['bboxes'][i : i + 1], other['bboxes'][rivals])[0]
        close = np.abs(other['scores'][rivals] - score) <= SCORE_TOL
        if ((ious > threshold - SCORE_TOL) & close).any():
            return 'NMS tie'
    return None


def match_detections(
    onnx_dets: Dict[str, np.ndarray], torch_dets: Dict[str, np.ndarray], settings: Dict[str, float], size=(0, 0)
) -> DetectionMatch:
    """Pairs each ONNX detection, best score first, with the unpaired PyTorch detection of the same label with the
    largest box IoU, among those within the tolerances (BOX_IOU, SCORE_TOL, MASK_IOU for masks); see
    DetectionMatch for what a detection left over may be exempt for."""
    result = DetectionMatch(
        tuple(size), (len(onnx_dets['scores']), len(torch_dets['scores'])), with_masks='masks' in onnx_dets
    )
    ious = box_iou(onnx_dets['bboxes'], torch_dets['bboxes'])
    paired_torch = np.zeros(len(torch_dets['scores']), bool)
    left_onnx = []
    for i in np.argsort(-onnx_dets['scores'], kind='stable'):
        fits = (
            (torch_dets['labels'] == onnx_dets['labels'][i])
            & (ious[i] >= BOX_IOU)
            & (np.abs(torch_dets['scores'] - onnx_dets['scores'][i]) <= SCORE_TOL)
            & ~paired_torch
        )
        if not fits.any():
            left_onnx.append(i)
            continue
        j = int(np.argmax(np.where(fits, ious[i], -1)))
        paired_torch[j] = True
        result.matched += 1
        result.max_score_diff = max(result.max_score_diff, abs(float(onnx_dets['scores'][i] - torch_dets['scores'][j])))
        result.min_box_iou = min(result.min_box_iou, float(ious[i, j]))
        if 'masks' in onnx_dets:
            iou = mask_iou(onnx_dets['masks'][i], torch_dets['masks'][j])
            result.min_mask_iou = min(result.min_mask_iou, iou)
            if iou < MASK_IOU:
                result.failures.append(f'mask IoU {iou:.4f} < {MASK_IOU} for the box {onnx_dets["bboxes"][i].round(1)}')
    left_onnx, left_torch = np.array(left_onnx, dtype=np.int64), np.flatnonzero(~paired_torch)
    for name, own, other, left, other_left in (
        ('ONNX', onnx_dets, torch_dets, left_onnx, left_torch),
        ('PyTorch', torch_dets, onnx_dets, left_torch, left_onnx),
    ):
        for i in left:
            reason = _exemption(int(i), own, other, other_left, settings)
            if reason is None:
                result.failures.append(
                    f'{name} detection without a partner: label {int(own["labels"][i])}, score '
                    f'{float(own["scores"][i]):.4f}, box {own["bboxes"][i].round(1).tolist()}'
                )
            else:
                result.exempt[reason] = result.exempt.get(reason, 0) + 1
    exempt, allowed = sum(result.exempt.values()), max(MAX_EXEMPT, int(MAX_EXEMPT_FRACTION * max(result.counts)))
    if exempt > allowed:
        result.failures.append(
            f'{exempt} detections exempt, more than {allowed}: a systematic difference, not threshold cases or ties'
        )
    return result


def scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A generated BGR image: 1-4 filled circles, squares and triangles of random colours on a noisy background."""
    import cv2

    image = np.clip(rng.integers(90, 170, 3) + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        r = float(rng.uniform(0.09, 0.25) * min(height, width))
        cx, cy = rng.uniform(r, max(width - r, r + 1)), rng.uniform(r, max(height - r, r + 1))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        corners = int(rng.choice([3, 4, 24]))
        angle = rng.uniform(0, np.pi)
        points = [(cx + r * np.cos(angle + 2 * np.pi * k / corners), cy + r * np.sin(angle + 2 * np.pi * k / corners))
                  for k in range(corners)]  # fmt: skip
        cv2.fillPoly(image, [np.round(points).astype(np.int32)], colour)
    return image


def reference_detections(
    model: nn.Module, images: np.ndarray, img_shape: Sequence[int], scale_factor: Sequence[float], ori_shape
) -> Dict[str, np.ndarray]:
    """mmdet's `predict(..., rescale=True)` on the graph's inputs (normalised, padded `images` (1, 3, H, W)), with
    the metainfo its data preprocessor would give: bboxes, scores, labels and (bool, ori_shape) masks."""
    from mmdet.structures import DetDataSample

    h, w = (int(v) for v in images.shape[-2:])
    meta = dict(
        img_shape=tuple(int(v) for v in img_shape),
        ori_shape=tuple(int(v) for v in ori_shape),
        scale_factor=tuple(float(v) for v in scale_factor),
        pad_shape=(h, w),
        batch_input_shape=(h, w),
    )
    with torch.no_grad():
        pred = model.predict(torch.from_numpy(images), [DetDataSample(metainfo=meta)], rescale=True)[0].pred_instances
    dets = {'bboxes': pred.bboxes.numpy(), 'scores': pred.scores.numpy(), 'labels': pred.labels.numpy()}
    if 'masks' in pred:
        dets['masks'] = pred.masks.numpy().astype(bool)
    return dets


def verify_detector(
    path: str,
    model: nn.Module,
    settings: Dict[str, float],
    sizes: Sequence[Tuple[int, int]] = (),
    images: Sequence[np.ndarray] = (),
    log: Callable[[str], None] = print,
    seed: int = 0,
) -> List[DetectionMatch]:
    """Runs a whole-detector ONNX file in ONNX Runtime and the mmdet `model` (its `predict`) on the same inputs and
    matches their detections box by box (`match_detections`); raises OnnxVerificationError when one fails.

    The inputs: a generated scene (`scene`) of each size in `sizes`, taken as a resized image (its `img_shape`)
    whose original was 1.25x as high and 1.3x as wide (so boxes are rescaled and masks pasted at another size);
    and each of `images` (BGR), prepared as the runner prepares it (the config's Resize).
    """
    from .ort_runner import OnnxDetector

    try:
        detector = OnnxDetector(path)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable or invalid graphs
        raise OnnxVerificationError(f'ONNX Runtime cannot load {path}: {e}') from e
    rng = np.random.default_rng(seed)
    cases = []
    for h, w in sizes:
        ori = (round(h * 1.25), round(w * 1.3))
        feed, _ = detector.preprocess(scene(rng, h, w), resize=False)  # as if already resized
        feed['scale_factor'] = np.array([w / ori[1], h / ori[0]], np.float64)
        cases.append((feed, ori))
    for image in images:
        feed, _ = detector.preprocess(image)
        cases.append((feed, image.shape[:2]))
    results, problems = [], []
    model.eval()
    for feed, ori in cases:
        try:
            got = detector.detect(feed, *ori)
        except Exception as e:
            raise OnnxVerificationError(
                f'ONNX Runtime failed to run {path} on {feed["img_shape"].tolist()}: {e}'
            ) from e
        expected = reference_detections(model, feed['images'], feed['img_shape'], feed['scale_factor'], ori)
        result = match_detections(got, expected, settings, tuple(feed['img_shape'].tolist()))
        log(result.line())
        results.append(result)
        if not result.ok:
            problems.append(result.line())
    if problems:
        raise OnnxVerificationError(f'{path} does not reproduce the PyTorch detector:\n  ' + '\n  '.join(problems))
    return results
