"""Measures every shipped config (params and FLOPs at its task's size, without data) and writes the model index,
`configs/metafile.yml`, in OpenMMLab's metafile format, and the README's table of variants from the variants' table
(`MAFormer.arch_zoo`) with each backbone's params and FLOPs at 224x224.

    python -m benchmarks.model_index

Each entry: the config, its task and data set, its schedule (epochs or iterations), the parameters and FLOPs
(multiply-adds, attention counted, `maformer_mm.tools.get_flops` on one synthetic image at `Input Size`), and the
results measured here. FLOPs of Cascade Mask R-CNN follow the published convention (mask heads on 100 RoIs, see
docs/detection.md): mmdet's tensor-mode forward runs its mask heads on all 1000 proposals, so the box-only count
plus a tenth of the difference is reported. Measurements are cached in `benchmarks/model_index_cache.json` by the
model they measure, so configs that share a model are measured once and a rerun measures only what changed.
"""

import argparse
import hashlib
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from maformer_mm.analysis.complexity import config_complexity
from maformer_mm.config.zoo import config_dir, list_configs, memoised_package_config_index
from maformer_mm.hosts import FLOP_SHAPES as DEFAULT_SHAPES
from maformer_mm.models import MAFormer

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).with_name('model_index_cache.json')
OUT = ROOT / 'configs' / 'metafile.yml'
README = ROOT / 'README.md'
TABLE_START, TABLE_END = (
    '<!-- variants table: python -m benchmarks.model_index -->',
    '<!-- end of the variants table -->',
)
# What the README says of each variant's ImageNet-1K top-1 (no training has run here); the published references.
TOP1 = {'large': "85.9 (paper's claim)"}
REFERENCES = (
    '| Swin-T / S / B (published) | | 28M / 50M / 88M | 4.5G / 8.7G / 15.4G | 81.3 / 83.0 / 83.5 |',
    '| CSWin-T / S / B (published) | | 23M / 35M / 78M | 4.3G / 6.9G / 15.0G | 82.7 / 83.6 / 84.2 |',
)
PAPER = dict(
    URL='https://arxiv.org/abs/2209.01620',
    Title='MAFormer: A Transformer Network with Multi-scale Attention Fusion for Visual Recognition',
)
# Released checkpoints, by config: URL (none yet). mim's schema has each model's `Weights`, which `mim download`
# fetches; until a config has a release its entry holds NO_WEIGHTS, a text that is no URL, so that `mim download`
# stops on it naming it (docs/host_tools.md) rather than on a missing field.
RELEASED: Dict[str, str] = {}
NO_WEIGHTS = 'no-released-weights: maformer_mm has released no trained weights for this config yet'
# Results measured in this project, by config (the demos on their generated sets; docs/demo.md).
MEASURED = {
    'mask_rcnn_maformer_t_demo.py': [
        dict(Task='Object Detection', Dataset='generated shapes (make demo)', Metrics={'box AP': 39.5}),
        dict(Task='Instance Segmentation', Dataset='generated shapes (make demo)', Metrics={'mask AP': 42.9}),
    ],
    'upernet_maformer_t_demo.py': [
        dict(Task='Semantic Segmentation', Dataset='generated shapes (make demo-seg)', Metrics={'mIoU': 99.89})
    ],
}


def _tasks(cfg: Config) -> List[str]:
    scope = cfg.get('default_scope')
    model = cfg.model
    if scope == 'mmpretrain':
        return ['Image Classification']
    if scope == 'mmseg':
        return ['Semantic Segmentation']
    head = model.get('panoptic_head') or {}
    if head:
        if (model.get('test_cfg') or {}).get('panoptic_on', False):
            return ['Panoptic Segmentation']
        return ['Instance Segmentation']
    masks = 'mask_head' in (model.get('roi_head') or {})
    return ['Object Detection', 'Instance Segmentation'] if masks else ['Object Detection']


def _dataset(cfg: Config) -> str:
    loader = cfg.get('train_dataloader') or {}
    dataset = loader.get('dataset') or {}
    while 'dataset' in dataset:
        dataset = dataset.dataset
    kind = str(dataset.get('type', ''))
    root = str(dataset.get('data_root', ''))
    if 'demo' in root:
        return 'generated shapes'
    for key, name in (
        ('Coco', 'COCO'),
        ('ADE20K', 'ADE20K'),
        ('ImageNet', 'ImageNet-1k'),
        ('BaseSeg', 'your own'),
        ('CustomDataset', 'your own'),
    ):
        if key in kind:
            return name
    return kind or 'unknown'


def _schedule(cfg: Config) -> Dict[str, int]:
    train = cfg.get('train_cfg') or {}
    if 'max_epochs' in train:
        return {'Epochs': int(train.max_epochs)}
    if 'max_iters' in train:
        return {'Iterations': int(train.max_iters)}
    return {}


def _techniques(cfg: Config) -> List[str]:
    """The optimizer, and the layer-wise (or stage-wise) lr decay with its rate where the config uses one."""
    optim = cfg.get('optim_wrapper') or {}
    found = [str(optim.optimizer.type)] if 'optimizer' in optim else []
    paramwise = optim.get('paramwise_cfg') or {}
    if 'layer_decay_rate' in paramwise:
        kind = 'Stage' if paramwise.get('decay_type') == 'stage_wise' else 'Layer'
        found.append(f'{kind}-wise LR Decay {paramwise.layer_decay_rate}')
    return found


def _is_cascade_with_masks(cfg: Config) -> bool:
    roi = cfg.model.get('roi_head') or {}
    return roi.get('type') == 'CascadeRoIHead' and roi.get('mask_head') is not None


