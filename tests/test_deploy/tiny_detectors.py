"""Tiny detectors of the four kinds that export whole (Faster, Mask and Cascade Mask R-CNN, RetinaNet): the project's
configs with a one-block-a-stage MAFormer, 16-channel heads and 3 classes, on a generated COCO set, written out as
users' config files for the tools."""

from pathlib import Path
from typing import Dict

from mmengine.config import Config

from tests.helpers import MIN_ARCH, REPO, memoised_package_config_index, widths

ARCH = dict(MIN_ARCH, num_heads=(1, 2, 2, 4))
WIDTH = 16  # FPN and head channels
KINDS = {  # kind -> (the project's config, with masks)
    'faster_rcnn': ('faster_rcnn_maformer_t.py', False),
    'mask_rcnn': ('mask_rcnn_maformer_t.py', True),
    'cascade_mask_rcnn': ('cascade_mask_rcnn_maformer_t.py', True),
    'retinanet': ('retinanet_maformer_t.py', False),
}
IMAGE_SCALE = (160, 120)  # the test pipeline's Resize (w, h), keep_ratio: the 128x96 demo images become 160x120
CLASSES = ('circle', 'square', 'triangle')
PALETTE = [(220, 20, 60), (0, 128, 255), (60, 180, 75)]


def _shrink(model: dict) -> None:
    """A tiny backbone, 16-channel neck and heads, 3 classes, few sampled RoIs and detections."""
    model.backbone.update(arch=ARCH, pretrain_img_size=64, window_size=4, drop_path_rate=0.0, init_cfg=None)
    model.neck.update(in_channels=[widths(ARCH)[i] for i in model.backbone.out_indices], out_channels=WIDTH)
    if 'bbox_head' in model:  # RetinaNet
        model.bbox_head.update(in_channels=WIDTH, feat_channels=WIDTH, num_classes=3)
        # convolutions that keep the features' scale (std 0.1, not 0.01): a few iterations in, scores differ from box
        # to box, instead of all sitting at the prior under the score threshold
        model.bbox_head.init_cfg = dict(
            type='Normal',
            layer='Conv2d',
            std=0.1,
            override=dict(type='Normal', name='retina_cls', std=0.1, bias_prob=0.05),
        )
        return
    model.rpn_head.update(in_channels=WIDTH, feat_channels=WIDTH)
    model.rpn_head.anchor_generator.scales = [4]  # objects of 10-40 pixels
    roi = model.roi_head
    for part in ('bbox_roi_extractor', 'mask_roi_extractor'):
        if part in roi:
            roi[part].out_channels = WIDTH
    for head in roi.bbox_head if isinstance(roi.bbox_head, list) else [roi.bbox_head]:
        head.update(in_channels=WIDTH, conv_out_channels=WIDTH, fc_out_channels=32, num_classes=3)
    if 'mask_head' in roi:
        roi.mask_head.update(in_channels=WIDTH, conv_out_channels=WIDTH, num_classes=3)
    for stage in model.train_cfg.rcnn if isinstance(model.train_cfg.rcnn, list) else [model.train_cfg.rcnn]:
        stage.sampler.num = 64
    model.test_cfg.rpn.update(nms_pre=300, max_per_img=100)
    model.test_cfg.rcnn.update(max_per_img=30)


def _data(cfg: Config, data_root: str, masks: bool) -> None:
    metainfo = dict(classes=CLASSES, palette=PALETTE)
    annotations = dict(type='LoadAnnotations', with_bbox=True, with_mask=masks)
    resize = dict(type='Resize', scale=IMAGE_SCALE, keep_ratio=True)
    meta_keys = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')
    pipelines = {
        'train': [dict(type='LoadImageFromFile'), annotations, resize, dict(type='PackDetInputs')],
        'val': [dict(type='LoadImageFromFile'), resize, annotations, dict(type='PackDetInputs', meta_keys=meta_keys)],
    }
    for split in ('train', 'val'):
        loader = cfg[f'{split}_dataloader']
        loader.update(batch_size=2, num_workers=0, persistent_workers=False)
        loader.dataset = dict(
            type='CocoDataset',
            data_root=data_root,
            metainfo=metainfo,
            ann_file=f'annotations/instances_{split}.json',
            data_prefix=dict(img=f'{split}/'),
            pipeline=pipelines[split],
            **(dict(filter_cfg=dict(filter_empty_gt=True)) if split == 'train' else dict(test_mode=True)),
        )
    cfg.test_dataloader = cfg.val_dataloader
    cfg.val_evaluator = dict(
        type='CocoMetric',
        ann_file=data_root + 'annotations/instances_val.json',
        metric=['bbox', 'segm'] if masks else 'bbox',
    )
    cfg.test_evaluator = cfg.val_evaluator


def write_configs(root: Path, data_root: Path, epochs: int = 2) -> Dict[str, Path]:
    """One config file a kind under `root`, on the COCO set at `data_root`, trained for `epochs` at lr 1e-3."""
    paths = {}
    with memoised_package_config_index():
        for kind, (base, masks) in KINDS.items():
            cfg = Config.fromfile(str(REPO / 'configs' / base))
            _shrink(cfg.model)
            _data(cfg, str(data_root) + '/', masks)
            cfg.optim_wrapper.optimizer.lr = 1e-3
            cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=1)]
            cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=epochs, val_interval=epochs + 1)
            cfg.default_hooks.logger.interval = 1
            cfg.randomness = dict(seed=0)  # the same weights in every run
            cfg.default_hooks.checkpoint.update(interval=epochs, max_keep_ckpts=1)
            paths[kind] = root / f'{kind}.py'
            cfg.dump(str(paths[kind]))
    return paths
