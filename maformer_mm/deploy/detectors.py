"""Whole mmdet detectors as one export graph: an image in, detections out, with the config's test-time
post-processing (score threshold, NMS, `max_per_img`) inside the graph, in standard ONNX operators (TopK,
NonMaxSuppression, RoiAlign, NonZero, ScatterND), so that stock ONNX Runtime runs it.

| detector (mmdet 3.3)               | the graph runs                                        | outputs               |
|------------------------------------|-------------------------------------------------------|-----------------------|
| Faster R-CNN                       | RPNHead proposals, StandardRoIHead boxes              | boxes, scores, labels |
| Mask R-CNN                         | the same, then FCNMaskHead on the detected boxes      | + masks               |
| Cascade (Mask) R-CNN               | RPNHead, CascadeRoIHead's stages (masks: stage mean)  | (+ masks)             |
| RetinaNet (one-stage anchor heads) | the head's anchors, top-k per level, NMS              | boxes, scores, labels |

Inputs, as mmdet's data preprocessor and metainfo give them: `images` (1, 3, H, W), normalised and padded with zeros
at the bottom and right to multiples of the preprocessor's `pad_size_divisor`; `img_shape` (2,) int64, the (h, w) of
the image before padding (boxes are clipped to it); `scale_factor` (2,) float64, (w, h) of the resize that made the
image from the original, as mmdet's Resize records it. (Padding outside the graph keeps the exporter's symbolic
sizes simple: H = 32 * a, not h + (-h mod 32); the export is several times faster.)

Outputs in the original image's coordinates, as mmdet's `predict(..., rescale=True)`: `boxes` (N, 4) x1, y1, x2, y2;
`scores` (N,); `labels` (N,) int64; `masks` (N, M, M): each box's mask probabilities on the mask head's M x M grid
(the sigmoid of the logits of the box's class; Cascade: their mean over the stages), which `ort_runner.paste_masks`
pastes into the image as mmdet's `_do_paste_mask` does and thresholds at `mask_thr_binary`. Pasting stays outside
the graph: it depends on the original image's size, and (N, H, W) masks would dwarf the rest.

Each step is mmdet's (its function is named in each docstring), reading the heads' own modules and settings (anchor
generator, box coder, RoI extractors, `test_cfg`); where mmdet branches in Python on a data-dependent size, the graph
computes the same result without the branch.
"""

import math
from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

__all__ = ['WholeDetector', 'UnsupportedDetector', 'detector_kind', 'postprocess_settings']


class UnsupportedDetector(ValueError):
    """The detector (or one of its heads or settings) has no whole-graph export form here."""


def _name(obj: object) -> str:
    return type(obj).__name__


def detector_kind(model: nn.Module) -> str:
    """'two_stage', 'cascade' or 'single_stage' for the detectors `WholeDetector` exports; UnsupportedDetector
    naming the part otherwise."""
    from mmdet.models.dense_heads import AnchorHead, RPNHead
    from mmdet.models.detectors import SingleStageDetector, TwoStageDetector
    from mmdet.models.roi_heads import CascadeRoIHead, StandardRoIHead

    if isinstance(model, TwoStageDetector):
        if not isinstance(model.rpn_head, RPNHead):
            raise UnsupportedDetector(f'rpn_head {_name(model.rpn_head)}: only RPNHead has an export form here')
        _check_dense_head(model.rpn_head, 'rpn_head')
        roi_head = model.roi_head
        if getattr(roi_head, 'with_shared_head', False):
            raise UnsupportedDetector(f'roi_head {_name(roi_head)} has a shared head (C4 style): not exported here')
        if isinstance(roi_head, CascadeRoIHead):
            kind = 'cascade'
            bbox_heads, extractors = list(roi_head.bbox_head), list(roi_head.bbox_roi_extractor)
        elif type(roi_head) is StandardRoIHead:
            kind = 'two_stage'
            bbox_heads, extractors = [roi_head.bbox_head], [roi_head.bbox_roi_extractor]
        else:
            raise UnsupportedDetector(
                f'roi_head {_name(roi_head)}: only StandardRoIHead and CascadeRoIHead have export forms here'
            )
        for i, head in enumerate(bbox_heads):
            _check_coder(head.bbox_coder, f'roi_head.bbox_head[{i}]')
            if head.custom_cls_channels or head.custom_activation:
                raise UnsupportedDetector(f'roi_head.bbox_head[{i}] ({_name(head)}) scores with a custom activation')
        masks = roi_head.with_mask
        if masks:
            mask_heads = list(roi_head.mask_head) if kind == 'cascade' else [roi_head.mask_head]
            for head in mask_heads:
                if _name(head) != 'FCNMaskHead':
                    raise UnsupportedDetector(f'mask head {_name(head)}: only FCNMaskHead has an export form here')
            mask_extractors = roi_head.mask_roi_extractor
            extractors += list(mask_extractors) if isinstance(mask_extractors, nn.ModuleList) else [mask_extractors]
        for extractor in extractors:
            _check_extractor(extractor)
        _check_nms(roi_head.test_cfg, 'test_cfg.rcnn')
        return kind
    if isinstance(model, SingleStageDetector):
        head = model.bbox_head
        if not isinstance(head, AnchorHead):
            raise UnsupportedDetector(
                f'bbox_head {_name(head)}: of the one-stage heads only anchor heads (RetinaNet) export here'
            )
        _check_dense_head(head, 'bbox_head')
        if head.test_cfg.get('nms_pre', -1) <= 0:
            raise UnsupportedDetector('bbox_head: test_cfg.nms_pre must be positive (the number of top scores kept)')
        return 'single_stage'
    raise UnsupportedDetector(f'{_name(model)}: only two-stage (R-CNN) and one-stage anchor detectors export whole')


