"""A short training comparison on generated data: MAFormer-T against Swin-T under the same DINO head (bbox mAP) and
the same Mask2Former head (semantic mIoU), same data, schedule and seed.

Both backbones start from random weights (no ImageNet weights can be read here), so this compares how fast each
learns from scratch on an easy task in a few hundred iterations, not the accuracy after pretraining. The data are
the generated shapes sets (`tools/make_demo_data.py coco|ade --class-hues`: 1-3 filled shapes of 3 classes per
image, each class with its own hue band) at 96x96. The models are the project's configs
(configs/dino_4scale_maformer_t_12e.py, configs/mask2former_maformer_t_512x512_160k_ade20k.py) with the backbone
swapped for mmdet's/mmseg's Swin-T in the Swin runs, and these changes for a CPU-sized run, the same for both
backbones: GLD reference grids at the image size (there are no pretrained weights to match), the head narrowed
(fewer queries, layers and sampled points, see HEAD), the backbone at the full lr (its 0.1x multiplier is for
pretrained weights), AdamW lr 2e-4 with a 30-iteration warm-up and x0.1 at 80 % of the run, batch 4, flip and a
resize to 96x96 as the only augmentations. Writes a Markdown table and JSON next to this file.

    nice -n 10 python -m benchmarks.query_heads_training                  # 300 iterations per run
    python -m benchmarks.query_heads_training --iters 20 --tasks dino --out /tmp/x.md
"""

import argparse
import json
import os.path as osp
import statistics
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

import maformer_mm  # noqa: F401
from benchmarks import dense_cost
from benchmarks.backbone_benchmark import hardware_name
from maformer_mm.datasets.synthetic import CLASSES, ShapesSet

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
SIZE = 96
PALETTE = [(220, 20, 60), (0, 128, 255), (60, 180, 75)]
CONFIGS = {
    'dino': osp.join(ROOT, 'configs', 'dino_4scale_maformer_t_12e.py'),
    'mask2former': osp.join(ROOT, 'configs', 'mask2former_maformer_t_512x512_160k_ade20k.py'),
}
# Swin-T as mmdet's and mmseg's Swin-T configs build it (mmseg's takes no convert_weights), drop path off for a
# short run, like MAFormer's here.
SWIN_T = {k: v for k, v in dense_cost.SWIN_T.items() if k != 'convert_weights'} | dict(drop_path_rate=0.0)
# What the two heads keep of their configs (the same for both backbones).
HEAD = {
    'dino': 'DINO as configured (256 channels, 4 levels, denoising) with 100 queries (of 900), 2 encoder and 2 '
    'decoder layers (of 6), 30 denoising queries (of 100), 100 detections per image',
    'mask2former': 'Mask2Former as configured (MSDeformAttn pixel decoder, masked attention) with 256 channels, 20 '
    'queries (of 100), 2 pixel-decoder layers (of 6), 3 decoder layers (of 9), 1024 sampled points '
    '(of 12544)',
}


def _schedule(cfg: Config, iters: int, work_dir: str, seed: int) -> None:
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters, val_interval=iters)
    cfg.param_scheduler = [
        dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
        dict(type='MultiStepLR', by_epoch=False, begin=0, end=iters, milestones=[int(0.8 * iters)], gamma=0.1),
    ]
    cfg.optim_wrapper.optimizer.lr = 2e-4
    cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone = dict(lr_mult=1.0, decay_mult=1.0)
    cfg.log_processor = dict(by_epoch=False, window_size=25)
    cfg.default_hooks.logger.interval = 25
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=iters, max_keep_ckpts=1)
    cfg.randomness = dict(seed=seed)
    cfg.work_dir = work_dir
    cfg.launcher = 'none'
    cfg.log_level = 'WARNING'


def _loader(cfg: Config, split: str, dataset: dict, pipeline: List[dict], batch_size: int) -> None:
    loader = cfg[f'{split}_dataloader']
    loader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    loader.dataset.update(dataset, pipeline=pipeline)


