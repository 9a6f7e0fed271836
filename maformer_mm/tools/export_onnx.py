"""Exports a MAFormer model to ONNX and checks it in ONNX Runtime.

    python tools/deploy/export_onnx.py CONFIG [CHECKPOINT] --shape H W --out FILE [--dynamic] [--verify]
                                       [--opset N] [--backbone-only] [--exporter dynamo|legacy]

What is exported depends on the config's default_scope: an mmpretrain classifier gives its logits, an
mmseg segmentor (mode 'tensor') its per-pixel logits at stride 4; an mmdet R-CNN (Faster, Mask, Cascade) or RetinaNet
exports whole, post-processing included (boxes, scores, labels, masks; maformer_mm/deploy/detectors.py), and
`--neck-only` gives its FPN maps instead; DINO and Mask2Former export to the outputs of their last decoder layer,
with the legacy exporter at a fixed size (maformer_mm/deploy/targets.py); `--backbone-only` exports the backbone's
maps for any config. The graph takes images normalised as the config's data preprocessor does (mean, std and
channel order are stored in the file's metadata). Without CHECKPOINT the randomly initialised model is exported.

`--dynamic` makes H and W dynamic: one file serves every input size (window padding and the GLD resize are
computed in the graph). `--verify` runs the file in ONNX Runtime on the CPU at the export size (and, with
`--dynamic`, at two other sizes), prints the largest absolute difference of every output, and exits with
an error when one exceeds 1e-4 of the output's scale; for a whole detector it matches the detections box by box
with those of the model's own `predict` on generated images (and on `--verify-images`), see docs/deploy.md.
"""

import argparse
import sys
from typing import List, Optional, Sequence, Tuple

from mmengine.config import DictAction

from maformer_mm.config.zoo import load_config
from maformer_mm.deploy import (
    EXPORTERS,
    OnnxVerificationError,
    build_target,
    default_exporter,
    dynamic_blockers,
    export_onnx,
    other_sizes,
    verify_detector,
    verify_onnx,
)
from maformer_mm.deploy.detectors import WholeDetector, postprocess_settings
from maformer_mm.deploy.ort_runner import list_images, read_image
from maformer_mm.tools.cli import parse_hw


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config', help="config file (or an installed package's config, e.g. mmdet::...)")
    parser.add_argument('checkpoint', nargs='?', help='checkpoint of the whole model; without it, random weights')
    parser.add_argument('--shape', type=int, nargs='+', required=True, help='input H W (one value: square)')
    parser.add_argument('--out', required=True, help='the ONNX file to write')
    parser.add_argument('--dynamic', action='store_true', help='H and W of the input become dynamic')
    parser.add_argument('--verify', action='store_true', help='compare ONNX Runtime with PyTorch on the CPU')
    parser.add_argument(
        '--verify-shapes',
        type=int,
        nargs='+',
        metavar='H W',
        help='with --dynamic: the other sizes --verify checks (pairs; default: two odd sizes)',
    )
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset version (default 18)')
    parser.add_argument(
        '--verify-images', help='a whole detector: also verify on the images of this folder (or this image)'
    )
    parser.add_argument('--backbone-only', action='store_true', help="export the backbone's feature maps")
    parser.add_argument('--neck-only', action='store_true', help="a detector: export the backbone and neck's maps")
    parser.add_argument(
        '--exporter',
        choices=EXPORTERS,
        help='torch.onnx exporter: dynamo (torch.export; the default) or legacy (TorchScript; the '
        'default for models with multi-scale deformable attention: DINO, Mask2Former)',
    )
    parser.add_argument('--rtol', type=float, default=1e-4, help="verify tolerance, relative to each output's scale")
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings')
    return parser.parse_args(argv)


def _pairs(values: Optional[List[int]]) -> Optional[List[Tuple[int, int]]]:
    if values is None:
        return None
    if len(values) % 2 or min(values) < 1:
        raise ValueError(f'--verify-shapes takes positive H W pairs, got {values}')
    return [(values[i], values[i + 1]) for i in range(0, len(values), 2)]


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    size, extra_sizes = parse_hw(args.shape), _pairs(args.verify_shapes)
    cfg = load_config(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    target = build_target(cfg, args.checkpoint, args.backbone_only, args.neck_only)
    dynamic = args.dynamic
    if dynamic:
        blockers = dynamic_blockers(target.module)
        if blockers:
            print(
                f'H and W cannot be dynamic for this model, so it is exported at the fixed size '
                f'{size[0]}x{size[1]}:\n  ' + '\n  '.join(blockers)
            )
            dynamic = False
    exporter = args.exporter or default_exporter(target.module)
    print(
        f'Exporting {target.kind} ({", ".join(target.output_names)}) of {args.config} '
        f'({"random weights" if not args.checkpoint else args.checkpoint}) at {size[0]}x{size[1]}'
        f'{", H and W dynamic" if dynamic else ""} with the {exporter} exporter, opset {args.opset}'
    )
    export_onnx(target, args.out, size, dynamic=dynamic, opset=args.opset, exporter=exporter)
    print(f'Wrote {args.out}')
    if args.verify:
        sizes = [size] + ((extra_sizes or other_sizes(size)) if dynamic else [])
        whole = isinstance(target.module, WholeDetector)
        try:
            if whole:
                images = [read_image(p) for p in list_images(args.verify_images)] if args.verify_images else []
                model = target.module.model
                verify_detector(args.out, model, postprocess_settings(model), sizes, images)
            else:
                verify_onnx(args.out, target.module, target.output_names, sizes, target.in_channels, rtol=args.rtol)
        except OnnxVerificationError as e:
            print(f'VERIFY FAILED: {e}', file=sys.stderr)
            raise SystemExit(1) from e
        if whole:
            print(
                f'Verified in ONNX Runtime (CPU) at {", ".join(f"{h}x{w}" for h, w in sizes)}'
                + (f' and on {len(images)} images' if images else '')
                + ': every detection matched box by box with PyTorch or exempt'
            )
        else:
            print(
                f'Verified in ONNX Runtime (CPU) at {", ".join(f"{h}x{w}" for h, w in sizes)}: every output '
                f'within {args.rtol:g} of its scale'
            )


if __name__ == '__main__':
    main()