def model_key(cfg: Config) -> str:
    """What the measurement depends on: the model and the scope (configs that differ in data or schedule only,
    such as 1x and 3x, share it)."""
    text = json.dumps([cfg.get('default_scope'), cfg.model.to_dict()], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure(path: Path) -> Tuple[int, int, Tuple[int, int]]:
    """(params, FLOPs, (H, W)) of the config's model."""
    cfg = Config.fromfile(str(path))
    flops, params, hw = config_complexity(cfg)
    if _is_cascade_with_masks(cfg):
        box_only = Config.fromfile(str(path))
        box_only.merge_from_dict({'model.roi_head.mask_head': None, 'model.roi_head.mask_roi_extractor': None})
        box_flops, _, _ = config_complexity(box_only)
        flops = box_flops + (flops - box_flops) // 10
    return params, flops, hw


def entry(name: str, cfg: Config, params: int, flops: int, hw: Sequence[int]) -> dict:
    tasks = _tasks(cfg)
    meta = {
        'Training Data': _dataset(cfg),
        **_schedule(cfg),
        'Training Techniques': _techniques(cfg),
        'Parameters': f'{params / 1e6:.1f}M',
        'FLOPs': f'{flops / 1e9:.1f}G',
        'Input Size': f'{hw[0]}x{hw[1]}',
    }
    results = MEASURED.get(name) or [dict(Task=t, Dataset=meta['Training Data'], Metrics={}) for t in tasks]
    return {
        'Name': name[:-3].replace('/', '_'),
        'In Collection': 'MAFormer',
        'Config': f'configs/{name}',
        'Metadata': meta,
        'Results': results,
        'Weights': RELEASED.get(name, NO_WEIGHTS),
    }


def variant_key(settings: dict) -> str:
    """The cache key of a variant's backbone measurement: its settings in the table."""
    return 'variant:' + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def variants_table(cache: dict) -> str:
    """The README's table of variants: the table's settings and the cached backbone measurements at 224x224.

    Raises:
        KeyError: a variant has no measurement (run `python -m benchmarks.model_index`).
    """
    rows = [
        '| model | embed dims, depths, heads | params | FLOPs | ImageNet-1K top-1 |',
        '|---|---|---|---|---|',
    ]
    for name, settings in MAFormer.variants().items():
        measured = cache[variant_key(settings)]
        shape = f'{settings["embed_dims"]}, {"-".join(map(str, settings["depths"]))}, '
        shape += '-'.join(map(str, settings['num_heads']))
        rows.append(
            f'| **MAFormer-{name[0].upper()}** | {shape} | {measured["params"] / 1e6:.1f}M | '
            f'{measured["flops"] / 1e9:.2f}G | {TOP1.get(name, "not trained here")} |'
        )
    return '\n'.join([TABLE_START, *rows, *REFERENCES, TABLE_END])


def readme_with_table(readme: str, table: str) -> str:
    """`readme` with its variants table (between the markers) replaced by `table`."""
    start, end = readme.index(TABLE_START), readme.index(TABLE_END) + len(TABLE_END)
    return readme[:start] + table + readme[end:]


def measure_variants(cache: dict) -> None:
    """Measures the backbone of each variant not measured yet (params and FLOPs at 224x224) into `cache`."""
    from maformer_mm.analysis.complexity import backbone_rows

    for name, settings in MAFormer.variants().items():
        key = variant_key(settings)
        if key not in cache:
            ((_, params, flops),) = backbone_rows([name], (224, 224))
            cache[key] = dict(params=round(params * 1e6), flops=flops * 1e9, hw=[224, 224], first=name)
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
            print(f'MAFormer-{name}: {params:.1f}M params, {flops:.2f}G FLOPs at 224x224', flush=True)


def _entries(cache: dict) -> List[dict]:
    """The model index's entries, measuring into `cache` the models not measured yet."""
    models = []
    for name in list_configs():
        path = config_dir() / name
        cfg = Config.fromfile(str(path))
        key = model_key(cfg)
        if key not in cache:
            params, flops, hw = measure(path)
            cache[key] = dict(params=params, flops=flops, hw=list(hw), first=name)
            CACHE.write_text(json.dumps(cache, indent=1, sort_keys=True))
            print(f'{name}: {params / 1e6:.1f}M params, {flops / 1e9:.1f}G FLOPs at {hw[0]}x{hw[1]}', flush=True)
        cached = cache[key]
        models.append(entry(name, cfg, cached['params'], cached['flops'], cached['hw']))
    return models


def main(argv: Optional[Sequence[str]] = None) -> Path:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    import maformer_mm  # noqa: F401  (registers MAFormer)

    cache = json.loads(CACHE.read_text()) if CACHE.is_file() else {}
    with memoised_package_config_index():
        models = _entries(cache)
    from mmengine.fileio import dump

    header = (
        "# The model index: every config maformer_mm ships, in OpenMMLab's metafile format. Written by\n"
        '# `python -m benchmarks.model_index` (params and FLOPs measured on one synthetic image at Input Size,\n'
        f'# FLOPs = multiply-adds; default sizes {DEFAULT_SHAPES}); do not edit by hand.\n'
    )
    body = dump(
        dict(
            Collections=[
                dict(
                    Name='MAFormer',
                    Metadata=dict(Architecture=['MAFormer', 'MAF block', 'GLD']),
                    Paper=PAPER,
                    README='docs/get_started.md',
                )
            ],
            Models=models,
        ),
        file_format='yaml',
        sort_keys=False,
    )
    OUT.write_text(header + body)
    print(f'wrote {OUT} ({len(models)} configs)')
    measure_variants(cache)
    README.write_text(readme_with_table(README.read_text(), variants_table(cache)))
    print(f'wrote the variants table of {README}')
    return OUT


if __name__ == '__main__':
    main()
