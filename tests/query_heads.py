"""What the DINO and Mask2Former tests share: the configs, a real config cut down to a tiny model on small generated
data (its own pipeline kept, at a smaller scale), a hook recording what a run did, and a tiny COCO panoptic set."""

import contextlib
import copy
import json
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook
from PIL import Image, ImageDraw

from maformer_mm.datasets.synthetic import CLASSES, draw_scene
from tests.helpers import REPO, TINY_ARCH

CONFIG_DIR = REPO / 'configs'
DINO_CONFIGS = sorted(CONFIG_DIR.glob('dino_*scale_maformer_*.py'))
M2F_ADE_CONFIGS = sorted(CONFIG_DIR.glob('mask2former_maformer_*_ade20k.py'))
M2F_COCO_CONFIGS = sorted(CONFIG_DIR.glob('mask2former_maformer_*_lsj_50e_coco.py'))
M2F_PANOPTIC_CONFIGS = sorted(CONFIG_DIR.glob('mask2former_maformer_*_lsj_50e_coco_panoptic.py'))
ARCH_OF = {'t': 'tiny', 's': 'small', 'b': 'base', 'l': 'large'}
TINY_WIDTHS = [TINY_ARCH['embed_dims'] * 2**i for i in range(4)]
WIDTH = 32  # head channels (256 in the real configs); GroupNorm(32) needs a multiple of 32
SIZE = 64  # side of the generated images
PALETTE = [(220, 20, 60), (0, 128, 255), (60, 180, 75)]


def size_of(config: Path) -> str:
    """'t', 's', 'b' or 'l' from a config name such as dino_4scale_maformer_t_12e.py."""
    return config.stem.split('_maformer_')[1][0]


def unscoped(value):
    """A config value as plain dicts and lists without mmengine's `_scope_` marks (which depend on how a config was
    loaded), for comparing our configs with the packages' own."""
    if isinstance(value, dict):
        return {k: unscoped(v) for k, v in value.items() if k != '_scope_'}
    if isinstance(value, (list, tuple)):
        return [unscoped(v) for v in value]
    return value


def host_settings(cfg: ConfigDict, key: str):
    """`cfg[key]` unscoped, as our configs set it on top of the host's: checkpoints are saved by SafeCheckpointHook
    (whole files, no deletion of what a resumed file names) where the host's configs name CheckpointHook."""
    value = unscoped(cfg[key])
    if key == 'default_hooks' and value.get('checkpoint', {}).get('type') == 'CheckpointHook':
        value['checkpoint']['type'] = 'SafeCheckpointHook'
    return value


def tiny_backbone(backbone: ConfigDict) -> None:
    backbone.update(
        arch=TINY_ARCH, pretrain_img_size=SIZE, window_size=4, drop_path_rate=0.0, with_cp=False, init_cfg=None
    )


def scale_pipeline(pipeline: Sequence[dict], factor: float) -> None:
    """Multiplies every size of the transforms (scale, scales, crop_size, max_size, size), in place, nested
    transforms (RandomChoice) included: the config's pipeline at a smaller scale."""

    def scaled(value):
        if isinstance(value, (list, tuple)):
            return type(value)(scaled(v) for v in value)
        return max(1, round(value * factor)) if isinstance(value, int) else value

    for transform in pipeline:
        if isinstance(transform, (list, tuple)):
            scale_pipeline(transform, factor)
            continue
        for key in ('scale', 'scales', 'crop_size', 'max_size', 'size'):
            if key in transform:
                transform[key] = scaled(transform[key])
        if 'transforms' in transform:
            scale_pipeline(transform['transforms'], factor)


def shrink_dino(model: ConfigDict, num_classes: int = len(CLASSES)) -> None:
    """A tiny MAFormer, one encoder and one decoder layer, 30 queries and 10 denoising queries. The width stays
    256: mmdet 3.3's DINO decoder encodes reference points with 128 features per coordinate whatever the width."""
    tiny_backbone(model.backbone)
    model.neck.in_channels = [TINY_WIDTHS[i] for i in model.backbone.out_indices]
    model.update(num_queries=30)
    model.encoder.num_layers = 1
    model.encoder.layer_cfg.ffn_cfg.feedforward_channels = 256
    model.decoder.num_layers = 1
    model.decoder.layer_cfg.ffn_cfg.feedforward_channels = 256
    model.bbox_head.num_classes = num_classes
    model.dn_cfg.group_cfg.num_dn_queries = 10
    model.test_cfg.max_per_img = 30


def shrink_mask2former_head(head: ConfigDict) -> None:
    """32 channels, one pixel-decoder layer, three decoder layers (one per feature level), 10 queries, 256 points."""
    head.update(in_channels=TINY_WIDTHS, feat_channels=WIDTH, out_channels=WIDTH, num_queries=10)
    decoder = head.pixel_decoder
    decoder.encoder.num_layers = 1
    decoder.encoder.layer_cfg.self_attn_cfg.embed_dims = WIDTH
    decoder.encoder.layer_cfg.ffn_cfg.update(embed_dims=WIDTH, feedforward_channels=2 * WIDTH)
    decoder.positional_encoding.num_feats = WIDTH // 2
    head.positional_encoding.num_feats = WIDTH // 2
    head.transformer_decoder.num_layers = 3
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        head.transformer_decoder.layer_cfg[attn].embed_dims = WIDTH
    head.transformer_decoder.layer_cfg.ffn_cfg.update(embed_dims=WIDTH, feedforward_channels=2 * WIDTH)