def _check_coder(coder: object, where: str) -> None:
    if _name(coder) != 'DeltaXYWHBBoxCoder':
        raise UnsupportedDetector(f'{where}: box coder {_name(coder)}; only DeltaXYWHBBoxCoder has an export form here')


def _check_dense_head(head: nn.Module, where: str) -> None:
    _check_coder(head.bbox_coder, where)
    if getattr(head.loss_cls, 'custom_cls_channels', False):
        raise UnsupportedDetector(f'{where}: {_name(head.loss_cls)} scores with a custom activation')
    if getattr(head.prior_generator, 'use_box_type', False):
        raise UnsupportedDetector(f'{where}: anchors as box types are not supported')
    _check_nms(head.test_cfg, f'{where} test_cfg')


def _check_extractor(extractor: nn.Module) -> None:
    if _name(extractor) != 'SingleRoIExtractor':
        raise UnsupportedDetector(f'RoI extractor {_name(extractor)}: only SingleRoIExtractor is exported here')
    for layer in extractor.roi_layers:
        if _name(layer) != 'RoIAlign' or getattr(layer, 'pool_mode', 'avg') != 'avg':
            raise UnsupportedDetector(
                f'RoI layer {layer!r}: only RoIAlign with pool_mode "avg" (ONNX RoiAlign, mode avg) is exported'
            )


def _check_nms(cfg: dict, where: str) -> Tuple[float, bool]:
    nms = cfg.get('nms')
    if nms is None:
        raise UnsupportedDetector(f'{where} has no nms')
    if nms.get('type', 'nms') != 'nms':
        raise UnsupportedDetector(
            f"{where}: nms type {nms.get('type')!r}; only mmcv's 'nms' has an ONNX form (NonMaxSuppression)"
        )
    return float(nms['iou_threshold']), bool(nms.get('class_agnostic', False))


def postprocess_settings(model: nn.Module) -> Dict[str, float]:
    """The final stage's thresholds, which `verify` uses to tell near-threshold detections: `score_thr`,
    `nms_iou`, `max_per_img` and, for mask models, `mask_thr_binary`."""
    cfg = model.bbox_head.test_cfg if detector_kind(model) == 'single_stage' else model.roi_head.test_cfg
    settings = dict(
        score_thr=float(cfg.get('score_thr', 0.0)),
        nms_iou=_check_nms(cfg, 'test_cfg')[0],
        max_per_img=int(cfg.get('max_per_img', -1)),
    )
    if getattr(model, 'roi_head', None) is not None and model.roi_head.with_mask:
        settings['mask_thr_binary'] = float(cfg.mask_thr_binary)
    return settings


@torch.library.custom_op('maformer_mm::nms', mutates_args=())
def nms(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int) -> Tensor:
    """torchvision's NMS (mmcv's: greedy by descending score, suppressing IoU > iou_threshold), its first
    `max_output` indices (all when <= 0). In ONNX it is one NonMaxSuppression whose `max_output_boxes_per_class`
    stops the search there: with `score_thr=0`, a Mask R-CNN's 80-class NMS over 100k candidates took ONNX Runtime
    5 s for the whole list, against milliseconds for the first 100."""
    keep = torchvision.ops.nms(boxes, scores, iou_threshold)
    return (keep[:max_output] if max_output > 0 else keep).clone()


