"""ONNX Runtime against PyTorch eager on the CPU, measured in one process, interleaved.

Each model is exported at its input size (fixed shape, the default exporter of
`tools/deploy/export_onnx.py`), then PyTorch (eval, no grad) and ONNX Runtime (CPU execution provider, all
graph optimisations, as many intra-op threads as PyTorch uses) take turns on the same input in every round;
the median of the rounds after a warm-up round is reported, with the ratio PyTorch time / ONNX Runtime
time and the largest output difference relative to the output's scale. Random weights (speed does not
depend on them). Writes a Markdown table and JSON; the rows of the cases run replace those of earlier runs.

Whole detectors (`mask-rcnn-800`: Mask R-CNN MAFormer-T; `swin-mask-rcnn-800`: mmdet's Swin-T Mask R-CNN, the
same export code on mmdet's heads) run on a generated 800x1216 scene: PyTorch is mmdet's `predict` (rescale on,
masks pasted), ONNX Runtime the exported graph and the runner's mask paste; their detections are matched box by
box (`verify.match_detections`). With random weights no class would pass the 0.05 score threshold, so the
benchmark sets `score_thr=0` and each image gives `max_per_img` (100) detections, masks included.

    python benchmarks/onnx_benchmark.py                      # every case
    python benchmarks/onnx_benchmark.py --cases backbone-224 --repeats 3
    python benchmarks/onnx_benchmark.py --cases mask-rcnn-800 swin-mask-rcnn-800 --threads 1 --repeats 3
"""

import argparse
import json
import os
import os.path as osp
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import maformer_mm  # noqa: F401
from maformer_mm.config.zoo import load_config
from maformer_mm.deploy import ExportTarget, build_target, export_onnx, match_detections
from maformer_mm.deploy.detectors import WholeDetector, postprocess_settings
from maformer_mm.deploy.ort_runner import OnnxDetector
from maformer_mm.deploy.targets import BackboneFeatures
from maformer_mm.deploy.verify import reference_detections, scene
from maformer_mm.models import MAFormer

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)


def _backbone() -> ExportTarget:
    model = MAFormer(arch='tiny', drop_path_rate=0.0).eval()
    return ExportTarget(BackboneFeatures(model), 'backbone', [f'stage{i}' for i in model.out_indices])


def _upernet() -> ExportTarget:
    return build_target(load_config(osp.join(ROOT, 'configs/upernet_maformer_t_512x512_160k_ade20k.py')))


def _whole_detector(config: str) -> Callable[[], ExportTarget]:
    def build() -> ExportTarget:
        cfg = load_config(config)
        cfg.model.test_cfg.rcnn.score_thr = 0.0  # random weights: every class scores about 1/81
        return build_target(cfg)

    return build


# case -> (model name, builder, (H, W))
CASES: Dict[str, Tuple[str, Callable[[], ExportTarget], Tuple[int, int]]] = {
    'backbone-224': ('MAFormer-T backbone', _backbone, (224, 224)),
    'backbone-512': ('MAFormer-T backbone', _backbone, (512, 512)),
    'upernet-512': ('UperNet MAFormer-T (mode tensor)', _upernet, (512, 512)),
    'mask-rcnn-800': (
        'Mask R-CNN MAFormer-T (whole)',
        _whole_detector(osp.join(ROOT, 'configs/mask_rcnn_maformer_t.py')),
        (800, 1216),
    ),
    'swin-mask-rcnn-800': (
        "Mask R-CNN Swin-T, mmdet's (whole)",
        _whole_detector('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'),
        (800, 1216),
    ),
}


def cpu_name() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def ort_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')  # idle threads would slow PyTorch's turn
    return options


def ort_session(path: str, threads: int):
    import onnxruntime as ort

    return ort.InferenceSession(path, ort_options(threads), providers=['CPUExecutionProvider'])


def _export(name: str, target: ExportTarget, size: Tuple[int, int], workdir: str, exporter: str) -> Tuple[str, float]:
    """Exports `target` at `size` (fixed shape) into `workdir`; returns the file and the seconds it took."""
    path = osp.join(workdir, f'{name.replace(" ", "_").replace(",", "")}_{size[0]}x{size[1]}.onnx')
    start = time.perf_counter()
    export_onnx(target, path, size, exporter=exporter)
    return path, time.perf_counter() - start


