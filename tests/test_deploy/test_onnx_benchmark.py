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
