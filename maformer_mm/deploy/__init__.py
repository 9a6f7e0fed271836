"""Deployment: ONNX export of MAFormer models and its check in ONNX Runtime (`tools/deploy/export_onnx.py`)."""

from .exporter import EXPORTERS, MSDA_REASON, default_exporter, dynamic_blockers, export_onnx
from .targets import ExportTarget, build_model, build_target
from .verify import (
    Comparison,
    DetectionMatch,
    OnnxVerificationError,
    match_detections,
    other_sizes,
    verify_detector,
    verify_onnx,
)

__all__ = [
    'EXPORTERS',
    'MSDA_REASON',
    'default_exporter',
    'dynamic_blockers',
    'export_onnx',
    'ExportTarget',
    'build_model',
    'build_target',
    'Comparison',
    'OnnxVerificationError',
    'other_sizes',
    'verify_onnx',
    'DetectionMatch',
    'match_detections',
    'verify_detector',
]