def dino_config(backbone: str, data: str, iters: int, work_dir: str, seed: int) -> Config:
    cfg = Config.fromfile(CONFIGS['dino'])
    model = cfg.model
    if backbone == 'Swin-T':
        model.backbone = dict(SWIN_T, out_indices=(1, 2, 3))
        model.neck.in_channels = [192, 384, 768]
    else:
        model.backbone.update(drop_path_rate=0.0, pretrain_img_size=SIZE, init_cfg=None)
    model.bbox_head.num_classes = len(CLASSES)
    model.num_queries = 100
    model.encoder.num_layers = 2
    model.decoder.num_layers = 2
    model.dn_cfg.group_cfg.num_dn_queries = 30
    model.test_cfg.max_per_img = 100
    metainfo = dict(classes=CLASSES, palette=PALETTE)
    train = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
        dict(type='PackDetInputs'),
    ]
    test = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
        dict(type='LoadAnnotations', with_bbox=True),
        dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
    ]
    for split, pipeline, batch in (('train', train, 4), ('val', test, 4)):
        _loader(
            cfg,
            split,
            dict(
                data_root=data,
                ann_file=f'annotations/instances_{split}.json',
                data_prefix=dict(img=f'{split}/'),
                metainfo=metainfo,
            ),
            pipeline,
            batch,
        )
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(
        type='CocoMetric', ann_file=osp.join(data, 'annotations', 'instances_val.json'), metric='bbox'
    )
    cfg.test_evaluator = cfg.val_evaluator
    _schedule(cfg, iters, work_dir, seed)
    return cfg


def mask2former_config(backbone: str, data: str, iters: int, work_dir: str, seed: int) -> Config:
    cfg = Config.fromfile(CONFIGS['mask2former'])
    model = cfg.model
    if backbone == 'Swin-T':
        model.backbone = dict(SWIN_T, out_indices=(0, 1, 2, 3))
        model.decode_head.in_channels = [96, 192, 384, 768]
    else:
        model.backbone.update(drop_path_rate=0.0, pretrain_img_size=SIZE, init_cfg=None)
    head = model.decode_head
    head.update(num_classes=len(CLASSES), num_queries=20)
    head.loss_cls.class_weight = [1.0] * len(CLASSES) + [0.1]
    head.pixel_decoder.encoder.num_layers = 2
    head.transformer_decoder.num_layers = 3
    head.train_cfg.num_points = 1024
    model.data_preprocessor.size = (SIZE, SIZE)
    cfg.data_preprocessor.size = (SIZE, SIZE)
    dataset = dict(
        type='BaseSegDataset',
        data_root=data,
        metainfo=dict(classes=CLASSES, palette=PALETTE),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=True,
    )
    train = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='RandomFlip', prob=0.5),
        dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
        dict(type='PackSegInputs'),
    ]
    test = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(SIZE, SIZE), keep_ratio=True),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs'),
    ]
    for split, folder, pipeline, batch in (('train', 'training', train, 4), ('val', 'validation', test, 1)):
        _loader(
            cfg,
            split,
            dict(dataset, data_prefix=dict(img_path=f'images/{folder}', seg_map_path=f'annotations/{folder}')),
            pipeline,
            batch,
        )
    cfg.test_dataloader = cfg.val_dataloader
    _schedule(cfg, iters, work_dir, seed)
    return cfg


