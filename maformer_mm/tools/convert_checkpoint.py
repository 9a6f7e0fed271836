"""Writes the weights of a MAFormer checkpoint in the form this project's loaders read.

    python tools/convert_checkpoint.py SRC DST [--ema] [--keep-head] [--safetensors] [--trust]

SRC in timm conventions is renamed to this project's keys (the mapping is documented in
maformer_mm/checkpoint/convert.py); SRC already in this project's naming (e.g. mmpretrain's epoch_300.pth from
configs/maformer_*_in1k.py) has its weights copied as they are. DST holds the backbone as `backbone.*` (with
`--keep-head` also mmpretrain's `head.fc.*`), which `init_cfg=dict(type='Pretrained', checkpoint=DST)` of the
detection/segmentation backbones and mmpretrain's `load_from` / tools/test.py read: a `.safetensors` file with
`--safetensors` (or a DST ending in .safetensors; the way to publish weights: the format holds tensors only),
else a torch file `{'state_dict': ...}`.

SRC is read as data: plain weights with the strictest setting (tensors and plain containers), an mmengine
training checkpoint as `--resume` reads it. `--trust` unpickles SRC fully, which runs any code it carries: only
for a file from a source you trust that holds other Python objects (timm's train.py saves its arguments).
"""

import argparse
import os
import os.path as osp
import sys
from typing import Dict, Mapping, Optional, Sequence

import torch

from maformer_mm.checkpoint.convert import publishable_weights
from maformer_mm.checkpoint.safe_load import UnsafeCheckpointError, load_mmengine_checkpoint, load_weights
from maformer_mm.checkpoint.state_dict import model_state_dict

__all__ = ['parse_args', 'read_source', 'load_source', 'write_weights', 'main']


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Write the weights of a MAFormer checkpoint for our loaders')
    parser.add_argument('src', help='checkpoint to convert (a state dict, or one under state_dict/model/...)')
    parser.add_argument('dst', help='where to write the weights (.safetensors: in that format)')
    parser.add_argument(
        '--ema', action='store_true', help='take the EMA weights (state_dict_ema / model_ema) rather than the raw ones'
    )
    parser.add_argument(
        '--keep-head',
        action='store_true',
        help="also write the classifier as mmpretrain's head.fc.* (for tools/test.py)",
    )
    parser.add_argument(
        '--safetensors',
        action='store_true',
        help='write DST as a .safetensors file (tensors only; the way to publish weights)',
    )
    parser.add_argument(
        '--trust',
        action='store_true',
        help='unpickle SRC fully, running any code it carries: only for a file from a source you '
        'trust that holds other Python objects (timm stores its argparse arguments)',
    )
    return parser.parse_args(argv)


def read_source(path: str, trust: bool) -> Mapping:
    """SRC as data, through the checkpoint package's readers (plain weights strictly, else an mmengine training
    checkpoint as --resume reads it), or fully unpickled with `trust`, after a warning: the one full unpickle of
    this package, which nothing else reaches."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if trust:
        print(
            f'WARNING: --trust: {path} is unpickled fully; any code it carries runs now. Use it only for a file '
            'from a source you trust.',
            file=sys.stderr,
        )
        return torch.load(path, map_location='cpu', weights_only=False)
    try:
        return load_weights(path)
    except UnsafeCheckpointError:
        pass
    try:
        checkpoint = load_mmengine_checkpoint(path, map_location='cpu')
    except UnsafeCheckpointError as error:
        raise SystemExit(str(error)) from None  # it says when --trust is the answer (timm's saved arguments)
    print(f'{path} is an mmengine training checkpoint: read as --resume reads it')
    return checkpoint


def load_source(path: str, ema: bool, trust: bool) -> Dict[str, torch.Tensor]:
    """The model tensors of `path` (the EMA ones with `ema`), unwrapped from the trainer's checkpoint dict."""
    checkpoint = read_source(path, trust)
    try:
        return model_state_dict(checkpoint, ema=ema)
    except KeyError as error:
        raise SystemExit(f'--ema: {path}: {error.args[0]}') from None


def write_weights(state_dict: Dict[str, torch.Tensor], dst: str, use_safetensors: bool) -> None:
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    if use_safetensors:
        from safetensors.torch import save_file

        # safetensors refuses tensors that share memory (views of one another): each gets its own copy.
        save_file({k: v.detach().clone().contiguous() for k, v in state_dict.items()}, dst, metadata={'format': 'pt'})
    else:
        torch.save({'state_dict': state_dict}, dst)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    use_safetensors = args.safetensors or args.dst.endswith('.safetensors')
    if use_safetensors and not args.dst.endswith('.safetensors'):
        raise SystemExit(f'--safetensors: {args.dst} must end in .safetensors (the loaders read by the extension)')
    try:
        weights, report = publishable_weights(load_source(args.src, args.ema, args.trust), args.keep_head, args.src)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    write_weights(weights, args.dst, use_safetensors)
    print(report)
    print(f'wrote {args.dst}' + (' (safetensors)' if use_safetensors else ''))


if __name__ == '__main__':
    sys.exit(main())
