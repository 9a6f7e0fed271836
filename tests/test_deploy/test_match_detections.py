"""The box-by-box match of `--verify` for whole detectors: what passes, what is exempt (and counted), what fails."""

import numpy as np

from maformer_mm.deploy.verify import match_detections

SETTINGS = dict(score_thr=0.05, nms_iou=0.5, max_per_img=100)


def _dets(boxes, scores, labels, masks=None) -> dict:
    dets = dict(bboxes=np.array(boxes, np.float32).reshape(-1, 4), scores=np.array(scores, np.float32))
    dets['labels'] = np.array(labels, np.int64)
    if masks is not None:
        dets['masks'] = np.array(masks, bool)
    return dets


BOXES = [[10, 10, 50, 50], [60, 10, 90, 70], [5, 60, 40, 95]]
TORCH = _dets(BOXES, [0.9, 0.6, 0.3], [0, 1, 2])


def test_the_same_detections_in_another_order_match():
    onnx = _dets(BOXES[::-1], [0.3 + 1e-7, 0.6, 0.9 - 2e-7], [2, 1, 0])
    result = match_detections(onnx, TORCH, SETTINGS)
    assert result.ok and result.matched == 3 and not result.exempt
    assert 1e-7 < result.max_score_diff < 3e-7 and result.min_box_iou == 1.0


def test_a_moved_box_a_changed_score_or_label_fails():
    moved = _dets([[10, 30, 50, 70], *BOXES[1:]], [0.9, 0.6, 0.3], [0, 1, 2])  # IoU 0.33
    scored = _dets(BOXES, [0.9, 0.6, 0.302], [0, 1, 2])
    labelled = _dets(BOXES, [0.9, 0.6, 0.3], [0, 2, 2])
    for onnx in (moved, scored, labelled):
        result = match_detections(onnx, TORCH, SETTINGS)
        assert not result.ok and result.matched == 2 and 'without a partner' in result.line()
    # moved a little (IoU 0.976), same score: from the outputs alone, the other of two near-tied boxes that NMS kept
    # (an NMS tie, counted); a systematic difference fails by the count (below)
    nudged = _dets([[10, 10, 50, 51], *BOXES[1:]], [0.9, 0.6, 0.3], [0, 1, 2])
    result = match_detections(nudged, TORCH, SETTINGS)
    assert result.ok and result.exempt == {'NMS tie': 2} and result.matched == 2


def test_a_detection_more_or_less_fails_unless_a_threshold_or_an_nms_tie_explains_it():
    extra = _dets([*BOXES, [100, 100, 120, 130]], [0.9, 0.6, 0.3, 0.2], [0, 1, 2, 0])
    assert not match_detections(extra, TORCH, SETTINGS).ok
    assert not match_detections(TORCH, extra, SETTINGS).ok  # the other way round too
    near_threshold = _dets([*BOXES, [100, 100, 120, 130]], [0.9, 0.6, 0.3, 0.0505], [0, 1, 2, 0])
    result = match_detections(near_threshold, TORCH, SETTINGS)
    assert result.ok and result.exempt == {'near the score threshold': 1} and result.counts == (4, 3)
    # ONNX kept the second of two boxes whose IoU (0.5002) is at the NMS threshold; PyTorch suppressed it
    tie = _dets([*BOXES, [10.0, 23.32, 50.0, 63.32]], [0.9, 0.6, 0.3, 0.4], [0, 1, 2, 0])
    result = match_detections(tie, TORCH, SETTINGS)
    assert result.ok and result.exempt == {'NMS tie': 1}
    # two overlapping boxes of nearly the same score: each side kept the other one
    rival = _dets([[12, 10, 52, 50], *BOXES[1:]], [0.8996, 0.6, 0.3], [0, 1, 2])
    theirs = _dets(BOXES, [0.9, 0.6, 0.3], [0, 1, 2])
    result = match_detections(rival, theirs, SETTINGS)
    assert result.ok and result.exempt == {'NMS tie': 2} and result.matched == 2


def test_the_max_per_img_cut_and_too_many_exemptions():
    settings = dict(SETTINGS, max_per_img=3)
    cut = _dets([*BOXES[:2], [100, 100, 120, 130]], [0.9, 0.6, 0.3002], [0, 1, 0])
    result = match_detections(cut, TORCH, settings)
    assert result.ok and result.exempt == {'at the max_per_img cut': 2}
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 200, (40, 2))
    boxes = np.concatenate([corners, corners + 30], 1)
    theirs = _dets(boxes, np.linspace(0.9, 0.5, 40), np.zeros(40))
    shifted = _dets(boxes + [1, 0, 1, 0], np.linspace(0.9, 0.5, 40), np.zeros(40))  # IoU 0.94 with their boxes
    result = match_detections(shifted, theirs, SETTINGS)
    assert not result.ok and 'a systematic difference' in result.line()


def test_masks_are_matched_too():
    mask = np.zeros((3, 100, 100), bool)
    for m, (x0, y0, x1, y1) in zip(mask, BOXES):
        m[y0:y1, x0:x1] = True
    torch_dets = dict(TORCH, masks=mask)
    assert match_detections(dict(TORCH, masks=mask.copy()), torch_dets, SETTINGS).min_mask_iou == 1.0
    eroded = mask.copy()
    eroded[0, 10:50, 10:12] = False  # 95% of the mask: IoU 0.95
    result = match_detections(dict(TORCH, masks=eroded), torch_dets, SETTINGS)
    assert not result.ok and 'mask IoU 0.9500 < 0.98' in result.line()
