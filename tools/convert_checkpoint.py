"""Converts a MAFormer checkpoint saved with timm conventions into this project's form.

    python tools/convert_checkpoint.py SRC DST [--ema] [--keep-head] [--trust]

Writes `{'state_dict': {'backbone.' + key: tensor}}` (with `--keep-head` also mmpretrain's `head.fc.*`), which
`init_cfg=dict(type='Pretrained', checkpoint=DST)` of the detection/segmentation backbones and mmpretrain's
`load_from` / tools/test.py read. The key mapping is documented in maformer_mm/utils/convert.py.
"""
import argparse
import os
import os.path as osp
import pickle
import sys
from typing import Optional, Sequence

import torch

from maformer_mm.utils.checkpoint import STATE_DICT_KEYS, backbone_state_dict
from maformer_mm.utils.convert import convert_timm, convert_timm_head, dropped_timm_keys


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Convert a timm-style MAFormer checkpoint')
    parser.add_argument('src', help='checkpoint to convert (a state dict, or one under state_dict/model/...)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--ema', action='store_true',
                        help='take the EMA weights (state_dict_ema / model_ema) rather than the raw ones')
    parser.add_argument('--keep-head', action='store_true',
                        help="also write the classifier as mmpretrain's head.fc.* (for tools/test.py)")
    parser.add_argument('--trust', action='store_true',
                        help='load SRC with full unpickling (only for files from a trusted source: timm stores '
                             'its argparse arguments, which the safe loader refuses)')
    return parser.parse_args(argv)


def load_source(path: str, ema: bool, trust: bool) -> dict:
    """The tensors of `path`, unwrapped from the trainer's checkpoint dict and DDP/compile prefixes."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=not trust)
    except pickle.UnpicklingError as error:
        raise SystemExit(f'{path} holds objects the safe loader refuses ({str(error).splitlines()[0]}); '
                         'if the file comes from a trusted source, run again with --trust') from error
    if ema:
        keys = [k for k in STATE_DICT_KEYS if 'ema' in k and isinstance(checkpoint.get(k), dict)]
        if not keys:
            raise SystemExit(f'--ema: {path} has no state_dict_ema / model_ema entry')
        checkpoint = checkpoint[keys[0]]
    return backbone_state_dict(checkpoint)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    source = load_source(args.src, args.ema, args.trust)
    try:
        converted = convert_timm(source)
    except ValueError as error:
        raise SystemExit(f'{args.src}: {error}') from error
    if not converted:
        raise SystemExit(f'no key of {args.src} is a timm-style MAFormer key (first keys: {list(source)[:5]})')
    state_dict = {'backbone.' + k: v for k, v in converted.items()}
    dropped = dropped_timm_keys(source)
    head = convert_timm_head(source) if args.keep_head else {}
    state_dict.update({'head.' + k: v for k, v in head.items()})
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state_dict}, args.dst)
    kept_head = [k for k in dropped if convert_timm_head({k: source[k]})] if head else []
    dropped = [k for k in dropped if k not in kept_head]
    print(f'mapped {len(converted)} of {len(source)} keys to the backbone'
          + (f', kept the head ({len(kept_head)} keys)' if kept_head else '')
          + f'; dropped {len(dropped)}: {dropped}')
    print(f'wrote {args.dst}')


if __name__ == '__main__':
    sys.exit(main())