@nms.register_fake
def _nms_fake(boxes: Tensor, scores: Tensor, iou_threshold: float, max_output: int) -> Tensor:
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.long)


def _onnx_nms(boxes, scores, iou_threshold: float, max_output: int):
    """`nms` in ONNX (opset 18, through onnxscript): NonMaxSuppression on one class, the box indices it selects."""
    from onnxscript import opset18 as op

    limit = max_output if max_output > 0 else 2**63 - 1
    selected = op.NonMaxSuppression(
        op.Unsqueeze(boxes, [0]), op.Unsqueeze(scores, [0, 1]), op.Constant(value_ints=[limit]),
        op.Constant(value_floats=[iou_threshold]),
    )  # fmt: skip
    return op.Reshape(op.Slice(selected, [2], [3], [1]), [-1])  # (batch, class, box) rows: the box column


def _legacy_nms(g, boxes, scores, iou_threshold, max_output):
    """`nms` for the legacy (TorchScript) exporter: the same NonMaxSuppression."""
    from torch.onnx import symbolic_helper

    limit = symbolic_helper._maybe_get_const(max_output, 'i')
    iou = symbolic_helper._maybe_get_const(iou_threshold, 'f')
    selected = g.op(
        'NonMaxSuppression',
        g.op('Unsqueeze', boxes, g.op('Constant', value_t=torch.tensor([0]))),
        g.op('Unsqueeze', scores, g.op('Constant', value_t=torch.tensor([0, 1]))),
        g.op('Constant', value_t=torch.tensor([limit if limit > 0 else 2**63 - 1])),
        g.op('Constant', value_t=torch.tensor([iou], dtype=torch.float)),
    )
    return g.op('Gather', selected, g.op('Constant', value_t=torch.tensor(2)), axis_i=1)


# what the exporters need for the graph's own operators: `torch.onnx.export(custom_translation_table=...)` (dynamo)
# and `register_legacy_symbolics()` (legacy)
ONNX_TRANSLATIONS = {torch.ops.maformer_mm.nms.default: _onnx_nms}


def register_legacy_symbolics(opset: int) -> None:
    torch.onnx.register_custom_op_symbolic('maformer_mm::nms', _legacy_nms, opset)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, cfg: dict, max_output: int = -1) -> Tensor:
    """mmcv's `batched_nms` with `nms`: the indices kept by NMS within each group, by descending score. As mmcv, the
    groups are kept apart by offsetting each group's boxes by group * (largest coordinate + 1). The largest
    coordinate is taken with a 0 added, so that no boxes gives no error: the same as mmcv's wherever a box
    coordinate is >= 0 (boxes are clipped to the image unless a coder's `clip_border` is off). The first
    `max_output` only (all: -1), as the callers keep no more."""
    iou_threshold, class_agnostic = _check_nms(cfg, 'test_cfg')
    if not class_agnostic:
        max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
        offsets = groups.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
        boxes = boxes + offsets[:, None]
    return nms(boxes, scores, iou_threshold, max_output)


