"""benchmarks/onnx_benchmark.py measures a tiny backbone end to end (nothing here is timed)."""

from benchmarks import onnx_benchmark
from maformer_mm.deploy import ExportTarget
from maformer_mm.deploy.targets import BackboneFeatures
from maformer_mm.models import MAFormer


def test_measure_and_report(tiny_cfg, tmp_path):
    model = MAFormer(**tiny_cfg).eval()
    target = ExportTarget(BackboneFeatures(model), 'backbone', [f'stage{i}' for i in range(4)])
    row = onnx_benchmark.measure('tiny', target, (64, 48), repeats=2, workdir=str(tmp_path), exporter='legacy')
    assert row['size'] == [64, 48] and row['torch_s'] > 0 and row['onnxruntime_s'] > 0 and row['export_s'] > 0
    assert row['speedup'] == row['torch_s'] / row['onnxruntime_s'] and row['onnx_mib'] > 0
    assert row['max_rel_diff'] < 1e-4  # the timed file computes what the model computes
    text = onnx_benchmark.markdown([row], repeats=2)
    assert '| tiny | 64x48 |' in text and 'legacy exporter' in text and 'threads' in text


def test_measure_a_whole_detector(tmp_path):
    """The detector row: a tiny Mask R-CNN exported whole, timed against mmdet's predict, detections matched."""
    from maformer_mm.config.zoo import load_config
    from maformer_mm.deploy import build_target
    from tests.test_deploy.tiny_detectors import write_configs

    cfg = load_config(str(write_configs(tmp_path, tmp_path / 'data')['mask_rcnn']))
    cfg.model.test_cfg.rcnn.score_thr = 0.0
    row = onnx_benchmark.measure('tiny det', build_target(cfg), (64, 96), 1, str(tmp_path), exporter='legacy')
    assert row['detections'] == [30, 30] and row['failures'] == 0 and row['matched'] + row['exempt'] == 30
    assert row['min_mask_iou'] >= 0.98 and row['max_score_diff'] < 1e-3 and row['speedup'] > 0
    text = onnx_benchmark.markdown([row], repeats=1)
    assert '| tiny det | 64x96 | 1 |' in text and 'matched / exempt / failed' in text