def _take_turns(
    run_torch: Callable[[], Any], run_onnx: Callable[[], Any], repeats: int, compare: Callable[[Any, Any], dict]
) -> Tuple[float, float, dict]:
    """Runs PyTorch and ONNX Runtime in turn, `repeats` rounds after a warm-up round whose outputs `compare` (PyTorch's,
    ONNX Runtime's) measures; returns the median seconds of each and what `compare` found."""
    samples: Dict[str, List[float]] = {'torch': [], 'onnxruntime': []}
    found: dict = {}
    for round_ in range(repeats + 1):
        start = time.perf_counter()
        expected = run_torch()
        torch_s = time.perf_counter() - start
        start = time.perf_counter()
        got = run_onnx()
        ort_s = time.perf_counter() - start
        if round_:
            samples['torch'].append(torch_s)
            samples['onnxruntime'].append(ort_s)
        else:
            found = compare(expected, got)
    torch_s, ort_s = (statistics.median(samples[k]) for k in ('torch', 'onnxruntime'))
    return torch_s, ort_s, found


def _row(
    name: str,
    size: Tuple[int, int],
    path: str,
    export_s: float,
    timed: Tuple[float, float, dict],
    exporter: str,
    repeats: int,
) -> dict:
    torch_s, ort_s, found = timed
    return dict(
        model=name,
        size=list(size),
        export_s=export_s,
        torch_s=torch_s,
        onnxruntime_s=ort_s,
        speedup=torch_s / ort_s,
        **found,
        onnx_mib=os.path.getsize(path) / 2**20,
        threads=torch.get_num_threads(),
        exporter=exporter,
        repeats=repeats,
        cpu=cpu_name(),
    )


def measure(
    name: str, target: ExportTarget, size: Tuple[int, int], repeats: int, workdir: str, exporter: str = 'dynamo'
) -> dict:
    """Exports `target` at `size` and times PyTorch and ONNX Runtime on one input, taking turns."""
    if isinstance(target.module, WholeDetector):
        return measure_detector(name, target, size, repeats, workdir, exporter)
    path, export_s = _export(name, target, size, workdir, exporter)
    session = ort_session(path, torch.get_num_threads())
    images = torch.randn(1, target.in_channels, *size)
    feed = {session.get_inputs()[0].name: images.numpy()}

    def compare(expected, got) -> dict:
        diffs = (float(np.abs(g - e.numpy()).max() / np.abs(e.numpy()).max()) for g, e in zip(got, expected))
        return dict(max_rel_diff=max(diffs))

    with torch.no_grad():
        timed = _take_turns(lambda: target.module(images), lambda: session.run(None, feed), repeats, compare)
    return _row(name, size, path, export_s, timed, exporter, repeats)


def measure_detector(
    name: str, target: ExportTarget, size: Tuple[int, int], repeats: int, workdir: str, exporter: str = 'dynamo'
) -> dict:
    """Exports a whole detector at `size`; times mmdet's `predict` and ONNX Runtime (graph and mask paste) on one
    generated scene, taking turns; matches their detections box by box."""
    path, export_s = _export(name, target, size, workdir, exporter)
    detector = OnnxDetector(path, options=ort_options(torch.get_num_threads()))
    model = target.module.model
    settings = postprocess_settings(model)
    feed, _ = detector.preprocess(scene(np.random.default_rng(0), *size), resize=False)

    def run_onnx() -> Dict[str, np.ndarray]:
        return detector.detect(feed, *size)

    def run_torch() -> Dict[str, np.ndarray]:
        return reference_detections(model, feed['images'], feed['img_shape'], feed['scale_factor'], size)

    def compare(expected, got) -> dict:
        match = match_detections(got, expected, settings, size)
        return dict(
            detections=list(match.counts),
            matched=match.matched,
            exempt=sum(match.exempt.values()),
            failures=len(match.failures),
            max_score_diff=match.max_score_diff,
            min_box_iou=match.min_box_iou,
            min_mask_iou=match.min_mask_iou,
        )

    timed = _take_turns(run_torch, run_onnx, repeats, compare)
    return _row(name, size, path, export_s, timed, exporter, repeats)


