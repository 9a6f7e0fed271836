"""Whole-model cost of the dense configs: MAFormer-T against Swin-T under the same neck and heads.

Mask R-CNN at 1280x800 and UperNet at 2048x512 (each task's usual reporting size; MAFormer-T with global or window
attention), DINO (4 scales) at 1333x800 and Mask2Former (ADE20K) at 512x512 (their training sizes): params, FLOPs
(multiply-adds, attention counted) and the median inference latency (batch 1, mode='tensor', no grad) of each model,
the models of a task taking turns in every round. mmdet has no Swin-T DINO config: its DINO-4scale config with the
backbone and widths of mmdet's Swin-T configs stands in (SWIN_T_DINO). Writes a Markdown table; a run of some tasks
keeps the other tasks' rows of the last run.

    python -m benchmarks.dense_cost                 # every task, CPU (and CUDA when present)
    python -m benchmarks.dense_cost --tasks det --repeats 2
    python -m benchmarks.dense_cost --tasks dino mask2former
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
from maformer_mm.analysis.complexity import complexity, tensor_forward
from maformer_mm.config.zoo import load_config

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)

# task -> (scope, (H, W), {row name: config}); the window rows are the `_win` configs.
TASKS = {
    'det': (
        'mmdet',
        (800, 1280),
        {
            'Mask R-CNN MAFormer-T (global)': osp.join(ROOT, 'configs/mask_rcnn_maformer_t.py'),
            'Mask R-CNN MAFormer-T (window)': osp.join(ROOT, 'configs/mask_rcnn_maformer_t_win.py'),
            'Mask R-CNN Swin-T': 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py',
        },
    ),
    'seg': (
        'mmseg',
        (512, 2048),
        {
            'UperNet MAFormer-T (global)': osp.join(ROOT, 'configs/upernet_maformer_t_512x512_160k_ade20k.py'),
            'UperNet MAFormer-T (window)': osp.join(ROOT, 'configs/upernet_maformer_t_win_512x512_160k_ade20k.py'),
            'UperNet Swin-T': 'mmseg::swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
        },
    ),
    'dino': (
        'mmdet',
        (800, 1333),
        {
            'DINO-4scale MAFormer-T': osp.join(ROOT, 'configs/dino_4scale_maformer_t_12e.py'),
            'DINO-4scale Swin-T': 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',  # + SWIN_T_DINO
        },
    ),
    'mask2former': (
        'mmseg',
        (512, 512),
        {
            'Mask2Former MAFormer-T': osp.join(ROOT, 'configs/mask2former_maformer_t_512x512_160k_ade20k.py'),
            'Mask2Former Swin-T': 'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py',
        },
    ),
}
# Swin-T as mmdet's Swin-T configs build it. The Swin-T DINO: mmdet's R-50 4-scale config with this backbone,
# stages 2-4 into the ChannelMapper (as our 4-scale configs and the R-50 one take theirs).
SWIN_T = dict(
    type='SwinTransformer',
    embed_dims=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4,
    qkv_bias=True,
    qk_scale=None,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.2,
    patch_norm=True,
    with_cp=False,
    convert_weights=True,
    init_cfg=None,
)
SWIN_T_DINO = dict(backbone=dict(SWIN_T, _delete_=True, out_indices=(1, 2, 3)), neck=dict(in_channels=[192, 384, 768]))
# Which task a row of an earlier run belongs to (rows written before they carried their task).
TASK_OF_PREFIX = {'Mask R-CNN': 'det', 'UperNet': 'seg', 'DINO': 'dino', 'Mask2Former': 'mask2former'}


def build(config: str, scope: str) -> nn.Module:
    """The config's model in eval mode with random weights (no checkpoint is read)."""
    cfg = load_config(config)
    if config == TASKS['dino'][2]['DINO-4scale Swin-T']:
        cfg.merge_from_dict(dict(model=SWIN_T_DINO))
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
        flops, params = complexity(runnable, (x,))
        rows[name] = dict(task=task, model=name, size=list(hw), params_m=params / 1e6, gflops=flops / 1e9)
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
        row['repeats'] = repeats
    return list(rows.values())


def markdown(rows: List[dict], device: str, hardware: str, repeats: int) -> str:
    lines = [
        f'# Dense-task cost ({device})',
        '',
        f'Hardware: {hardware}. Batch 1, inference in mode `tensor` '
        '(backbone, neck and heads; no post-processing), median of the runs given per row, the models of a '
        'task interleaved after a warm-up. Ratios are against the Swin-T model of the same task, measured in '
        'the same run. Window mode: the `_win` configs (stage-3 windows of 14, blocks 6, 13 and 20 global). '
        "DINO's Swin-T: mmdet's DINO-4scale config with mmdet's Swin-T backbone (mmdet ships no Swin-T DINO).",
        '',
        '| model | input (HxW) | params | GFLOPs | FLOPs ratio | inference (s) | time ratio | runs |',
        '|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        lines.append(
            f'| {r["model"]} | {r["size"][0]}x{r["size"][1]} | {r["params_m"]:.1f}M | {r["gflops"]:.1f} | '
            f'{r["flop_ratio"]:.2f} | {r["infer_s"]:.2f} | {r["time_ratio"]:.2f} | '
            f'{r.get("repeats", repeats)} |'
        )
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
        json_path = osp.splitext(args.out)[0] + f'_{device}.json'
        rows = [r for r in _earlier_rows(json_path) if r['task'] not in args.tasks]
        rows += [row for task in args.tasks for row in measure(task, args.repeats, device)]
        rows.sort(key=lambda r: list(TASKS).index(r['task']))
        sections.append(markdown(rows, device, hardware_name(device), args.repeats))
        with open(json_path, 'w') as f:
            json.dump(rows, f, indent=1)
    write_report(args.out, sections)


def _earlier_rows(json_path: str) -> List[dict]:
    """The rows of the last run at `json_path`, each with its task."""
    if not osp.isfile(json_path):
        return []
    with open(json_path) as f:
        rows = json.load(f)
    for row in rows:
        row.setdefault('task', next(t for prefix, t in TASK_OF_PREFIX.items() if row['model'].startswith(prefix)))
        row.setdefault('repeats', 3)  # rows written before they carried it: that run's report says 3
    return rows


if __name__ == '__main__':
    main()
