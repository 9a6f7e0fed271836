"""`make demo-seg`: semantic segmentation end to end on generated data, on CPU, in minutes.

1. writes a small ADE20K-layout shapes set, 400 + 16 images at 80 px, one hue band per class
   (tools/make_demo_data.py ade --class-hues),
2. trains UperNet MAFormer-T on it from scratch (configs/upernet_maformer_t_demo.py),
3. evaluates per-class IoU and mIoU on its validation split and writes one label-map PNG per image
   (tools/test.py --out DIR),
4. draws colourised predictions on a few validation images (tools/infer.py),
5. draws every validation image's ground truth beside its prediction (WORK_DIR/pictures/), and the training
   curve, loss and mIoU against iterations (WORK_DIR/curve.png).

    python tools/demo_seg.py [--work-dir DIR] [--data-root DIR] [--device cpu]
                             [--num-train 400] [--num-val 16] [--image-size 80] [--iters 300]
"""

import argparse
import os.path as osp
import time
from typing import Optional, Sequence

from maformer_mm.tools.demo import (
    CONFIG_DIR,
    WEIGHTS_ONLY,
    DemoDefaults,
    DemoResult,
    check_sizes,
    demo_arg_parser,
    prepare_data,
    resize_options,
    summary,
    train_test_draw,
)
from maformer_mm.visualization.pictures import segmentation_pictures

__all__ = ['main']

CONFIG = str(CONFIG_DIR / 'upernet_maformer_t_demo.py')
DEFAULTS = DemoDefaults('work_dirs/upernet_maformer_t_demo', 'data/demo_ade', 400, 16, 80)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = demo_arg_parser(__doc__, DEFAULTS)
    parser.add_argument('--iters', type=int, default=300, help='training iterations (batches of 8 crops)')
    return check_sizes(parser, parser.parse_args(argv), 'iters')


def main(argv: Optional[Sequence[str]] = None) -> DemoResult:
    start = time.time()
    args = parse_args(argv)
    options = prepare_data(args, DEFAULTS, 'ade', class_hues=True)
    options += resize_options(CONFIG, args.image_size)
    options += [f'train_cfg.max_iters={args.iters}', f'default_hooks.checkpoint.interval={args.iters}', *WEIGHTS_ONLY]
    # the schedule follows the length: warm-up over the first 10% (at most 30 iterations), then poly decay
    warmup = min(30, max(1, args.iters // 10))
    options += [
        f'param_scheduler.0.end={warmup}',
        f'param_scheduler.1.begin={warmup}',
        f'param_scheduler.1.end={max(args.iters, warmup + 1)}',
    ]  # (one iteration: warm-up only)
    options += [f'train_cfg.val_interval={max(1, args.iters // 3)}']  # three points on the curve
    label_maps = osp.join(args.work_dir, 'label_maps')
    ground_truth = osp.join(args.data_root, 'annotations', 'validation')
    result = train_test_draw(
        CONFIG,
        args,
        options,
        osp.join(args.data_root, 'images', 'validation', '*.jpg'),
        lambda cfg, ckpt, images, out: segmentation_pictures(cfg, ckpt, images, ground_truth, out, str(args.device)),
        test_args=['--out', label_maps],
    )
    summary(result, args.work_dir, ('aAcc', 'mIoU', 'mAcc'), 2)
    print(f'label maps of the validation images: {label_maps}')
    print(f'wall time: {time.time() - start:.0f} s')
    return result


if __name__ == '__main__':
    main()