def decode(coder: nn.Module, priors: Tensor, deltas: Tensor, img_hw: Tuple[Tensor, Tensor]) -> Tensor:
    """mmdet's `delta2bbox` (DeltaXYWHBBoxCoder.decode): (N, 4) priors and (N, 4k) deltas to (N, 4k) boxes, clipped
    to the image `img_hw` (H, W) when the coder clips."""
    num, k = deltas.shape[0], deltas.shape[1] // 4
    deltas = deltas.reshape(-1, 4)
    means = deltas.new_tensor(coder.means).view(1, -1)
    stds = deltas.new_tensor(coder.stds).view(1, -1)
    denorm = deltas * stds + means
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    rois = priors.repeat(1, k).reshape(-1, 4)
    pxy = (rois[:, :2] + rois[:, 2:]) * 0.5
    pwh = rois[:, 2:] - rois[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = abs(math.log(16 / 1000))  # the coder's default wh_ratio_clip
    if coder.add_ctr_clamp:
        dxy_wh = torch.clamp(dxy_wh, max=coder.ctr_clamp, min=-coder.ctr_clamp)
        dwh = torch.clamp(dwh, max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if coder.clip_border:  # clamp(min=0, max=W or H), with H and W as tensors
        h, w = img_hw
        x1, y1, x2, y2 = boxes.clamp(min=0).unbind(-1)
        boxes = torch.stack([x1.minimum(w), y1.minimum(h), x2.minimum(w), y2.minimum(h)], dim=-1)
    return boxes.reshape(num, 4 * k)


def _valid(boxes: Tensor, scores: Tensor, cfg: dict) -> Tensor:
    """The indices of the boxes wider and taller than `min_bbox_size` (mmdet's `_bbox_post_process`; any size where
    the config sets none) and not padding (score -inf, see `_best`)."""
    valid = scores > float('-inf')
    min_size = cfg.get('min_bbox_size', -1)
    if min_size >= 0:
        valid = valid & (boxes[:, 2] - boxes[:, 0] > min_size) & (boxes[:, 3] - boxes[:, 1] > min_size)
    return valid.nonzero().squeeze(1)


def _level_outputs(head: nn.Module, cls_score: Tensor, bbox_pred: Tensor) -> Tuple[Tensor, Tensor]:
    """One level of a dense head for image 0: scores (HWA, C) and deltas (HWA, 4), as mmdet's `predict_by_feat`."""
    deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, 4)
    logits = cls_score[0].permute(1, 2, 0).reshape(-1, head.cls_out_channels)
    scores = logits.sigmoid() if head.use_sigmoid_cls else logits.softmax(-1)[:, :-1]
    return scores, deltas


def _priors(head: nn.Module, level: int, feat: Tensor) -> Tensor:
    return head.prior_generator.single_level_grid_priors(
        feat.shape[-2:], level_idx=level, dtype=feat.dtype, device=feat.device
    )


def _best(scores: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """The k best scores and their indices, best first, as mmdet's sort-then-keep-the-first-k, with k fixed: k
    entries of -inf are appended so that there are always k (they come last, with indices >= len(scores), and are
    dropped later for their score). A fixed k keeps the graph's sizes simple for the exporter."""
    return torch.cat([scores, scores.new_full((k,), float('-inf'))]).topk(k)


def _padded(rows: Tensor, k: int) -> Tensor:
    """`rows` with k rows of zeros appended: what `_best`'s padding indices pick."""
    return torch.cat([rows, rows.new_zeros(k, *rows.shape[1:])])


def rpn_proposals(head: nn.Module, feats: Sequence[Tensor], img_hw: Tuple[Tensor, Tensor]) -> Tensor:
    """RPNHead's `_predict_by_feat_single` and `_bbox_post_process` (rescale off): the `nms_pre` best anchors of
    each level, decoded, small boxes dropped, NMS per level, the first `max_per_img`. Proposals (P, 4)."""
    cfg = head.test_cfg
    nms_pre = cfg.get('nms_pre', -1)
    cls_scores, bbox_preds = head(feats)
    all_boxes, all_scores, all_levels = [], [], []
    for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
        scores, deltas = _level_outputs(head, cls_score, bbox_pred)
        scores = scores.reshape(-1)
        priors = _priors(head, level, cls_score)
        if nms_pre > 0:  # mmdet sorts and keeps the first nms_pre when there are more
            scores, inds = _best(scores, nms_pre)
            deltas, priors = _padded(deltas, nms_pre)[inds], _padded(priors, nms_pre)[inds]
        all_boxes.append(decode(head.bbox_coder, priors, deltas, img_hw))
        all_scores.append(scores)
        all_levels.append(torch.full_like(scores, level, dtype=torch.long))
    boxes, scores, levels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_levels)
    keep = _valid(boxes, scores, cfg)
    boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
    keep = batched_nms(boxes, scores, levels, cfg, cfg.max_per_img)
    return boxes[keep]


def dense_detections(
    head: nn.Module, feats: Sequence[Tensor], img_hw: Tuple[Tensor, Tensor], inv_scale: Tensor
) -> Tuple[Tensor, Tensor, Tensor]:
    """A one-stage anchor head's `_predict_by_feat_single` and `_bbox_post_process` (rescale on): per level the
    `nms_pre` best (anchor, class) scores above `score_thr` (the best k of all, then those above the threshold:
    the same set), decoded, rescaled to the original image, small boxes dropped, NMS per class, `max_per_img`."""
    cfg = head.test_cfg
    score_thr, nms_pre = cfg.get('score_thr', 0), cfg.nms_pre
    cls_scores, bbox_preds = head(feats)
    all_boxes, all_scores, all_labels = [], [], []
    for level, (cls_score, bbox_pred) in enumerate(zip(cls_scores, bbox_preds)):
        scores, deltas = _level_outputs(head, cls_score, bbox_pred)
        num_classes = scores.shape[1]
        priors = _priors(head, level, cls_score)
        top, inds = _best(scores.reshape(-1), nms_pre)
        valid = (top > score_thr).nonzero().squeeze(1)  # also drops the padding's -inf
        top, inds = top[valid], inds[valid]
        anchors = torch.div(inds, num_classes, rounding_mode='floor')
        all_boxes.append(decode(head.bbox_coder, priors[anchors], deltas[anchors], img_hw))
        all_scores.append(top)
        all_labels.append(inds - anchors * num_classes)
    boxes, scores, labels = torch.cat(all_boxes), torch.cat(all_scores), torch.cat(all_labels)
    boxes = boxes * inv_scale.repeat(2)
    keep = _valid(boxes, scores, cfg)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes, scores, labels, cfg, cfg.max_per_img)
    return boxes[keep], scores[keep], labels[keep]


