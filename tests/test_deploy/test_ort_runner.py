"""The standalone ONNX runner: its pieces against mmdet's (resize, preprocessing, mask paste, RLE), and the runner
itself in a fresh virtual environment holding only onnxruntime, numpy and opencv-python-headless, writing what
tools/infer.py writes for the checkpoint; tools/infer.py handing an .onnx file to it; its errors."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from maformer_mm.deploy import ort_runner
from maformer_mm.deploy.verify import match_detections
from maformer_mm.tools import export_onnx as export_tool
from maformer_mm.tools import infer as infer_tool
from tests.helpers import REPO

MEAN, STD = np.array([123.675, 116.28, 103.53], np.float32), np.array([58.395, 57.12, 57.375], np.float32)


@pytest.mark.parametrize('size', [(96, 128), (120, 160), (37, 301), (500, 333), (800, 1199)])
@pytest.mark.parametrize('keep_ratio', [True, False])
def test_prepare_is_mmdet_resize_and_data_preprocessor(size, keep_ratio):
    """The runner's inputs equal those of mmdet's Resize and DetDataPreprocessor, bit for bit."""
    from mmcv.transforms import Compose
    from mmdet.models.data_preprocessors import DetDataPreprocessor

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    scale = (1333, 800) if size[0] > 200 else (160, 120)
    pipeline = Compose(
        [dict(type='mmdet.Resize', scale=scale, keep_ratio=keep_ratio), dict(type='mmdet.PackDetInputs')]
    )
    packed = pipeline(dict(img=image, img_shape=image.shape[:2], ori_shape=image.shape[:2]))
    preprocessor = DetDataPreprocessor(mean=MEAN.tolist(), std=STD.tolist(), bgr_to_rgb=True, pad_size_divisor=32)
    data = preprocessor(dict(inputs=[packed['inputs']], data_samples=[packed['data_samples']]))
    resize = dict(scale=list(scale), scale_factor=None, keep_ratio=keep_ratio, interpolation='bilinear')
    feed, factor = ort_runner.prepare(image, resize, MEAN, STD, True, 32)
    meta = data['data_samples'][0].metainfo
    assert np.array_equal(feed['images'], data['inputs'].numpy())
    assert tuple(feed['img_shape']) == meta['img_shape'] and factor == meta['scale_factor']


def test_paste_masks_is_mmdets_paste():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask

    rng = np.random.default_rng(0)
    for _ in range(20):
        h, w = (int(v) for v in rng.integers(20, 160, 2))
        x0, y0 = rng.uniform(-10, w, 6), rng.uniform(-10, h, 6)
        boxes = np.stack([x0, y0, x0 + rng.uniform(0.5, 90, 6), y0 + rng.uniform(0.5, 90, 6)], 1).astype(np.float32)
        probs = rng.random((6, 28, 28)).astype(np.float32)
        pasted, region = _do_paste_mask(torch.from_numpy(probs)[:, None], torch.from_numpy(boxes), h, w)
        expected = np.zeros((6, h, w), bool)
        expected[(slice(None), *region)] = (pasted >= 0.5).numpy()
        assert np.array_equal(ort_runner.paste_masks(probs, boxes, h, w, 0.5), expected)


def test_rle_is_pycocotools():
    rng = np.random.default_rng(0)
    for shape, p in [((5, 7), 0.5), ((1, 1), 1.0), ((30, 17), 0.0), ((64, 48), 0.9), ((200, 300), 0.02)]:
        mask = rng.random(shape) < p
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert ort_runner.encode_rle(mask) == {'size': list(shape), 'counts': expected['counts'].decode()}


def test_the_runner_refuses_what_it_cannot_run(tmp_path):
    with pytest.raises(FileNotFoundError, match='ONNX file not found'):
        ort_runner.infer(str(tmp_path), str(tmp_path / 'missing.onnx'), str(tmp_path / 'out'))
    linear = tmp_path / 'linear.onnx'
    torch.onnx.export(torch.nn.Linear(3, 2), (torch.randn(1, 3),), str(linear), dynamo=False, input_names=['x'])
    with pytest.raises(ValueError, match='not a whole detector exported by tools/deploy/export_onnx.py'):
        ort_runner.OnnxDetector(str(linear))
    with pytest.raises(ValueError, match=r'expected a colour image \(H, W, 3\)'):
        ort_runner.prepare(np.zeros((4, 4), np.uint8), None, MEAN, STD, True, 32)
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no images'):
        ort_runner.list_images(str(tmp_path / 'empty'))


def _venv_with_three_packages(path: Path) -> Path:
    """A fresh virtual environment with requirements-deploy.txt installed from the package registry."""
    subprocess.run([sys.executable, '-m', 'venv', str(path)], check=True)
    python = path / 'bin' / 'python'
    pip = [str(python), '-m', 'pip', 'install', '-q', '-r', str(REPO / 'requirements-deploy.txt')]
    proc = subprocess.run(pip, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return python


def _json_dets(folder: Path, name: str, shape) -> dict:
    pred = json.loads((folder / 'preds' / f'{name}.json').read_text())
    dets = {key: np.array(pred[key]) for key in ('bboxes', 'scores', 'labels')}
    dets['bboxes'] = dets['bboxes'].reshape(-1, 4)
    masks = [mask_utils.decode({'size': m['size'], 'counts': m['counts'].encode()}) for m in pred['masks']]
    dets['masks'] = np.array(masks, bool).reshape(-1, *shape)
    return dets


def _names(folder: Path, name: str) -> set:
    """The (label, class name, category id) triples of a prediction file; infer's carry the data set's ids."""
    pred = json.loads((folder / 'preds' / f'{name}.json').read_text())
    triples = set(zip(pred['labels'], pred['label_names'], pred['category_ids']))
    assert all(None not in triple for triple in triples), triples
    return triples


def test_standalone_runner_in_a_fresh_venv_writes_what_infer_writes(workspace, tmp_path):
    """A trained tiny Mask R-CNN, exported whole; the runner copied alone into a folder and run by a fresh venv's
    Python (onnxruntime, numpy, opencv-python-headless; no torch): drawings and JSON like tools/infer.py's for the
    checkpoint (mmdet's DetInferencer), detection for detection, class names and category ids included; tools/infer.py
    given the .onnx file writes the same."""
    config, checkpoint = workspace['configs']['mask_rcnn'], workspace['checkpoint']('mask_rcnn')
    model = tmp_path / 'mask_rcnn.onnx'
    export_tool.main(
        [str(config), str(checkpoint), '--shape', '128', '160', '--out', str(model), '--exporter', 'legacy']
    )

    python = _venv_with_three_packages(tmp_path / 'venv')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    probe = (
        'import importlib.util as u; print([m for m in ("torch", "mmengine", "mmcv", "maformer_mm") if u.find_spec(m)])'
    )
    found = subprocess.run([str(python), '-c', probe], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert found.stdout == '[]\n', found.stdout + found.stderr
    deployed = tmp_path / 'deployed'
    deployed.mkdir()
    shutil.copy(REPO / 'maformer_mm' / 'deploy' / 'ort_runner.py', deployed)
    images = workspace['root'] / 'data' / 'val'
    command = [str(python), 'ort_runner.py', str(images), str(model), '--out-dir', str(tmp_path / 'ort')]
    proc = subprocess.run(
        [*command, '--pred-score-thr', '0.05'], cwd=deployed, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'wrote 4 images' in proc.stdout and 'and 4 predictions' in proc.stdout

    infer_tool.main(
        [str(images), str(config), str(checkpoint), '--out-dir', str(tmp_path / 'torch'), '--device', 'cpu']
    )
    infer_tool.main(
        [str(images), str(config), str(model), '--out-dir', str(tmp_path / 'dispatched'), '--score-thr', '0.05']
    )
    settings = dict(score_thr=0.05, nms_iou=0.5, max_per_img=30)
    detections = 0
    for path in sorted(images.iterdir()):
        name, shape = path.stem, cv2.imread(str(path)).shape[:2]
        expected = _json_dets(tmp_path / 'torch', name, shape)
        for folder in ('ort', 'dispatched'):
            result = match_detections(_json_dets(tmp_path / folder, name, shape), expected, settings)
            assert result.ok and result.matched == len(expected['scores']), result.line()
            assert _names(tmp_path / folder, name) == _names(tmp_path / 'torch', name)
            drawn = cv2.imread(str(tmp_path / folder / 'vis' / path.name))  # boxes drawn where there are some
            assert drawn.shape == (*shape, 3)
            assert np.array_equal(drawn, cv2.imread(str(path))) == (len(expected['scores']) == 0)
        detections += len(expected['scores'])
    assert detections > 0
