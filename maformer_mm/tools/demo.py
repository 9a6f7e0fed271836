"""`make demo`: the main job end to end on generated data, on CPU, in minutes.

1. writes a small COCO-format instance segmentation set (tools/make_demo_data.py coco),
2. trains Mask R-CNN MAFormer-T on it from scratch (configs/mask_rcnn_maformer_t_demo.py), validating four times,
3. evaluates COCO bbox and segm mAP on its validation split (tools/test.py),
4. draws predictions on a few validation images and saves them as JSON (tools/infer.py),
5. draws every validation image's ground truth beside its prediction (WORK_DIR/pictures/), and the training
   curve, loss and bbox mAP against iterations (WORK_DIR/curve.png).

    python tools/demo.py [--work-dir DIR] [--data-root DIR] [--device cpu]
                         [--num-train 64] [--num-val 16] [--image-size 160] [--epochs 12] [--seed 0]
"""

import argparse
import glob
import json
import os.path as osp
import shutil
import tempfile
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
from mmengine.config import Config

from maformer_mm.apis.inference import infer
from maformer_mm.config.zoo import config_dir
from maformer_mm.datasets.synthetic import ShapesSet
from maformer_mm.tools import test as test_tool
from maformer_mm.tools import train as train_tool
from maformer_mm.tools.cli import add_device_argument
from maformer_mm.visualization.curves import plot_curve, read_curve
from maformer_mm.visualization.pictures import detection_pictures

__all__ = [
    'DemoDefaults',
    'DemoResult',
    'demo_arg_parser',
    'reproducible',
    'prepare_data',
    'resize_options',
    'train_test_draw',
    'summary',
    'main',
]

CONFIG_DIR = config_dir()
CONFIG = str(CONFIG_DIR / 'mask_rcnn_maformer_t_demo.py')
MARKER = 'demo_data.json'  # the generator settings a demo set was written with
RESIZE_TYPES = ('Resize', 'RandomResize')  # the pipeline steps whose scale --image-size sets
# The demos never resume: their checkpoint keeps the weights (and meta data) only, a third of the size.
WEIGHTS_ONLY = ['default_hooks.checkpoint.save_optimizer=False', 'default_hooks.checkpoint.save_param_scheduler=False']


class DemoResult(NamedTuple):
    checkpoint: str
    metrics: Dict[str, float]
    vis: List[str]  # validation images drawn by tools/infer.py
    preds: List[str]  # their prediction files
    pictures: List[str]  # every validation image, ground truth beside prediction
    curve: str  # the training curve (PNG)


class DemoDefaults(NamedTuple):
    """Where a demo works and keeps its data set by default, and the set's size."""

    work_dir: str
    data_root: str
    num_train: int
    num_val: int
    image_size: int


DEFAULTS = DemoDefaults('work_dirs/mask_rcnn_maformer_t_demo', 'data/demo_coco', 64, 16, 160)


