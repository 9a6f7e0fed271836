"""Checks an exported ONNX file against the PyTorch module it came from, in ONNX Runtime on the CPU."""

from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = ['OnnxVerificationError', 'Comparison', 'verify_onnx', 'other_sizes']


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
