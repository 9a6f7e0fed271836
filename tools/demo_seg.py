"""`make demo-seg`: semantic segmentation end to end on generated data, on CPU, in minutes.

1. writes a small ADE20K-layout shapes set, 400 + 16 images at 80 px, one hue band per class
   (tools/make_demo_data.py ade --class-hues),
2. trains UperNet MAFormer-T on it from scratch (configs/upernet_maformer_t_demo.py),
3. evaluates per-class IoU and mIoU on its validation split (tools/test.py),
4. draws colourised predictions on a few validation images (tools/infer.py).

    python tools/demo_seg.py [--work-dir work_dirs/upernet_maformer_t_demo] [--data-root data/demo_ade]
"""
import argparse
import os.path as osp
import sys
import time
from typing import Optional, Sequence

TOOLS = osp.dirname(osp.abspath(__file__))
sys.path.insert(0, TOOLS)
from demo import demo_arg_parser, load_tool, train_test_draw  # noqa: E402
CONFIG = osp.join(osp.dirname(TOOLS), 'configs', 'upernet_maformer_t_demo.py')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return demo_arg_parser(__doc__, 'work_dirs/upernet_maformer_t_demo', 'data/demo_ade').parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    start = time.time()
    if not osp.isdir(osp.join(args.data_root, 'annotations', 'validation')):
        load_tool('make_demo_data').main(['ade', '--out', args.data_root, '--train', '400', '--size', '80', '80',
                                          '--class-hues'])
    data_opts = ['--cfg-options'] + [f'{split}_dataloader.dataset.data_root={args.data_root}/'
                                     for split in ('train', 'val', 'test')]
    checkpoint, metrics, out_dir, drawn = train_test_draw(
        CONFIG, args, data_opts, osp.join(args.data_root, 'images', 'validation', '*.jpg'))
    print('\n=== demo-seg summary ===')
    print(f'checkpoint: {checkpoint}')
    for key in ('aAcc', 'mIoU', 'mAcc'):
        print(f'{key}: {metrics[key]:.2f}')
    print(f'prediction images: {osp.join(out_dir, "vis")} ({len(drawn)} files)')
    print(f'wall time: {time.time() - start:.0f} s')
    return metrics


if __name__ == '__main__':
    main()
