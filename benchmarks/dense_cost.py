"""Whole-model cost of the dense configs: MAFormer-T with global or window attention against Swin-T.

Mask R-CNN at 1280x800 and UperNet at 2048x512 (each task's usual reporting size): params, FLOPs
(multiply-adds, attention counted) and the median inference latency (batch 1, mode='tensor', no grad)
of each model, the three models of a task taking turns in every round. Writes a Markdown table.

    python -m benchmarks.dense_cost                 # both tasks, CPU (and CUDA when present)
    python -m benchmarks.dense_cost --tasks det --repeats 2
"""
import argparse
import json
import os.path as osp
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.registry import MODELS, init_default_scope
from torch import nn

import maformer_mm  # noqa: F401
from benchmarks.backbone_benchmark import benchmark_devices, hardware_name, infer_step, timed, write_report
from maformer_mm.tools.cli import load_config
from maformer_mm.utils.flops import complexity, tensor_forward

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)

# task -> (scope, (H, W), {row name: config}); the window rows are the `_win` configs.
TASKS = {
    'det': ('mmdet', (800, 1280), {
        'Mask R-CNN MAFormer-T (global)': osp.join(ROOT, 'configs/mask_rcnn_maformer_t.py'),
        'Mask R-CNN MAFormer-T (window)': osp.join(ROOT, 'configs/mask_rcnn_maformer_t_win.py'),
        'Mask R-CNN Swin-T': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
    }),
    'seg': ('mmseg', (512, 2048), {
        'UperNet MAFormer-T (global)': osp.join(ROOT, 'configs/upernet_maformer_t_512x512_160k_ade20k.py'),
        'UperNet MAFormer-T (window)': osp.join(ROOT, 'configs/upernet_maformer_t_win_512x512_160k_ade20k.py'),
        'UperNet Swin-T': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
    }),
}


def build(config: str, scope: str) -> nn.Module:
    """The config's model in eval mode with random weights (no checkpoint is read)."""
    cfg = load_config(config)
    cfg.model.backbone.init_cfg = None
    init_default_scope(scope)
    model = MODELS.build(cfg.model)
    model.eval()
    return model


def measure(task: str, repeats: int, device: str, hw: Optional[Tuple[int, int]] = None) -> List[dict]:
    """One row per model of `task` at `hw` (default: the task's reporting size)."""
    scope, default_hw, configs = TASKS[task]
    hw = hw or default_hw
    runs: Dict[str, Tuple[nn.Module, torch.Tensor]] = {}
    rows = {}
    for name, config in configs.items():
        runnable, x = tensor_forward(build(config, scope), scope, hw)
        flops, params = complexity(runnable, (x, ))
        rows[name] = dict(model=name, size=list(hw), params_m=params / 1e6, gflops=flops / 1e9)
        runs[name] = (runnable.to(device), x.to(device))
    samples: Dict[str, List[float]] = {n: [] for n in runs}
    for round_ in range(repeats + 1):  # the first round is a warm-up
        for name, (runnable, x) in runs.items():
            seconds = timed(infer_step, runnable, x, device)
            if round_:
                samples[name].append(seconds)
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
             'mode: the `_win` configs (stage-3 windows of 14, blocks 6, 13 and 20 global).', '',
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