def set_mask2former_classes(head: ConfigDict, things: int, stuff: int = 0) -> None:
    head.update(num_things_classes=things, num_stuff_classes=stuff)
    head.loss_cls.class_weight = [1.0] * (things + stuff) + [0.1]


def _loader(loader: ConfigDict, dataset: dict, batch_size: int) -> None:
    loader.update(batch_size=batch_size, num_workers=0, persistent_workers=False)
    loader.dataset.update(dataset)


def coco_run_config(config: Path, data: Path, work_dir: Path, nominal: int) -> Config:
    """The config on a COCO set written by `ShapesSet.write_coco` (size SIZE) with a tiny model: one training
    iteration of two images, then evaluation on the val images; its pipelines scaled by SIZE / `nominal`."""
    cfg = Config.fromfile(str(config))
    metainfo = dict(classes=CLASSES, palette=PALETTE)
    for split in ('train', 'val'):
        loader = cfg[f'{split}_dataloader']
        scale_pipeline(loader.dataset.pipeline, SIZE / nominal)
        _loader(
            loader,
            dict(
                data_root=str(data),
                ann_file=f'annotations/instances_{split}.json',
                data_prefix=dict(img=f'{split}/'),
                metainfo=metainfo,
            ),
            2 if split == 'train' else 1,
        )
    cfg.test_dataloader = cfg.val_dataloader
    evaluators = cfg.val_evaluator if isinstance(cfg.val_evaluator, list) else [cfg.val_evaluator]
    for evaluator in evaluators:
        evaluator.ann_file = str(data / 'annotations' / 'instances_val.json')
    cfg.test_evaluator = cfg.val_evaluator
    preprocessor = cfg.model.data_preprocessor
    for augment in preprocessor.get('batch_augments') or []:
        augment.size = (SIZE, SIZE)
    return _one_iteration(cfg, work_dir)


def _one_iteration(cfg: Config, work_dir: Path) -> Config:
    if cfg.train_cfg.type == 'EpochBasedTrainLoop':
        cfg.train_cfg.update(max_epochs=1, val_interval=1)
    else:
        cfg.train_cfg.update(max_iters=1, val_interval=1, dynamic_intervals=None)
    cfg.work_dir = str(work_dir)
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.update(interval=1, max_keep_ckpts=1, save_best=None)
    cfg.launcher = 'none'
    return cfg


def ade_run_config(config: Path, data: Path, work_dir: Path, nominal: int) -> Config:
    """The segmentation config on an ADE-layout set written by `ShapesSet.write_ade` (SIZE pixels, classes 1..3, 0 =
    background) with a tiny model: one training iteration of two images, then mIoU on the val images."""
    cfg = Config.fromfile(str(config))
    dataset = dict(
        type='BaseSegDataset',
        data_root=str(data),
        metainfo=dict(classes=CLASSES, palette=PALETTE),
        img_suffix='.jpg',
        seg_map_suffix='.png',
        reduce_zero_label=True,
    )
    for split, folder in (('train', 'training'), ('val', 'validation')):
        loader = cfg[f'{split}_dataloader']
        scale_pipeline(loader.dataset.pipeline, SIZE / nominal)
        _loader(
            loader,
            dict(dataset, data_prefix=dict(img_path=f'images/{folder}', seg_map_path=f'annotations/{folder}')),
            2 if split == 'train' else 1,
        )
    cfg.test_dataloader = cfg.val_dataloader
    cfg.model.data_preprocessor.size = (SIZE, SIZE)
    cfg.data_preprocessor.size = (SIZE, SIZE)
    return _one_iteration(cfg, work_dir)


class RunRecord(Hook):
    """Records, from a Runner's run: whether every backbone parameter received a finite, non-zero gradient in the
    first iteration, the logged losses of each iteration, and the metrics of each evaluation."""

    priority = 'LOWEST'

    def __init__(self) -> None:
        self.grads: Dict[str, Tuple[bool, bool]] = {}
        self.losses: List[Dict[str, float]] = []
        self.metrics: List[Dict[str, float]] = []
        self._handles: list = []

    def before_train(self, runner) -> None:
        self.watch(runner.model.module if hasattr(runner.model, 'module') else runner.model)

    def watch(self, model: torch.nn.Module) -> None:
        """Records the first gradient of each backbone parameter of `model` until `after_train`."""
        for name, param in model.backbone.named_parameters():
            self._handles.append(param.register_hook(self._recorder(name)))

    def _recorder(self, name: str):
        def record(grad: torch.Tensor) -> None:
            if name not in self.grads:
                self.grads[name] = (bool(torch.isfinite(grad).all()), bool(grad.abs().sum() > 0))

        return record

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        self.losses.append(
            {
                k: float(v.detach()) if torch.is_tensor(v) else float(v)
                for k, v in (outputs or {}).items()
                if 'loss' in k
            }
        )

    def after_train(self, runner) -> None:
        for handle in self._handles:
            handle.remove()

    def after_val_epoch(self, runner, metrics: Optional[dict] = None) -> None:
        self.metrics.append(dict(metrics or {}))