def demo_arg_parser(description: str, defaults: DemoDefaults) -> argparse.ArgumentParser:
    """The arguments both demos take (tools/demo.py, tools/demo_seg.py); each adds its schedule length."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default=defaults.work_dir)
    parser.add_argument('--data-root', default=defaults.data_root, help='generated here when missing')
    parser.add_argument('--num-train', type=int, default=defaults.num_train, help='training images to generate')
    parser.add_argument('--num-val', type=int, default=defaults.num_val, help='validation images to generate')
    parser.add_argument('--image-size', type=int, default=defaults.image_size, help='side of the square images')
    parser.add_argument(
        '--num-vis',
        type=int,
        default=4,
        help='validation images that tools/infer.py draws and writes predictions of (the demo draws '
        'every validation image beside its ground truth besides)',
    )
    parser.add_argument(
        '--seed',
        type=int,
        default=0,
        help='random seed of the training run (the same seed gives the same numbers on the CPU: its kernels are '
        'made deterministic there)',
    )
    add_device_argument(parser)
    return parser


def reproducible(seed: int, device: Any) -> List[str]:
    """`--cfg-options` that seed a run, with torch's deterministic kernels on the CPU; not on CUDA, where torch's
    deterministic mode needs `CUBLAS_WORKSPACE_CONFIG` set before CUDA starts."""
    return [f'randomness.seed={seed}'] + (['randomness.deterministic=True'] if str(device).startswith('cpu') else [])


def check_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace, schedule: str) -> argparse.Namespace:
    for name in ('num_train', 'num_val', 'image_size', schedule):
        if getattr(args, name) < 1:
            parser.error(f'--{name.replace("_", "-")} must be at least 1, got {getattr(args, name)}')
    if args.image_size < 32:
        parser.error(f'--image-size must be at least 32 (the network stride), got {args.image_size}')
    return args


def prepare_data(args: argparse.Namespace, defaults: DemoDefaults, layout: str, class_hues: bool = False) -> List[str]:
    """Writes the demo's shapes set in `layout` ('coco' or 'ade') under `--data-root`, unless that folder already
    holds one made with the same settings, and returns the `--cfg-options` that point the config's data loaders at
    it. A set made with other settings is never overwritten: that is an error naming both. (A set without the
    settings file, written by an earlier version of the demo, is taken to have the default settings.)"""

    def settings(num_train: int, num_val: int, size: int) -> dict:
        written = dict(layout=layout, train=num_train, val=num_val, size=[size, size])
        return {**written, 'class_hues': True} if class_hues else written

    wanted = settings(args.num_train, args.num_val, args.image_size)
    marker = osp.join(args.data_root, MARKER)
    if osp.isfile(marker):
        with open(marker) as f:
            found = json.load(f)
    elif osp.exists(osp.join(args.data_root, 'annotations' if layout == 'coco' else 'annotations/validation')):
        found = settings(defaults.num_train, defaults.num_val, defaults.image_size)
    else:
        shapes = ShapesSet(args.num_train, args.num_val, (args.image_size, args.image_size), class_hues=class_hues)
        if layout == 'coco':
            shapes.write_coco(args.data_root)
        else:
            shapes.write_ade(args.data_root)
        with open(marker, 'w') as f:
            json.dump(wanted, f)
        found = wanted
    if found != wanted:
        raise ValueError(
            f'{args.data_root} holds a demo set generated with {found}, not {wanted}: pass another '
            '--data-root, or delete that folder'
        )
    root = args.data_root.rstrip('/') + '/'
    return [f'{split}_dataloader.dataset.data_root={root}' for split in ('train', 'val', 'test')]


def resize_options(config: str, size: int) -> List[str]:
    """`--cfg-options` that set the scale of the Resize steps (by type) of `config`'s train and test pipelines to
    `size` x `size`. mmengine reaches list items by index only, so the indices are looked up here."""
    cfg = Config.fromfile(config)
    options = []
    for split in ('train', 'test'):
        pipeline = cfg[f'{split}_dataloader'].dataset.pipeline
        steps = [i for i, step in enumerate(pipeline) if step.get('type') in RESIZE_TYPES]
        if not steps:
            raise ValueError(f'{config}: {split}_dataloader.dataset.pipeline has no {" or ".join(RESIZE_TYPES)} step')
        options += [f'{split}_dataloader.dataset.pipeline.{i}.scale=({size},{size})' for i in steps]
    return options


def train_test_draw(
    config: str,
    args: argparse.Namespace,
    options: List[str],
    val_images: str,
    draw: Callable[[Config, str, List[str], str], List[str]],
    test_args: Sequence[str] = (),
) -> DemoResult:
    """Trains `config` with the `--cfg-options` `options` (validating as they say), evaluates the final
    checkpoint with tools/test.py (given `test_args` too), writes predictions of the first `args.num_vis` images
    matching the `val_images` pattern with tools/infer.py, draws every such image beside its prediction with
    `draw(config, checkpoint, images, out_dir)`, and draws the training curve."""
    device = ['--device', str(args.device)]
    options = [*options, *reproducible(args.seed, args.device)]
    deterministic = torch.are_deterministic_algorithms_enabled()  # mmengine turns it on for the process
    try:
        runner = train_tool.main([config, '--work-dir', args.work_dir, *device, '--cfg-options', *options])
        with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
            checkpoint = f.read().strip()
        metrics = test_tool.main(
            [config, checkpoint, '--work-dir', args.work_dir, *device, *test_args, '--cfg-options', *options]
        )
    finally:
        torch.use_deterministic_algorithms(deterministic)
    images = sorted(glob.glob(val_images))
    out_dir = osp.join(args.work_dir, 'predictions')
    with tempfile.TemporaryDirectory() as folder:
        for path in images[: args.num_vis]:
            shutil.copy(path, folder)
        # the training run's config: the demo's options (image size...) reach the inferencer's pipeline too
        written = infer(folder, runner.cfg, checkpoint, out_dir, device=args.device, batch_size=min(args.num_vis, 4))
    pictures = draw(runner.cfg, checkpoint, images, osp.join(args.work_dir, 'pictures'))
    curve = plot_curve(read_curve(args.work_dir), osp.join(args.work_dir, 'curve.png'), osp.basename(config))
    return DemoResult(checkpoint, metrics, written.vis, written.preds, pictures, curve)


def summary(result: DemoResult, work_dir: str, metrics: Sequence[str], digits: int) -> None:
    """Prints what a demo measured and wrote."""
    print('\n=== demo summary ===')
    print(f'checkpoint: {result.checkpoint}')
    for key in metrics:
        print(f'{key}: {result.metrics[key]:.{digits}f}')
    print(
        f'ground truth beside prediction, every validation image: {osp.join(work_dir, "pictures")} '
        f'({len(result.pictures)} files)'
    )
    print(f'training curve: {result.curve}')
    print(
        f'tools/infer.py output: {osp.join(work_dir, "predictions")} ({len(result.vis)} drawn, '
        f'{len(result.preds)} prediction files)'
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = demo_arg_parser(__doc__, DEFAULTS)
    parser.add_argument('--epochs', type=int, default=12, help='training epochs')
    return check_sizes(parser, parser.parse_args(argv), 'epochs')


def main(argv: Optional[Sequence[str]] = None) -> DemoResult:
    args = parse_args(argv)
    options = prepare_data(args, DEFAULTS, 'coco')
    ann_file = osp.join(args.data_root, 'annotations', 'instances_val.json')
    options += [f'{split}_evaluator.ann_file={ann_file}' for split in ('val', 'test')]
    options += resize_options(CONFIG, args.image_size)
    options += [
        f'train_cfg.max_epochs={args.epochs}',
        f'default_hooks.checkpoint.interval={args.epochs}',
        *WEIGHTS_ONLY,
    ]
    # the schedule follows the length: lr x0.1 after 75% and 92% of the epochs (9 and 11 of 12)
    milestones = [max(1, args.epochs * 9 // 12), max(1, args.epochs * 11 // 12)]
    options += [f'param_scheduler.1.end={args.epochs}', f'param_scheduler.1.milestones={milestones}'.replace(' ', '')]
    options.append(f'train_cfg.val_interval={max(1, args.epochs // 4)}')  # four points on the curve
    result = train_test_draw(
        CONFIG,
        args,
        options,
        osp.join(args.data_root, 'val', '*.png'),
        lambda cfg, ckpt, images, out: detection_pictures(cfg, ckpt, images, ann_file, out, str(args.device)),
    )
    summary(result, args.work_dir, ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'), 3)
    return result


if __name__ == '__main__':
    main()
