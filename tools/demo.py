"""`make demo`: the main job end to end on generated data, on CPU, in minutes.

1. writes a small COCO-format instance segmentation set (tools/make_demo_data.py),
2. trains Mask R-CNN MAFormer-T on it from scratch (configs/mask_rcnn_maformer_t_demo.py),
3. evaluates COCO bbox and segm mAP on its validation split (tools/test.py),
4. draws predictions on a few validation images (tools/infer.py).

    python tools/demo.py [--work-dir work_dirs/demo] [--data-root data/demo_coco]
"""
import argparse
import glob
import importlib.util
import os.path as osp
import shutil
import tempfile
from types import ModuleType
from typing import List, Optional, Sequence, Tuple

TOOLS = osp.dirname(osp.abspath(__file__))
CONFIG = osp.join(osp.dirname(TOOLS), 'configs', 'mask_rcnn_maformer_t_demo.py')


def load_tool(name: str) -> ModuleType:
    """Imports tools/NAME.py by path (`test` would otherwise clash with Python's own package)."""
    spec = importlib.util.spec_from_file_location(f'maformer_mm_tools_{name}', osp.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def demo_arg_parser(description: str, work_dir: str, data_root: str) -> argparse.ArgumentParser:
    """The arguments both demos take (tools/demo.py, tools/demo_seg.py)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--work-dir', default=work_dir)
    parser.add_argument('--data-root', default=data_root, help='generated here when missing')
    parser.add_argument('--num-vis', type=int, default=4, help='validation images to draw predictions on')
    return parser


def train_test_draw(config: str, args: argparse.Namespace, data_opts: List[str],
                    val_images: str) -> Tuple[str, dict, str, list]:
    """Trains `config` (no in-training evaluation), evaluates the final checkpoint once with tools/test.py
    and draws predictions on the first `args.num_vis` images matching the `val_images` pattern.
    Returns (checkpoint, metrics, prediction dir, drawn files)."""
    train, test, infer = (load_tool(n) for n in ('train', 'test', 'infer'))
    train.main([config, '--work-dir', args.work_dir, *data_opts, 'val_cfg=None', 'val_dataloader=None',
                'val_evaluator=None'])
    with open(osp.join(args.work_dir, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    metrics = test.main([config, checkpoint, '--work-dir', args.work_dir, *data_opts])
    out_dir = osp.join(args.work_dir, 'predictions')
    with tempfile.TemporaryDirectory() as images:
        for path in sorted(glob.glob(val_images))[:args.num_vis]:
            shutil.copy(path, images)
        drawn = infer.infer(images, config, checkpoint, out_dir)
    return checkpoint, metrics, out_dir, drawn


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return demo_arg_parser(__doc__, 'work_dirs/mask_rcnn_maformer_t_demo', 'data/demo_coco').parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if not osp.isfile(osp.join(args.data_root, 'annotations', 'instances_val.json')):
        load_tool('make_demo_data').main(['coco', '--out', args.data_root, '--size', '160', '160'])
    data_opts = ['--cfg-options', f'train_dataloader.dataset.data_root={args.data_root}/',
                 f'val_dataloader.dataset.data_root={args.data_root}/',
                 f'test_dataloader.dataset.data_root={args.data_root}/',
                 f'val_evaluator.ann_file={args.data_root}/annotations/instances_val.json',
                 f'test_evaluator.ann_file={args.data_root}/annotations/instances_val.json']
    checkpoint, metrics, out_dir, drawn = train_test_draw(CONFIG, args, data_opts,
                                                          osp.join(args.data_root, 'val', '*.png'))
    print('\n=== demo summary ===')
    print(f'checkpoint: {checkpoint}')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        print(f'{key}: {metrics[key]:.3f}')
    print(f'prediction images: {osp.join(out_dir, "vis")} ({len(drawn)} files)')
    return metrics


if __name__ == '__main__':
    main()
