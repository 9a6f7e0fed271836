"""What the ONNX export takes from a config: one module whose forward maps a batch of normalised images
(B, C, H, W) to a tuple of named tensors.

| config kind                   | exported graph                | outputs                                    |
|-------------------------------|-------------------------------|--------------------------------------------|
| classification (mmpretrain)   | the classifier, mode `tensor` | `logits` (B, C)                            |
| segmentation (mmseg)          | the segmentor, mode `tensor`  | `seg_logits` (B, C, H/4, W/4)              |
| segmentation, Mask2Former     | segmentor, last decoder layer | `seg_logits`: class scores (B, C, H/4, W/4) |
| detection: R-CNN, RetinaNet   | the whole detector, `predict` | `boxes`, `scores`, `labels` (+ `masks`)    |
| detection, `neck_only`        | backbone and neck             | `fpn0`.. (the FPN maps)                    |
| detection, DINO / DETR heads  | detector, last decoder layer  | `cls_logits` (B, Q, C), `boxes` (B, Q, 4)  |
| detection, Mask2Former        | detector, last decoder layer  | `cls_logits` (B, Q, C+1), `mask_logits` (B,Q,H/4,W/4)|
| any, `backbone_only`          | the backbone                  | `stage{i}` for each out index              |

(C: the classes; Q: the queries.)

Faster R-CNN, Mask R-CNN, Cascade (Mask) R-CNN and RetinaNet export whole, with their test-time post-processing in the
graph (`detectors.WholeDetector`: inputs `images`, `img_shape`, `scale_factor`). The query heads (DINO, Mask2Former)
export up to their last decoder layer; what follows is post-processing (DINO: sigmoid
scores, top-k over queries x classes, boxes as normalised cx, cy, w, h; Mask2Former: mmdet's/mmseg's fusion of
class and mask scores). Their multi-scale deformable attention (mmcv's PyTorch path, `grid_sample`) exports with the
legacy exporter at a fixed size only (`exporter.MSDA_REASON`).
"""

import copy
import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import MODELS, init_default_scope
from torch import nn

from ..hosts import TASKS, data_samples, query_head_kind
from .exportable import make_exportable

__all__ = ['ExportTarget', 'build_model', 'build_target', 'query_head_kind', 'TASK_KINDS']

TASK_KINDS = TASKS  # default_scope -> the kind of model a config describes (hosts.TASKS)


@dataclass
class ExportTarget:
    """A module to export and what describes its graph.

    Args:
        module: In eval mode; `module(images)` returns a tuple of tensors.
        kind: 'classification', 'segmentation', 'detection' or 'backbone'.
        output_names: One name per output tensor.
        in_channels: Image channels C.
        metadata: Strings stored in the ONNX file (config, kind, the data preprocessor's normalisation).
        extra_inputs: Inputs after the images, by name, with example values (a whole detector's `img_shape` and
            `scale_factor`).
        size_divisor: H and W of the images must be multiples of it (the detectors' padding).
        output_axes: Dynamic output axes by output name, named (a whole detector's number of detections).
    """

    module: nn.Module
    kind: str
    output_names: List[str]
    in_channels: int = 3
    metadata: Dict[str, str] = field(default_factory=dict)
    extra_inputs: Dict[str, torch.Tensor] = field(default_factory=dict)
    size_divisor: int = 1
    output_axes: Dict[str, Dict[int, str]] = field(default_factory=dict)


class ClassifierLogits(nn.Module):
    """An mmpretrain classifier in mode 'tensor': backbone, neck and head, i.e. the class logits."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.model(images, mode='tensor'),)


class SegmentorLogits(nn.Module):
    """An mmseg segmentor in mode 'tensor': the decode head's per-pixel logits (at stride 4 for UperNet;
    upsample them bilinearly to the image, as the segmentor's `predict` does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor]:
        return (self.model(images, None, mode='tensor'),)


class QuerySegmentorScores(nn.Module):
    """An mmseg segmentor with a Mask2Former/MaskFormer head: the per-pixel class scores of its last decoder layer,
    softmax(class logits) without "no object" times sigmoid(mask logits), summed over the queries, at stride 4.
    mmseg's `predict` upsamples the mask logits to the image before the sigmoid; upsampling these scores instead
    differs at mask edges only. (mmseg 1.2.2's mode 'tensor' cannot run these heads: it calls them without the data
    samples they take.)"""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor]:
        samples = data_samples('mmseg', tuple(images.shape[-2:]), images.shape[0])  # the heads only count them
        cls_logits, mask_logits = self.model.decode_head(self.model.extract_feat(images), samples)
        scores = torch.einsum('bqc,bqhw->bchw', cls_logits[-1].softmax(-1)[..., :-1], mask_logits[-1].sigmoid())
        return (scores,)