def roi_features(extractor: nn.Module, feats: Sequence[Tensor], rois: Tensor) -> Tensor:
    """SingleRoIExtractor's `forward`: each RoI (N, 5) pooled by RoIAlign from the level its scale maps to
    (`map_roi_levels`), as (N, C, h, w). Each level pools only its own RoIs (NonZero, RoiAlign, ScatterND)."""
    layers = extractor.roi_layers
    feats = feats[: extractor.num_inputs]
    out_h, out_w = layers[0].output_size

    def align(level: int, level_rois: Tensor) -> Tensor:
        layer = layers[level]
        return torchvision.ops.roi_align(
            feats[level], level_rois, (out_h, out_w), layer.spatial_scale, layer.sampling_ratio, layer.aligned
        )

    if len(feats) == 1:
        return align(0, rois)
    levels = extractor.map_roi_levels(rois, len(feats))
    out = feats[0].new_zeros(rois.shape[0], extractor.out_channels, out_h, out_w)
    for level in range(len(feats)):
        inds = (levels == level).nonzero().squeeze(1)
        out[inds] = align(level, rois[inds])
    return out


def head_on_rois(head: nn.Module, extractor: nn.Module, feats: Sequence[Tensor], rois: Tensor):
    """`head(extractor(feats, rois))`, run with one RoI more (a 1x1 box at the origin) whose outputs are dropped: with
    at least one RoI, the exporter need not decide whether the heads' layers see an empty batch (batch norm asks),
    and ONNX Runtime never runs them on one. The other RoIs' outputs are unchanged."""
    padded = torch.cat([rois, rois.new_tensor([[0.0, 0.0, 0.0, 1.0, 1.0]])])
    out = head(roi_features(extractor, feats, padded))
    return tuple(o[:-1] for o in out) if isinstance(out, tuple) else out[:-1]


def _with_batch_index(boxes: Tensor) -> Tensor:
    return torch.cat([boxes.new_zeros(boxes.shape[0], 1), boxes], dim=1)