class _Recorder(Hook):
    """Iteration times and losses of a run, and its evaluation metrics."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.times: List[float] = []
        self.losses: List[float] = []
        self.metrics: Dict[str, float] = {}
        self._start = 0.0

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.times.append(time.perf_counter() - self._start)
        self.losses.append(float(outputs['loss'].detach()))

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self.metrics = {k: float(v) for k, v in (metrics or {}).items()}


def train(cfg: Config) -> _Recorder:
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    recorder = _Recorder()
    runner.register_hook(recorder)
    runner.train()
    return recorder


METRIC = {'dino': ('coco/bbox_mAP', 'bbox mAP'), 'mask2former': ('mIoU', 'mIoU')}


def run_task(task: str, data: str, iters: int, seed: int, work_root: str) -> List[dict]:
    builder = dino_config if task == 'dino' else mask2former_config
    key, _ = METRIC[task]
    rows = []
    for backbone in ('MAFormer-T', 'Swin-T'):
        cfg = builder(backbone, data, iters, osp.join(work_root, f'{task}_{backbone}'), seed)
        start = time.perf_counter()
        record = train(cfg)
        tail = record.losses[-25:]
        rows.append(
            dict(
                task=task,
                backbone=backbone,
                iters=iters,
                seed=seed,
                metric=key,
                value=record.metrics.get(key),
                metrics=record.metrics,
                first_loss=statistics.mean(record.losses[:25]),
                last_loss=statistics.mean(tail),
                median_iter_s=statistics.median(record.times),
                total_s=time.perf_counter() - start,
            )
        )
        print(
            f'{task} {backbone}: {key} = {rows[-1]["value"]}, loss {rows[-1]["first_loss"]:.2f} -> '
            f'{rows[-1]["last_loss"]:.2f}, {rows[-1]["median_iter_s"]:.2f} s/iter',
            flush=True,
        )
    return rows


def markdown(rows: List[dict], hardware: str, num_train: int, num_val: int) -> str:
    lines = [
        '# Short training comparison on generated data (CPU)',
        '',
        f'Hardware: {hardware}. {num_train} training and {num_val} validation images of {SIZE}x{SIZE} '
        '(generated shapes, 3 classes, one hue band per class), both backbones from random weights, batch 4, '
        'the same head, data, schedule and seed. See the module docstring of '
        '`benchmarks/query_heads_training.py` for every change from the configs.',
        '',
    ]
    for task in ('dino', 'mask2former'):
        task_rows = [r for r in rows if r['task'] == task]
        if not task_rows:
            continue
        _, label = METRIC[task]
        lines += [
            f'## {"DINO (bbox mAP)" if task == "dino" else "Mask2Former semantic (mIoU)"}',
            '',
            f'Head: {HEAD[task]}.',
            '',
            f'| backbone | iterations | {label} | mean loss, first 25 it. | mean loss, last 25 it. | s / iteration |',
            '|---|---|---|---|---|---|',
        ]
        for r in task_rows:
            value = (
                'n/a' if r['value'] is None else (f'{100 * r["value"]:.1f}' if task == 'dino' else f'{r["value"]:.2f}')
            )
            lines.append(
                f'| {r["backbone"]} | {r["iters"]} | {value} | {r["first_loss"]:.2f} | '
                f'{r["last_loss"]:.2f} | {r["median_iter_s"]:.2f} |'
            )
        lines.append('')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--tasks', nargs='+', choices=['dino', 'mask2former'], default=['dino', 'mask2former'])
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--train-images', type=int, default=64)
    parser.add_argument('--val-images', type=int, default=16)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=osp.join(HERE, 'query_heads_training.md'))
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    json_path = osp.splitext(args.out)[0] + '.json'
    rows: List[dict] = []
    if osp.isfile(json_path):  # tasks run before keep their rows
        with open(json_path) as f:
            rows = [r for r in json.load(f) if r['task'] not in args.tasks]
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            data = osp.join(tmp, f'data_{task}')
            shapes = ShapesSet(args.train_images, args.val_images, (SIZE, SIZE), seed=args.seed, class_hues=True)
            if task == 'dino':
                shapes.write_coco(data)
            else:
                shapes.write_ade(data)
            rows += run_task(task, data, args.iters, args.seed, osp.join(tmp, 'work'))
            rows.sort(key=lambda r: r['task'] != 'dino')
            with open(json_path, 'w') as f:
                json.dump(rows, f, indent=1)
            with open(args.out, 'w') as f:
                f.write(markdown(rows, hardware_name('cpu'), args.train_images, args.val_images))


if __name__ == '__main__':
    main()
