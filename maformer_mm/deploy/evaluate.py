"""A whole-detector ONNX file scored on a config's test set by the config's own metric (mmdet's CocoMetric), the
images prepared and the masks pasted by the standalone runner (`ort_runner`), as a deployment would run it:
`tools/test.py CONFIG MODEL.onnx --backend onnxruntime`."""

import json
from typing import Callable, Dict, Optional

import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import DATASETS, init_default_scope

from .ort_runner import OnnxDetector, read_image

__all__ = ['evaluate_onnx']


def evaluate_onnx(
    cfg: Config, path: str, out: Optional[str] = None, log: Callable[[str], None] = print
) -> Dict[str, float]:
    """Runs the ONNX detector at `path` in ONNX Runtime (CPU) on every image of `cfg`'s test set and returns what
    `cfg.test_evaluator` computes (e.g. `coco/bbox_mAP`, `coco/segm_mAP`); with `out` (.pkl), also writes the
    predictions as tools/test.py's `--out` does (mmdet's DumpDetResults). ValueError when the file's classes are not
    the test set's."""
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    detector = OnnxDetector(path)
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    classes = list(dataset.metainfo.get('classes', ()))
    if detector.classes and list(detector.classes) != classes:
        raise ValueError(
            f'{path} was exported for the classes {detector.classes}, the test set of {cfg.filename} has {classes}'
        )
    metrics = cfg.test_evaluator if isinstance(cfg.test_evaluator, (list, tuple)) else [cfg.test_evaluator]
    if out:
        from mmdet.evaluation import DumpDetResults

        metrics = [*metrics, DumpDetResults(out_file_path=out)]
    evaluator = Evaluator(metrics)
    evaluator.dataset_meta = dataset.metainfo
    for index in range(len(dataset)):
        info = dataset.get_data_info(index)
        image = read_image(info['img_path'])
        result = detector(image)
        pred = {key: torch.from_numpy(value) for key, value in result.items()}
        evaluator.process([dict(img_id=info['img_id'], ori_shape=image.shape[:2], pred_instances=pred)])
        if (index + 1) % 50 == 0:
            log(f'{index + 1}/{len(dataset)} images')
    metrics = evaluator.evaluate(len(dataset))
    log(json.dumps({key: round(float(value), 4) for key, value in metrics.items()}))
    return metrics