def rcnn_detections(
    head: nn.Module,
    rois: Tensor,
    cls_score: Tensor,
    bbox_pred: Tensor,
    img_hw: Tuple[Tensor, Tensor],
    inv_scale: Tensor,
    rescale: bool,
    cfg: dict,
) -> Tuple[Tensor, Tensor, Tensor]:
    """BBoxHead's `_predict_by_feat_single` and `multiclass_nms`: softmax scores, boxes decoded per class (or once,
    class-agnostic), rescaled to the original image when `rescale`, then every (box, class) above `score_thr`,
    NMS per class and the first `max_per_img`."""
    scores = F.softmax(cls_score, dim=-1)
    boxes = decode(head.bbox_coder, rois[:, 1:], bbox_pred, img_hw)  # N, 4k
    if rescale:
        boxes = boxes * inv_scale.repeat(boxes.shape[1] // 2)
    num_rois, num_classes = scores.shape[0], scores.shape[1] - 1
    if boxes.shape[1] > 4:
        boxes = boxes.reshape(num_rois, num_classes, 4)
    else:
        boxes = boxes[:, None].expand(num_rois, num_classes, 4)
    scores = scores[:, :-1]
    labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    valid = (scores > cfg.score_thr).nonzero().squeeze(1)
    boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
    keep = batched_nms(boxes, scores, labels, cfg, cfg.max_per_img)
    return boxes[keep], scores[keep], labels[keep]


def _stages(part: nn.Module) -> List[nn.Module]:
    return list(part) if isinstance(part, nn.ModuleList) else [part]


def cascade_scores(
    roi_head: nn.Module, feats: Sequence[Tensor], rois: Tensor, img_hw: Tuple[Tensor, Tensor]
) -> Tuple[Tensor, Tensor, Tensor]:
    """CascadeRoIHead's `_refine_roi`: each stage scores and regresses the RoIs that the stage before refined (by its
    top class's deltas). Returns the last stage's input RoIs, the stages' mean class logits and the last deltas."""
    stages = []
    bbox_heads, extractors = _stages(roi_head.bbox_head), _stages(roi_head.bbox_roi_extractor)
    bbox_pred = None
    for stage, (head, extractor) in enumerate(zip(bbox_heads, extractors)):
        cls_score, bbox_pred = head_on_rois(head, extractor, feats, rois)
        stages.append(cls_score)
        if stage < len(bbox_heads) - 1:
            deltas = bbox_pred
            if not head.reg_class_agnostic:
                label = cls_score[:, :-1].argmax(dim=1) * 4
                deltas = torch.gather(bbox_pred, 1, torch.stack([label + i for i in range(4)], 1))
            rois = torch.cat([rois[:, [0]], decode(head.bbox_coder, rois[:, 1:], deltas, img_hw)], dim=1)
    return rois, sum(stages) / float(len(stages)), bbox_pred


def mask_probabilities(roi_head: nn.Module, feats: Sequence[Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
    """The mask head's (N, M, M) probabilities for each box's class: sigmoid of its logits (FCNMaskHead's
    `_predict_by_feat_single`); Cascade: their mean over the stages (`merge_aug_masks`)."""
    rois = _with_batch_index(boxes)
    probs = []
    for head, extractor in zip(_stages(roi_head.mask_head), _stages(roi_head.mask_roi_extractor)):
        logits = head_on_rois(head, extractor, feats, rois)  # N, C (1: class-agnostic), M, M
        size = logits.shape[-2:]
        if not head.class_agnostic:
            index = labels.view(-1, 1, 1, 1).expand(-1, 1, size[0], size[1])
            logits = torch.gather(logits, 1, index)
        probs.append(logits[:, 0].sigmoid())
    return probs[0] if len(probs) == 1 else torch.stack(probs).mean(dim=0)


class WholeDetector(nn.Module):
    """An mmdet detector's `predict(rescale=True)` for one image as a graph (see the module docstring):
    `forward(images, img_shape, scale_factor)` returns (boxes, scores, labels) and, for mask models, masks."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.kind = detector_kind(model)
        self.model = model
        self.with_mask = self.kind != 'single_stage' and model.roi_head.with_mask
        self.pad_size_divisor = int(getattr(model.data_preprocessor, 'pad_size_divisor', 1))

    @property
    def output_names(self) -> List[str]:
        return ['boxes', 'scores', 'labels'] + (['masks'] if self.with_mask else [])

    def forward(self, images: Tensor, img_shape: Tensor, scale_factor: Tensor) -> Tuple[Tensor, ...]:
        img_hw = tuple(img_shape.to(images.dtype).unbind(0))  # mmdet clips boxes to img_shape, the image unpadded
        feats = self.model.extract_feat(images)
        inv_scale = (1.0 / scale_factor.double()).float()  # mmdet: [1 / s for s in scale_factor], then float32
        if self.kind == 'single_stage':
            return dense_detections(self.model.bbox_head, feats, img_hw, inv_scale)
        roi_head = self.model.roi_head
        rois = _with_batch_index(rpn_proposals(self.model.rpn_head, feats, img_hw))
        if self.kind == 'cascade':
            rois, cls_score, bbox_pred = cascade_scores(roi_head, feats, rois, img_hw)
            last = roi_head.bbox_head[-1]
        else:
            last = roi_head.bbox_head
            cls_score, bbox_pred = head_on_rois(last, roi_head.bbox_roi_extractor, feats, rois)
        # with masks, mmdet keeps the boxes in the input's coordinates until the mask head has read them
        boxes, scores, labels = rcnn_detections(
            last, rois, cls_score, bbox_pred, img_hw, inv_scale, not self.with_mask, roi_head.test_cfg
        )
        if not self.with_mask:
            return boxes, scores, labels
        masks = mask_probabilities(roi_head, feats, boxes, labels)
        return boxes / scale_factor.float().repeat(2), scores, labels, masks
