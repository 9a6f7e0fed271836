"""Whole-model cost of the dense configs: MAFormer-T with global or window attention against Swin-T.

Mask R-CNN at 1280x800 and UperNet at 2048x512 (each task's usual reporting size): params, FLOPs
(multiply-adds, attention counted) and the median inference latency (batch 1, mode='tensor', no grad)
of each model, the three models of a task taking turns in every round. Writes a Markdown table.

    python benchmarks/dense_cost.py                 # both tasks, CPU (and CUDA when present)
    python benchmarks/dense_cost.py --tasks det --repeats 2
"""
import argparse
import json
import os.path as osp
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from torch import nn

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
sys.path.insert(0, HERE)

import maformer_mm  # noqa: E402,F401
from backbone_benchmark import VITDET_T, benchmark_devices, hardware_name, write_report  # noqa: E402
from maformer_mm.utils.cli import config_path  # noqa: E402
from maformer_mm.utils.flops import complexity, tensor_forward  # noqa: E402

# task -> (scope, (H, W), {row name: (config, backbone overrides)})
TASKS = {
    'det': ('mmdet', (800, 1280), {
        'Mask R-CNN MAFormer-T (global)': (osp.join(ROOT, 'configs/mask_rcnn_maformer_t.py'), {}),
        'Mask R-CNN MAFormer-T (window)': (osp.join(ROOT, 'configs/mask_rcnn_maformer_t.py'), VITDET_T),
        'Mask R-CNN Swin-T': ('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py', {}),
    }),
    'seg': ('mmseg', (512, 2048), {
        'UperNet MAFormer-T (global)': (osp.join(ROOT, 'configs/upernet_maformer_t_512x512_160k_ade20k.py'), {}),
        'UperNet MAFormer-T (window)': (osp.join(ROOT, 'configs/upernet_maformer_t_512x512_160k_ade20k.py'),
                                        VITDET_T),
        'UperNet Swin-T': ('mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py', {}),
    }),
}


def build(config: str, scope: str, backbone: dict) -> nn.Module:
    """The config's model with random weights (no checkpoint is read) and the backbone overrides."""
    cfg = Config.fromfile(config_path(config))
    cfg.model.backbone.update(init_cfg=None, **backbone)
    cfg.model.pop('pretrained', None)
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    model.eval()
    return model


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


@torch.no_grad()
def measure(task: str, repeats: int, device: str) -> List[dict]:
    scope, hw, entries = TASKS[task]
    runs: Dict[str, Tuple[nn.Module, torch.Tensor]] = {}
    rows = {}
    for name, (config, backbone) in entries.items():
        model = build(config, scope, backbone)
        runnable, x = tensor_forward(model, scope, hw)
        flops, params = complexity(runnable, (x, ))
        rows[name] = dict(model=name, size=list(hw), params_m=sum(p.numel() for p in model.parameters()) / 1e6,
                          gflops=flops / 1e9)
        runs[name] = (runnable.to(device), x.to(device))
    samples: Dict[str, List[float]] = {n: [] for n in runs}
    for round_ in range(repeats + 1):  # the first round is a warm-up
        for name, (runnable, x) in runs.items():
            _sync(device)
            start = time.perf_counter()
            runnable(x)
            _sync(device)
            if round_:
                samples[name].append(time.perf_counter() - start)
    ref = [n for n in runs if 'Swin' in n][0]
    for name, row in rows.items():
        row['infer_s'] = statistics.median(samples[name])
        row['time_ratio'] = row['infer_s'] / statistics.median(samples[ref])
        row['flop_ratio'] = row['gflops'] / rows[ref]['gflops']
    return list(rows.values())


def markdown(rows: List[dict], device: str, hardware: str, repeats: int) -> str:
    lines = [f'# Dense-task cost ({device})', '', f'Hardware: {hardware}. Batch 1, inference in mode `tensor` '
             f'(backbone, neck and heads; no post-processing), median of {repeats} interleaved runs after a '
             'warm-up. Ratios are against the Swin-T model of the same task, measured in the same run. Window '
             f"mode: `vit_window_size={VITDET_T['vit_window_size']}`, "
             f"`vit_global_blocks={VITDET_T['vit_global_blocks']}`.", '',
             '| model | input (HxW) | params | GFLOPs | FLOPs ratio | inference (s) | time ratio |',
             '|---|---|---|---|---|---|---|']
    for r in rows:
        lines.append(f"| {r['model']} | {r['size'][0]}x{r['size'][1]} | {r['params_m']:.1f}M | {r['gflops']:.1f} | "
                     f"{r['flop_ratio']:.2f} | {r['infer_s']:.2f} | {r['time_ratio']:.2f} |")
    return '\n'.join(lines) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', nargs='+', choices=list(TASKS), default=list(TASKS))
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--out', default=osp.join(HERE, 'dense_cost.md'))
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    sections = []
    for device in benchmark_devices():
        rows = [row for task in args.tasks for row in measure(task, args.repeats, device)]
        sections.append(markdown(rows, device, hardware_name(device), args.repeats))
        with open(osp.splitext(args.out)[0] + f'_{device}.json', 'w') as f:
            json.dump(rows, f, indent=1)
    write_report(args.out, sections)


if __name__ == '__main__':
    main()
