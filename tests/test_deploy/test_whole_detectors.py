"""Whole detectors in ONNX: each of the four kinds (Faster, Mask, Cascade Mask R-CNN, RetinaNet), trained for a few
iterations on a generated COCO set, exported with H and W dynamic, its detections matched box by box with PyTorch's
`predict` at sizes other than the export size, and scored by mmdet's CocoMetric through `tools/test.py --backend
onnxruntime` as PyTorch is scored, image by image. Mask R-CNN uses the default exporter (dynamo), the others the
legacy one (about 10x faster to export; both are checked the same way)."""

import pickle
from pathlib import Path

import numpy as np
import onnx
import pytest
from pycocotools import mask as mask_utils

from maformer_mm.deploy.verify import match_detections
from maformer_mm.tools import export_onnx as export_tool
from maformer_mm.tools import test as test_tool
from tests.test_deploy.tiny_detectors import KINDS

EXPORTER = {'mask_rcnn': 'dynamo', 'faster_rcnn': 'legacy', 'cascade_mask_rcnn': 'legacy', 'retinanet': 'legacy'}
SHAPE = (64, 96)  # the export size; the demo images are resized to 160x120 (padded 160x128) for the mAP
OTHER_SIZES = ((45, 133), (117, 55))
SETTINGS = dict(score_thr=0.05, nms_iou=0.5, max_per_img=30)


def _dump(path: Path) -> dict:
    """tools/test.py's --out predictions by image id, as match_detections takes them (masks decoded)."""
    with open(path, 'rb') as f:
        records = pickle.load(f)
    dets = {}
    for record in records:
        pred = record['pred_instances']
        det = {key: np.asarray(pred[key]) for key in ('bboxes', 'scores', 'labels')}
        if 'masks' in pred:
            det['masks'] = np.array([mask_utils.decode(rle).astype(bool) for rle in pred['masks']])
            det['masks'] = det['masks'].reshape(len(det['scores']), *record['ori_shape'])
        dets[record['img_id']] = det
    return dets


@pytest.mark.parametrize('kind', list(KINDS))
def test_exports_whole_verifies_box_by_box_and_scores_like_pytorch(workspace, kind, tmp_path, capsys):
    config, ckpt = workspace['configs'][kind], workspace['checkpoint'](kind)
    path = tmp_path / f'{kind}.onnx'
    args = [config, ckpt, '--shape', *SHAPE, '--out', path, '--dynamic', '--verify', '--exporter', EXPORTER[kind]]
    export_tool.main([str(a) for a in (*args, '--verify-shapes', *OTHER_SIZES[0], *OTHER_SIZES[1])])
    out = capsys.readouterr().out
    masks = KINDS[kind][1]
    counts = []
    for h, w in [SHAPE, *OTHER_SIZES]:
        line = next(line for line in out.splitlines() if line.startswith(f'{h}x{w}: '))
        assert 'FAILED' not in line, line
        counts.append(int(line.split(': ')[1].split(' detections')[0]))
        assert ('mask IoU' in line) == masks, line
    assert sum(counts) > 0, out  # something to match: the trained detector detects
    assert 'every detection matched box by box' in out

    model = onnx.load(str(path))
    assert [i.name for i in model.graph.input] == ['images', 'img_shape', 'scale_factor']
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 3, 'height', 'width']
    assert [o.name for o in model.graph.output] == ['boxes', 'scores', 'labels'] + (['masks'] if masks else [])
    ops = {node.op_type for node in model.graph.node}
    assert {node.domain for node in model.graph.node} <= {'', 'ai.onnx'}  # standard operators only
    assert {'NonMaxSuppression', 'TopK'} <= ops and ('RoiAlign' in ops) == (kind != 'retinanet')
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta['classes'] == '["circle", "square", "triangle"]' and meta['pad_size_divisor'] == '32'
    assert (
        meta['resize'] == '{"scale": [160, 120], "scale_factor": null, "keep_ratio": true, "interpolation": "bilinear"}'
    )

    # scored by the config's CocoMetric, in ONNX Runtime as in PyTorch; and the same predictions, image by image
    work_dir = str(tmp_path / 'test')
    expected = test_tool.main([str(config), str(ckpt), '--work-dir', work_dir, '--out', str(tmp_path / 'torch.pkl')])
    onnx_args = [str(config), str(path), '--backend', 'onnxruntime', '--work-dir', work_dir]
    got = test_tool.main([*onnx_args, '--out', str(tmp_path / 'onnx.pkl')])
    keys = ['coco/bbox_mAP', 'coco/bbox_mAP_50'] + (['coco/segm_mAP', 'coco/segm_mAP_50'] if masks else [])
    for key in keys:
        assert abs(got[key] - expected[key]) <= 0.001, (key, got[key], expected[key])
    onnx_dets, torch_dets = _dump(tmp_path / 'onnx.pkl'), _dump(tmp_path / 'torch.pkl')
    assert sorted(onnx_dets) == sorted(torch_dets) and len(torch_dets) == 4
    settings = dict(SETTINGS, **({'max_per_img': 100} if kind == 'retinanet' else {}))
    for img_id, dets in onnx_dets.items():
        result = match_detections(dets, torch_dets[img_id], settings)
        assert result.ok, result.line()


def test_the_onnxruntime_backend_names_a_file_it_cannot_score(workspace, tmp_path):
    """`tools/test.py --backend onnxruntime` refuses a missing file and a checkpoint, naming them, before any data."""
    args = [str(workspace['configs']['faster_rcnn']), '--backend', 'onnxruntime', '--work-dir', str(tmp_path)]
    missing = tmp_path / 'missing.onnx'
    with pytest.raises(FileNotFoundError, match=f'ONNX file not found: {missing}'):
        test_tool.main([args[0], str(missing), *args[1:]])
    checkpoint = tmp_path / 'epoch_1.pth'
    checkpoint.write_bytes(b'not an export')
    with pytest.raises(ValueError, match=rf'takes a \.onnx file .* got {checkpoint}'):
        test_tool.main([args[0], str(checkpoint), *args[1:]])