def _setting(rows: List[dict], repeats: int) -> str:
    """The machine and settings of some rows (each row records its own; rows of earlier runs may differ)."""

    def values(key: str, default) -> str:
        return ' or '.join(str(v) for v in sorted({str(r.get(key, default)) for r in rows})) or str(default)

    return (
        f'CPU: {values("cpu", cpu_name())}, threads for both: {values("threads", torch.get_num_threads())}; '
        f'torch {torch.__version__}, onnxruntime {__import__("onnxruntime").__version__}. Batch 1, random weights, '
        f'fixed-shape export ({values("exporter", "dynamo")} exporter, opset 18). Median of '
        f'{values("repeats", repeats)} interleaved runs after a warm-up; speed-up = PyTorch time / ONNX Runtime time'
    )


def markdown(rows: List[dict], repeats: int) -> str:
    detectors = [r for r in rows if 'matched' in r]
    rows = [r for r in rows if 'matched' not in r]
    lines = [
        '# ONNX Runtime against PyTorch eager (CPU)',
        '',
        _setting(rows, repeats) + '; difference = largest |ONNX - PyTorch| over the largest |PyTorch| output.',
        '',
        '| model | input | PyTorch (s) | ONNX Runtime (s) | speed-up | max difference / scale | '
        'export (s) | file (MiB) |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        lines.append(
            f'| {r["model"]} | {r["size"][0]}x{r["size"][1]} | {r["torch_s"]:.3f} | '
            f'{r["onnxruntime_s"]:.3f} | {r["speedup"]:.2f} | {r["max_rel_diff"]:.1e} | '
            f'{r["export_s"]:.0f} | {r["onnx_mib"]:.0f} |'
        )
    if detectors:
        lines += [
            '',
            "Whole detectors on a generated scene (random weights, `score_thr=0`): PyTorch is mmdet's `predict`, masks "
            "pasted; ONNX Runtime the exported graph and the runner's mask paste. Detections: ONNX / PyTorch; matched "
            'box by box (same label, IoU >= 0.99, score within 1e-3, masks IoU >= 0.98), the others exempt '
            '(thresholds, NMS ties) or failed. ' + _setting(detectors, repeats) + '.',
            '',
            '| model | input | runs | PyTorch (s) | ONNX Runtime (s) | speed-up | detections | matched / exempt / '
            'failed | largest score difference | smallest box IoU | smallest mask IoU | export (s) | file (MiB) |',
            '|---|---|---|---|---|---|---|---|---|---|---|---|---|',
        ]
        for r in detectors:
            lines.append(
                f'| {r["model"]} | {r["size"][0]}x{r["size"][1]} | {r["repeats"]} | {r["torch_s"]:.3f} | '
                f'{r["onnxruntime_s"]:.3f} | '
                f'{r["speedup"]:.2f} | {r["detections"][0]} / {r["detections"][1]} | {r["matched"]} / {r["exempt"]} / '
                f'{r["failures"]} | {r["max_score_diff"]:.1e} | {r["min_box_iou"]:.5f} | {r["min_mask_iou"]:.4f} | '
                f'{r["export_s"]:.0f} | {r["onnx_mib"]:.0f} |'
            )
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', nargs='+', choices=list(CASES), default=list(CASES))
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--exporter', choices=['dynamo', 'legacy'], default='dynamo')
    parser.add_argument('--threads', type=int, help="threads for both (default: PyTorch's default)")
    parser.add_argument('--out', default=osp.join(HERE, 'onnx_benchmark.md'))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    json_path = osp.splitext(args.out)[0] + '_cpu.json'
    rows = []
    if osp.exists(json_path):  # earlier runs' rows, replaced below by those of the cases run now
        with open(json_path) as f:
            rows = json.load(f)
    with tempfile.TemporaryDirectory() as workdir:
        for case in args.cases:
            name, build, size = CASES[case]
            row = measure(name, build(), size, args.repeats, workdir, args.exporter)
            rows = [r for r in rows if (r['model'], r['size']) != (row['model'], row['size'])] + [row]
            print(markdown(rows, args.repeats), flush=True)
            with open(args.out, 'w') as f:
                f.write(markdown(rows, args.repeats))
            with open(json_path, 'w') as f:
                json.dump(rows, f, indent=1)


if __name__ == '__main__':
    main()
