"""Params and FLOPs of the DINO and Mask2Former configs at their training size, beside mmdet's and mmseg's Swin (and
R-50) configs of the same heads, with the results those packages publish for them.

Every model is counted here with `tools/get_flops.py`'s code (`config_complexity`: mode 'tensor', multiply-adds,
attention counted) at the size its recipe trains at: DINO 800x1333 (the largest multi-scale size), Mask2Former
COCO 1024x1024 (the large-scale-jittering crop), Mask2Former ADE20K 512x512 or 640x640 (the crop). The published
metrics are read from the installed metafiles (`mmdet/.mim/configs/*/metafile.yml`, `mmseg/.mim/configs/*/
metafile.yaml`); mmdet and mmseg publish no params or FLOPs for these heads. Writes a Markdown table and JSON.

    python -m benchmarks.query_heads_complexity                   # every row (about an hour on 2 CPU cores)
    python -m benchmarks.query_heads_complexity --groups dino --out /tmp/x.md
"""

import argparse
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import maformer_mm  # noqa: F401
from maformer_mm.analysis.complexity import config_complexity
from maformer_mm.config.zoo import load_config

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)


def _ours(name: str) -> str:
    return osp.join(ROOT, 'configs', name)


# group -> (title, (H, W) of training, [(row name, config)]); configs named 'mmdet::'/'mmseg::' are the packages'.
GROUPS: Dict[str, Tuple[str, Tuple[int, int], List[Tuple[str, str]]]] = {
    'dino': (
        'DINO, COCO detection (800x1333)',
        (800, 1333),
        [
            ('DINO-4scale MAFormer-T', _ours('dino_4scale_maformer_t_12e.py')),
            ('DINO-4scale MAFormer-S', _ours('dino_4scale_maformer_s_12e.py')),
            ('DINO-4scale MAFormer-B', _ours('dino_4scale_maformer_b_12e.py')),
            ('DINO-4scale R-50 (mmdet)', 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'),
            ('DINO-5scale MAFormer-B', _ours('dino_5scale_maformer_b_12e.py')),
            ('DINO-5scale MAFormer-L', _ours('dino_5scale_maformer_l_12e.py')),
            ('DINO-5scale Swin-L (mmdet)', 'mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py'),
        ],
    ),
    'm2f_ade': (
        'Mask2Former, ADE20K semantic (crop size)',
        (512, 512),
        [
            ('Mask2Former MAFormer-T 512', _ours('mask2former_maformer_t_512x512_160k_ade20k.py')),
            ('Mask2Former Swin-T 512 (mmseg)', 'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'),
            ('Mask2Former MAFormer-S 512', _ours('mask2former_maformer_s_512x512_160k_ade20k.py')),
            ('Mask2Former Swin-S 512 (mmseg)', 'mmseg::mask2former/mask2former_swin-s_8xb2-160k_ade20k-512x512.py'),
            ('Mask2Former MAFormer-B 640', _ours('mask2former_maformer_b_640x640_160k_ade20k.py')),
            (
                'Mask2Former Swin-B 640 (mmseg)',
                'mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py',
            ),
        ],
    ),
    'm2f_coco': (
        'Mask2Former, COCO instance (1024x1024)',
        (1024, 1024),
        [
            ('Mask2Former MAFormer-T', _ours('mask2former_maformer_t_lsj_50e_coco.py')),
            ('Mask2Former Swin-T (mmdet)', 'mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco.py'),
            ('Mask2Former MAFormer-S', _ours('mask2former_maformer_s_lsj_50e_coco.py')),
            ('Mask2Former Swin-S (mmdet)', 'mmdet::mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco.py'),
            ('Mask2Former MAFormer-B', _ours('mask2former_maformer_b_lsj_50e_coco.py')),
            ('Mask2Former R-50 (mmdet)', 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py'),
        ],
    ),
    'm2f_panoptic': (
        'Mask2Former, COCO panoptic (1024x1024)',
        (1024, 1024),
        [
            ('Mask2Former MAFormer-T', _ours('mask2former_maformer_t_lsj_50e_coco_panoptic.py')),
            (
                'Mask2Former Swin-T (mmdet)',
                'mmdet::mask2former/mask2former_swin-t-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py',
            ),
            ('Mask2Former MAFormer-S', _ours('mask2former_maformer_s_lsj_50e_coco_panoptic.py')),
            (
                'Mask2Former Swin-S (mmdet)',
                'mmdet::mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py',
            ),
            ('Mask2Former MAFormer-B', _ours('mask2former_maformer_b_lsj_50e_coco_panoptic.py')),
            (
                'Mask2Former Swin-B (mmdet)',
                'mmdet::mask2former/mask2former_swin-b-p4-w12-384_8xb2-lsj-50e_coco-panoptic.py',
            ),
        ],
    ),
}
# Training size of a row when it is not its group's (the 640x640 ADE20K configs).
SIZE_OF = {'Mask2Former MAFormer-B 640': (640, 640), 'Mask2Former Swin-B 640 (mmseg)': (640, 640)}


def published(config: str) -> Dict[str, float]:
    """The metrics the installed package's metafile lists for `config` ('mmdet::x/y.py'), e.g. {'box AP': 57.2};
    empty for our configs and for configs without results."""
    if '::' not in config:
        return {}
    import yaml

    package, path = config.split('::')
    folder = osp.dirname(path)
    root = osp.dirname(__import__(package).__file__)
    for name in ('metafile.yml', 'metafile.yaml'):
        meta_path = osp.join(root, '.mim', 'configs', folder, name)
        if osp.isfile(meta_path):
            break
    else:
        return {}
    with open(meta_path) as f:
        meta = yaml.safe_load(f)
    for model in meta.get('Models', []):
        if osp.basename(model.get('Config', '')) == osp.basename(path):
            results = model.get('Results') or []
            results = results if isinstance(results, list) else [results]
            return {k: float(v) for r in results for k, v in (r.get('Metrics') or {}).items()}
    return {}


def measure(group: str, done: Sequence[str] = (), save=None) -> List[dict]:
    """One row per config of `group` (except the row names in `done`): params (M), FLOPs (G) at the training size,
    published metrics and their source. `save(rows)` is called after each row."""
    _, hw, configs = GROUPS[group]
    rows = []
    for name, config in configs:
        if name in done:
            continue
        cfg = load_config(config)
        cfg.model.backbone.init_cfg = None  # nothing is read: random weights count the same
        size = SIZE_OF.get(name, hw)
        flops, params, _ = config_complexity(cfg, size)
        source = f'{config.split("::")[0]} metafile' if '::' in config else 'this project'
        rows.append(
            dict(
                group=group,
                model=name,
                config=config if '::' in config else osp.relpath(config, ROOT),
                size=list(size),
                params_m=params / 1e6,
                gflops=flops / 1e9,
                published=published(config),
                published_source=source,
            )
        )
        print(f'{name}: {params / 1e6:.1f}M, {flops / 1e9:.1f}G at {size[0]}x{size[1]}', flush=True)
        if save is not None:
            save(rows)
    return rows


def markdown(rows: List[dict]) -> str:
    lines = [
        '# DINO and Mask2Former: params and FLOPs at the training size',
        '',
        "Counted by `tools/get_flops.py` (multiply-adds in mode `tensor`, attention counted; mmcv's "
        'multi-scale deformable attention is counted by its projections only: its bilinear sampling is no '
        'matrix product). Metrics: those the installed mmdet 3.3.0 / mmseg 1.2.2 metafiles publish for the '
        'config; none exist yet for the MAFormer configs (no trained weights).',
        '',
    ]
    for group, (title, _, _) in GROUPS.items():
        group_rows = [r for r in rows if r['group'] == group]
        if not group_rows:
            continue
        lines += [
            f'## {title}',
            '',
            '| model | input (HxW) | params | GFLOPs | published result | config |',
            '|---|---|---|---|---|---|',
        ]
        for r in group_rows:
            result = ', '.join(f'{k} {v:g}' for k, v in r['published'].items()) or '-'
            if r['published']:
                result += f' ({r["published_source"]})'
            lines.append(
                f'| {r["model"]} | {r["size"][0]}x{r["size"][1]} | {r["params_m"]:.1f}M | {r["gflops"]:.1f} '
                f'| {result} | `{r["config"]}` |'
            )
        lines.append('')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--groups', nargs='+', choices=list(GROUPS), default=list(GROUPS))
    parser.add_argument('--out', default=osp.join(HERE, 'query_heads_complexity.md'))
    parser.add_argument('--resume', action='store_true', help='keep the rows of these groups measured before')
    args = parser.parse_args(argv)
    json_path = osp.splitext(args.out)[0] + '.json'
    earlier: List[dict] = []
    if osp.isfile(json_path):  # other groups keep their rows; these groups' with --resume
        with open(json_path) as f:
            earlier = [r for r in json.load(f) if args.resume or r['group'] not in args.groups]

    def save(new_rows: List[dict]) -> None:
        rows = sorted(
            earlier + new_rows,
            key=lambda r: [list(GROUPS).index(r['group']), [n for n, _ in GROUPS[r['group']][2]].index(r['model'])],
        )
        with open(json_path, 'w') as f:
            json.dump(rows, f, indent=1)
        with open(args.out, 'w') as f:
            f.write(markdown(rows))

    measured: List[dict] = []
    for group in args.groups:
        done = [r['model'] for r in earlier if r['group'] == group]
        measured += measure(group, done, lambda rows, before=measured: save(before + rows))
    save(measured)


if __name__ == '__main__':
    main()