@contextlib.contextmanager
def unformatted_config_text() -> Iterator[None]:
    """Within this context mmengine writes configs out without running yapf over them. The Runner formats the whole
    config when it logs it, dumps it, starts and saves a checkpoint: with mmdet's DINO pipeline that is 5 to 10 s
    each time on this machine, most of a one-iteration run. The text stays valid Python; nothing else changes."""
    import mmengine.config.config as config_module

    original = config_module.FormatCode
    config_module.FormatCode = lambda text, **kwargs: (text, False)
    try:
        yield
    finally:
        config_module.FormatCode = original


def run(cfg: Config) -> Tuple[object, RunRecord]:
    """Trains `cfg` with a RunRecord hook (and evaluates, as the config's loop says); returns (runner, record)."""
    from mmengine.runner import Runner

    runner = Runner.from_cfg(cfg)
    record = RunRecord()
    runner.register_hook(record)
    runner.train()
    return runner, record


def assert_trained_backbone(record: RunRecord, model: torch.nn.Module) -> None:
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    missing = [n for n in names if n not in record.grads]
    assert not missing, f'no gradient reached {missing[:5]}'
    assert all(finite for finite, _ in record.grads.values())
    zero = [n for n, (_, nonzero) in record.grads.items() if not nonzero]
    assert not zero, f'zero gradients: {zero[:5]}'
    assert record.losses and all(np.isfinite(v) for v in record.losses[0].values())


def copy_config(cfg: Config) -> Config:
    return copy.deepcopy(cfg)


# A tiny COCO panoptic set: the shapes of `draw_scene` are the thing classes, the background is split into two stuff
# classes (upper and lower half), one PNG of segment ids per image (id = R + 256 G + 256^2 B) and one JSON.
STUFF = ('sky', 'ground')


def write_coco_panoptic(root: Path, num_train: int = 2, num_val: int = 1, size: int = SIZE, seed: int = 0) -> Path:
    """Writes `{train,val}/*.png` images, `annotations/panoptic_{split}/*.png` and `panoptic_{split}.json`, and the
    matching `instances_{split}.json` (things only), in COCO 2017's panoptic format."""
    rng = np.random.default_rng(seed)
    categories = [dict(id=i + 1, name=n, isthing=1, supercategory='shape') for i, n in enumerate(CLASSES)]
    categories += [dict(id=len(CLASSES) + i + 1, name=n, isthing=0, supercategory='stuff') for i, n in enumerate(STUFF)]
    for split, count in (('train', num_train), ('val', num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / f'panoptic_{split}').mkdir(parents=True, exist_ok=True)
        images, panoptic, instances = [], [], []
        for image_id in range(1, count + 1):
            image, objects = draw_scene(rng, (size, size))
            ids = np.zeros((size, size), np.int64)
            ids[: size // 2] = 1000  # sky
            ids[size // 2 :] = 1001  # ground
            segments = {1000: len(CLASSES) + 1, 1001: len(CLASSES) + 2}
            for k, (label, polygon) in enumerate(objects):
                mask = Image.new('L', (size, size), 0)
                ImageDraw.Draw(mask).polygon(polygon, fill=1)
                ids[np.array(mask, bool)] = 2000 + k
                segments[2000 + k] = label + 1
            name = f'{image_id:06d}.png'
            image.save(root / split / name)
            rgb = np.stack([ids % 256, ids // 256 % 256, ids // 256**2], -1).astype(np.uint8)
            Image.fromarray(rgb).save(root / 'annotations' / f'panoptic_{split}' / name)
            images.append(dict(id=image_id, file_name=name, width=size, height=size))
            infos = []
            for segment_id, category in segments.items():
                ys, xs = np.nonzero(ids == segment_id)
                if not len(xs):
                    continue
                bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                infos.append(dict(id=segment_id, category_id=category, iscrowd=0, bbox=bbox, area=int(len(xs))))
                if category <= len(CLASSES):
                    mask = np.asfortranarray((ids == segment_id).astype(np.uint8))
                    from pycocotools import mask as mask_utils

                    rle = mask_utils.encode(mask)
                    rle['counts'] = rle['counts'].decode()
                    instances.append(
                        dict(
                            id=len(instances) + 1,
                            image_id=image_id,
                            category_id=category,
                            segmentation=rle,
                            area=int(len(xs)),
                            bbox=bbox,
                            iscrowd=0,
                        )
                    )
            panoptic.append(dict(image_id=image_id, file_name=name, segments_info=infos))
        with open(root / 'annotations' / f'panoptic_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=panoptic, categories=categories), f)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=instances, categories=categories[: len(CLASSES)]), f)
    return root