class QueryDetectorOutputs(nn.Module):
    """An mmdet DETR-family or MaskFormer-family detector in mode 'tensor': the class logits and the boxes (DINO,
    Deformable DETR: normalised cx, cy, w, h) or mask logits (Mask2Former) of its last decoder layer."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        h, w = images.shape[-2:]
        cls_logits, second = self.model(images, data_samples('mmdet', (h, w), images.shape[0]), mode='tensor')
        return cls_logits[-1], second[-1]


class DetectorFeatures(nn.Module):
    """An mmdet detector's backbone and neck: the FPN maps its heads read."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.model.extract_feat(images))


class BackboneFeatures(nn.Module):
    """A backbone alone: its multi-scale maps."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        return tuple(self.backbone(images))


def build_model(cfg: Config, checkpoint: Optional[str] = None) -> nn.Module:
    """The config's whole model in eval mode on the CPU, with the checkpoint's weights, or randomly initialised
    (the model's own init) without one. The backbone's own `init_cfg` (ImageNet weights) is never read:
    a checkpoint of the whole model holds the backbone too."""
    scope = cfg.get('default_scope')
    cfg = copy.deepcopy(cfg)
    if cfg.model.get('backbone') is not None:
        cfg.model.backbone.init_cfg = None
    if cfg.model.get('data_preprocessor') is None and cfg.get('data_preprocessor') is not None:
        cfg.model.data_preprocessor = cfg.data_preprocessor  # mmpretrain keeps it at the top level
    if scope:
        init_default_scope(scope)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    if checkpoint:
        from mmengine.runner import load_checkpoint

        loaded = load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
        meta = loaded.get('meta') if isinstance(loaded, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get('dataset_meta'), dict):
            model.dataset_meta = meta['dataset_meta']  # the classes it was trained for, as mmengine's Runner saves
    else:
        logger = MMLogger.get_current_instance()
        level = logger.level
        logger.setLevel(logging.WARNING)  # init_weights logs one paragraph per parameter
        try:
            model.init_weights()
        finally:
            logger.setLevel(level)
    return model.cpu().eval()


def _preprocess_metadata(model: nn.Module) -> Dict[str, str]:
    """The normalisation the exported graph expects to have been applied (the data preprocessor's)."""
    pre = getattr(model, 'data_preprocessor', None)
    meta = {}
    if getattr(pre, '_enable_normalize', False):
        meta['mean'] = json.dumps([float(f'{v:.7g}') for v in pre.mean.flatten().tolist()])  # float32 digits
        meta['std'] = json.dumps([float(f'{v:.7g}') for v in pre.std.flatten().tolist()])
    if pre is not None:  # mmengine/mmdet, mmseg and mmpretrain name the BGR -> RGB switch differently
        flips = [
            getattr(pre, name) for name in ('_channel_conversion', 'channel_conversion', 'to_rgb') if hasattr(pre, name)
        ]
        meta['bgr_to_rgb'] = json.dumps(bool(flips and flips[0]))
    return meta


def _dataset_meta(cfg: Config, model: nn.Module) -> Dict[str, object]:
    """Classes and palette: the checkpoint's (`dataset_meta`), else the config's test data's, else its dataset's;
    the classes' category ids where they are known."""
    from ..config.classes import dataset_class, leaf_datasets

    meta = dict(getattr(model, 'dataset_meta', None) or {})
    dataset = next(leaf_datasets(cfg.test_dataloader.dataset)) if cfg.get('test_dataloader') else {}
    declared = dict(dataset.get('metainfo') or {})
    default = dict(getattr(dataset_class(dataset), 'METAINFO', {}) if dataset else {})
    found = {}
    for key in ('classes', 'palette'):
        value = meta.get(key) or declared.get(key) or default.get(key)
        if value is not None:
            found[key] = [list(v) if isinstance(v, (list, tuple)) else v for v in value]
    if 'classes' in found:  # the data set's category ids, as tools/infer.py finds them for its JSON
        from ..apis.inference import class_category_ids

        ids = class_category_ids(found['classes'], meta, None, cfg)
        if ids is not None:
            found['category_ids'] = list(ids)
    return found


# what the standalone runner does of the test pipeline: it loads the image and resizes it; the rest only packs it
RUNNER_TRANSFORMS = ('LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackDetInputs')


def test_resize(cfg: Config) -> Tuple[Optional[Dict[str, object]], List[str]]:
    """The test pipeline's `Resize` as the runner's metadata (scale (w, h) or scale_factor, keep_ratio,
    interpolation), and the pipeline's other transforms that the runner does not apply."""
    from ..config.classes import leaf_datasets

    dataset = next(leaf_datasets(cfg.test_dataloader.dataset)) if cfg.get('test_dataloader') else {}
    pipeline = dataset.get('pipeline') or cfg.get('test_pipeline') or []
    resize, others = None, []
    for step in pipeline:
        kind = str(step.get('type', '')).split('.')[-1]
        if kind == 'Resize' and resize is None and step.get('backend', 'cv2') == 'cv2':
            scale = step.get('scale')
            resize = dict(
                scale=[scale, scale] if isinstance(scale, int) else (list(scale) if scale is not None else None),
                scale_factor=step.get('scale_factor'),
                keep_ratio=bool(step.get('keep_ratio', False)),
                interpolation=step.get('interpolation', 'bilinear'),
            )
        elif kind not in RUNNER_TRANSFORMS:
            others.append(kind)
    return resize, others


def _whole_detector(cfg: Config, model: nn.Module) -> Tuple[nn.Module, List[str], Dict[str, str], dict]:
    """The whole-detector module, its outputs, the runner's metadata and the extra fields of its ExportTarget."""
    from .detectors import UnsupportedDetector, WholeDetector, postprocess_settings

    try:
        module = WholeDetector(model)
    except UnsupportedDetector as e:
        raise UnsupportedDetector(
            f'{cfg.filename}: {e}. Export the backbone and neck (the FPN maps) with --neck-only instead.'
        ) from e
    resize, ignored = test_resize(cfg)
    if ignored:
        MMLogger.get_current_instance().warning(
            f'The test pipeline of {cfg.filename} has transforms that the ONNX runner does not apply: {ignored}'
        )
    metadata = dict(
        graph='whole detector',
        detector=module.kind,
        pad_size_divisor=str(module.pad_size_divisor),
        resize=json.dumps(resize),
        **{key: json.dumps(value) for key, value in _dataset_meta(cfg, model).items()},
        **{key: json.dumps(value) for key, value in postprocess_settings(model).items()},
    )
    extra = dict(
        extra_inputs={
            'img_shape': torch.zeros(2, dtype=torch.long),  # set to the export size by the exporter
            'scale_factor': torch.ones(2, dtype=torch.float64),
        },
        size_divisor=module.pad_size_divisor,
        output_axes={name: {0: 'detections'} for name in module.output_names},
    )
    return module, module.output_names, metadata, extra


def build_target(
    cfg: Config, checkpoint: Optional[str] = None, backbone_only: bool = False, neck_only: bool = False
) -> ExportTarget:
    """The module to export for `cfg` (see the module docstring), its output names and metadata."""
    scope = cfg.get('default_scope')
    kind = 'backbone' if backbone_only else TASK_KINDS.get(scope)
    whole_metadata, extra = {}, {}
    if kind is None:
        raise ValueError(
            f'cannot tell what to export from default_scope={scope!r} in {cfg.filename}: expected '
            f'one of {sorted(TASK_KINDS)}, or use --backbone-only'
        )
    model = build_model(cfg, checkpoint)
    backbone = getattr(model, 'backbone', None)
    if backbone is None:
        raise ValueError(f'the model of {cfg.filename} ({type(model).__name__}) has no backbone')
    if kind == 'backbone':
        indices = getattr(backbone, 'out_indices', None)
        names = [f'stage{i}' for i in indices] if indices is not None else None
        module = BackboneFeatures(backbone)
    elif kind == 'classification':
        module, names = ClassifierLogits(model), ['logits']
    elif kind == 'segmentation':
        query_kind = query_head_kind(model)
        module = QuerySegmentorScores(model) if query_kind == 'maskformer_seg' else SegmentorLogits(model)
        names = ['seg_logits']
    else:
        query_kind = query_head_kind(model)
        if query_kind is not None:
            module = QueryDetectorOutputs(model)
            names = ['cls_logits', 'boxes' if query_kind == 'detr' else 'mask_logits']
        elif neck_only:
            module, names = DetectorFeatures(model), None
        else:
            module, names = None, None  # the whole detector, below
    in_channels = getattr(backbone, 'in_channels', 3)
    if module is None:
        module, names, whole_metadata, extra = _whole_detector(cfg, model)
    if names is None:  # one name per output, counted on a small input
        with torch.no_grad():
            count = len(module(torch.zeros(1, in_channels, 64, 64)))
        names = [f'fpn{i}' if kind == 'detection' else f'out{i}' for i in range(count)]
    make_exportable(module)
    metadata = dict(
        config=str(cfg.filename),
        kind=kind,
        checkpoint=str(checkpoint or 'none (random init)'),
        **_preprocess_metadata(model),
        **whole_metadata,
    )
    return ExportTarget(module.eval(), kind, names, in_channels, metadata, **extra)
