"""Mask2Former with MAFormer on COCO (mmdet): the T/S/B instance and panoptic configs are mmdet's own Mask2Former
configs with the backbone swapped (compared with them); each full-size model builds with the pixel decoder reading all
four backbone levels and mmdet's Swin optimiser keys applied to MAFormer's names; each config trains one iteration of
a tiny model and evaluates on generated data (instance: box and mask AP through the config's own pipeline; panoptic:
the config's pipeline and PQ where `panopticapi` is installed, else the model's own training and panoptic +
instance prediction on the generated panoptic set, with box and mask AP); `--data-root` sets the thing classes, the
class weights and the fusion head of the instance configs and refuses the panoptic ones."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from PIL import Image

import maformer_mm  # noqa: F401
from maformer_mm.config.classes import set_num_classes
from maformer_mm.datasets.synthetic import CLASSES, ShapesSet
from maformer_mm.models import MAFormer
from tests.helpers import memoised_package_config_index
from tests.query_heads import (
    ARCH_OF,
    M2F_COCO_CONFIGS,
    M2F_PANOPTIC_CONFIGS,
    SIZE,
    STUFF,
    RunRecord,
    assert_trained_backbone,
    coco_run_config,
    host_settings,
    run,
    set_mask2former_classes,
    shrink_mask2former_head,
    size_of,
    tiny_backbone,
    unformatted_config_text,
    unscoped,
    write_coco_panoptic,
)

INSTANCE = [p.stem for p in M2F_COCO_CONFIGS]
PANOPTIC = [p.stem for p in M2F_PANOPTIC_CONFIGS]
MMDET_OF = {
    'instance': 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco.py',
    'panoptic': 'mmdet::mask2former/mask2former_r50_8xb2-lsj-50e_coco-panoptic.py',
}
DROP_PATH = {'t': 0.1, 's': 0.3, 'b': 0.5}


def _task(name: str) -> str:
    return 'panoptic' if name.endswith('_panoptic') else 'instance'


@pytest.fixture(scope='module')
def configs() -> dict:
    from maformer_mm.config.zoo import load_config

    with memoised_package_config_index():
        ours = {p.stem: Config.fromfile(str(p)) for p in M2F_COCO_CONFIGS + M2F_PANOPTIC_CONFIGS}
        return dict(ours, **{ref: load_config(ref) for ref in MMDET_OF.values()})


def test_the_issues_variants_exist():
    assert set(INSTANCE) == {f'mask2former_maformer_{s}_lsj_50e_coco' for s in 'tsb'}
    assert set(PANOPTIC) == {f'mask2former_maformer_{s}_lsj_50e_coco_panoptic' for s in 'tsb'}


@pytest.mark.parametrize('name', INSTANCE + PANOPTIC)
def test_config_is_mmdets_mask2former_with_a_maformer_backbone(configs, name):
    cfg, ref = configs[name], configs[MMDET_OF[_task(name)]]
    size = size_of(Path(name))
    assert cfg.default_scope == 'mmdet' and cfg.custom_imports.imports == ['maformer_mm']
    # preprocessor (LSJ padding), fusion head, matching, test settings
    for key in (set(cfg.model) | set(ref.model)) - {'_scope_'}:
        if key not in ('backbone', 'panoptic_head'):
            assert unscoped(cfg.model.get(key)) == unscoped(ref.model.get(key)), key
    head = cfg.model.panoptic_head
    assert unscoped(head) == dict(unscoped(ref.model.panoptic_head), in_channels=head.in_channels)
    for key in (
        'train_dataloader',
        'val_dataloader',
        'val_evaluator',
        'param_scheduler',
        'train_cfg',
        'auto_scale_lr',
        'default_hooks',
    ):
        assert unscoped(cfg[key]) == host_settings(ref, key), (
            key
        )  # LSJ pipeline, 368,750 iterations (50 epochs), evaluators
    # AdamW 1e-4, weight decay 0.05
    assert unscoped(cfg.optim_wrapper.optimizer) == unscoped(ref.optim_wrapper.optimizer)
    assert unscoped(cfg.optim_wrapper.clip_grad) == unscoped(ref.optim_wrapper.clip_grad)
    backbone = cfg.model.backbone
    assert backbone.type == 'MAFormer' and backbone.arch == ARCH_OF[size] and backbone.out_indices == (0, 1, 2, 3)
    assert backbone.drop_path_rate == DROP_PATH[size] and backbone.vit_window_size == 0
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/maformer_{size}_in1k.pth')
    widths = [MAFormer.arch_zoo[backbone.arch]['embed_dims'] * 2**i for i in range(4)]
    assert list(cfg.model.panoptic_head.in_channels) == widths
    assert cfg.custom_hooks == [dict(type='InvalidLossHook')]


@pytest.mark.parametrize('name', [n for n in INSTANCE + PANOPTIC if '_t_' in n or '_b_' in n])
def test_full_size_model_and_the_optimiser_keys(configs, name):
    """mmdet's Swin Mask2Former recipe on MAFormer's names: backbone at 0.1x the lr, no weight decay on its norms,
    relative-position tables and GLD position biases, nor on the query and level embeddings. (S differs from T only in
    depth, whose keys the T and B builds cover.)"""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper

    cfg = configs[name]
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, MAFormer) and backbone.out_channels == tuple(cfg.model.panoptic_head.in_channels)
    decoder = model.panoptic_head.pixel_decoder
    assert [c.conv.in_channels for c in decoder.input_convs] == list(backbone.out_channels[:0:-1])
    assert decoder.lateral_convs[0].conv.in_channels == backbone.out_channels[0]  # stride 4: the mask features
    classes = 80 + (53 if _task(name) == 'panoptic' else 0)
    assert model.panoptic_head.cls_embed.out_features == classes + 1
    assert len(model.panoptic_head.class_weight) == classes + 1
    optim = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    group = {id(p): (g['lr'], g['weight_decay']) for g in optim.param_groups for p in g['params']}
    for param_name, param in model.named_parameters():
        lr, decay = group[id(param)]
        if param_name.startswith('backbone.'):
            short = param_name[len('backbone.') :]
            undecayed = 'norm' in short or 'relative_position_bias_table' in short or short.endswith('gld.fc.bias')
            assert (lr, decay) == pytest.approx((1e-5, 0.0 if undecayed else 0.05)), param_name
        elif any(k in param_name for k in ('query_embed', 'query_feat', 'level_embed')):
            assert (lr, decay) == pytest.approx((1e-4, 0.0)), param_name
        else:
            assert lr == pytest.approx(1e-4), param_name


def _tiny(model, things: int, stuff: int = 0) -> None:
    tiny_backbone(model.backbone)
    shrink_mask2former_head(model.panoptic_head)
    set_mask2former_classes(model.panoptic_head, things, stuff)
    model.panoptic_fusion_head.update(num_things_classes=things, num_stuff_classes=stuff)
    model.train_cfg.num_points = 256
    model.test_cfg.max_per_image = 20  # of 10 queries x 3 classes


@pytest.fixture(scope='module')
def coco_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('m2f_coco')
    ShapesSet(num_train=2, num_val=1, size=(SIZE, SIZE)).write_coco(str(root))
    return root


@pytest.mark.parametrize('name', INSTANCE)
def test_instance_config_trains_one_iteration_and_evaluates(coco_data, tmp_path, name):
    """The config's LSJ pipeline at 64/1024 of its scale (resize 0.1..2.0, 64x64 crops, padding to 64x64)."""
    with unformatted_config_text():
        cfg = coco_run_config(Path(__file__).parents[2] / 'configs' / f'{name}.py', coco_data, tmp_path, 1024)
        _tiny(cfg.model, len(CLASSES))
        runner, record = run(cfg)
    assert_trained_backbone(record, runner.model)
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls'} <= set(record.losses[0])
    (metrics,) = record.metrics
    assert 0 <= metrics['coco/bbox_mAP'] <= 1 and 0 <= metrics['coco/segm_mAP'] <= 1


@pytest.fixture(scope='module')
def panoptic_data(tmp_path_factory) -> Path:
    return write_coco_panoptic(tmp_path_factory.mktemp('m2f_panoptic'))


def _panoptic_samples(root: Path, split: str) -> dict:
    """The generated panoptic images as a model batch, with what mmdet's LoadPanopticAnnotations makes of them: the
    thing masks, labels and boxes, and a semantic map of every segment's label (255: unlabelled)."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData, PixelData

    data = json.loads((root / 'annotations' / f'panoptic_{split}.json').read_text())
    inputs, samples = [], []
    for image, annotation in zip(data['images'], data['annotations']):
        pixels = np.array(Image.open(root / split / image['file_name']).convert('RGB'))[..., ::-1]  # BGR, as mmcv
        rgb = np.array(Image.open(root / 'annotations' / f'panoptic_{split}' / annotation['file_name'])).astype(int)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 256**2 * rgb[..., 2]
        semantic = np.full(ids.shape, 255, np.int64)
        masks, labels, boxes = [], [], []
        for segment in annotation['segments_info']:
            mask = ids == segment['id']
            semantic[mask] = segment['category_id'] - 1
            if segment['category_id'] <= len(CLASSES):
                x, y, w, h = segment['bbox']
                masks.append(mask.astype(np.uint8))
                labels.append(segment['category_id'] - 1)
                boxes.append([x, y, x + w, y + h])
        h, w = ids.shape
        sample = DetDataSample(
            metainfo=dict(img_id=image['id'], img_shape=(h, w), ori_shape=(h, w), scale_factor=(1.0, 1.0))
        )
        sample.gt_instances = InstanceData(
            labels=torch.tensor(labels), bboxes=torch.tensor(boxes, dtype=torch.float), masks=BitmapMasks(masks, h, w)
        )
        sample.gt_sem_seg = PixelData(sem_seg=torch.from_numpy(semantic)[None])
        inputs.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


@pytest.mark.parametrize('name', PANOPTIC)
def test_panoptic_model_trains_one_iteration_and_predicts_panoptic_and_instance_maps(configs, panoptic_data, name):
    """Without mmdet's panoptic data loading (it imports `panopticapi`): the config's model and optimiser, one
    training step on the generated set (thing masks + stuff map), then panoptic and instance predictions, evaluated
    by the config's own instance evaluator (box and mask AP)."""
    from mmdet.registry import MODELS
    from mmengine.evaluator import Evaluator
    from mmengine.optim import build_optim_wrapper

    cfg = copy.deepcopy(configs[name])
    _tiny(cfg.model, len(CLASSES), len(STUFF))
    cfg.model.data_preprocessor.batch_augments[0].size = (SIZE, SIZE)
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim = build_optim_wrapper(model, cfg.optim_wrapper)
    record = RunRecord()
    record.watch(model)
    model.train()
    losses = model.train_step(_panoptic_samples(panoptic_data, 'train'), optim)
    record.after_train(None)
    record.losses.append({k: float(v) for k, v in losses.items()})
    assert {'loss_cls', 'loss_mask', 'loss_dice', 'd0.loss_cls'} <= set(losses)
    assert_trained_backbone(record, model)

    model.eval()
    batch = _panoptic_samples(panoptic_data, 'val')
    with torch.no_grad():
        outputs = model.val_step(batch)
    labels = outputs[0].pred_panoptic_seg.sem_seg[0] % 1000  # label + instance id * INSTANCE_OFFSET (1000)
    assert outputs[0].pred_panoptic_seg.sem_seg.shape == (1, SIZE, SIZE)
    assert set(labels.unique().tolist()) <= set(range(len(CLASSES) + len(STUFF))) | {len(CLASSES) + len(STUFF)}
    instance_metric = [m for m in cfg.val_evaluator if m.type == 'CocoMetric'][0]
    evaluator = Evaluator(dict(instance_metric, ann_file=str(panoptic_data / 'annotations' / 'instances_val.json')))
    evaluator.dataset_meta = dict(classes=CLASSES)
    evaluator.process(outputs, batch)
    metrics = evaluator.evaluate(1)
    assert 0 <= metrics['coco/bbox_mAP'] <= 1 and 0 <= metrics['coco/segm_mAP'] <= 1


def test_panoptic_config_trains_and_evaluates_pq_through_its_own_pipeline(panoptic_data, tmp_path):
    """The config's LoadPanopticAnnotations pipeline and CocoPanopticMetric on the generated set. Both import
    `panopticapi`, which mmdet asks to install from its git repository (not on PyPI under that name)."""
    pytest.importorskip(
        'panopticapi',
        reason="mmdet's panoptic loading and PQ need panopticapi (pip install "
        'git+https://github.com/cocodataset/panopticapi.git)',
    )
    config = M2F_PANOPTIC_CONFIGS[0]
    with unformatted_config_text():
        cfg = Config.fromfile(str(config))
        metainfo = dict(classes=CLASSES + STUFF, thing_classes=CLASSES, stuff_classes=STUFF)
        for split in ('train', 'val'):
            loader = cfg[f'{split}_dataloader']
            from tests.query_heads import scale_pipeline

            scale_pipeline(loader.dataset.pipeline, SIZE / 1024)
            loader.update(batch_size=2 if split == 'train' else 1, num_workers=0, persistent_workers=False)
            loader.dataset.update(
                data_root=str(panoptic_data),
                ann_file=f'annotations/panoptic_{split}.json',
                data_prefix=dict(img=f'{split}/', seg=f'annotations/panoptic_{split}/'),
                metainfo=metainfo,
            )
        cfg.test_dataloader = cfg.val_dataloader
        cfg.val_evaluator[0].update(
            ann_file=str(panoptic_data / 'annotations' / 'panoptic_val.json'),
            seg_prefix=str(panoptic_data / 'annotations' / 'panoptic_val'),
        )
        cfg.val_evaluator[1].ann_file = str(panoptic_data / 'annotations' / 'instances_val.json')
        cfg.test_evaluator = cfg.val_evaluator
        cfg.model.data_preprocessor.batch_augments[0].size = (SIZE, SIZE)
        _tiny(cfg.model, len(CLASSES), len(STUFF))
        from tests.query_heads import _one_iteration

        runner, record = run(_one_iteration(cfg, tmp_path))
    assert_trained_backbone(record, runner.model)
    (metrics,) = record.metrics
    assert 0 <= metrics['coco_panoptic/PQ'] <= 100 and 0 <= metrics['coco/segm_mAP'] <= 1


def test_data_root_fits_the_instance_config_and_refuses_the_panoptic_one(configs):
    cfg = copy.deepcopy(configs[INSTANCE[0]])
    fields = set_num_classes(cfg.model, 4)
    assert fields == [
        'model.panoptic_head.num_things_classes',
        'model.panoptic_head.loss_cls.class_weight (4 classes + background)',
        'model.panoptic_fusion_head.num_things_classes',
    ]
    assert cfg.model.panoptic_head.loss_cls.class_weight == [1.0] * 4 + [0.1]
    assert cfg.model.panoptic_fusion_head.num_stuff_classes == cfg.model.panoptic_head.num_stuff_classes == 0
    with pytest.raises(
        ValueError,
        match=r'--data-root reads instance annotations \(things only\), but '
        r'model.panoptic_head has 53 stuff classes',
    ):
        set_num_classes(copy.deepcopy(configs[PANOPTIC[0]]).model, 4)


def test_data_root_refuses_per_class_weights_it_cannot_carry_over(configs):
    cfg = copy.deepcopy(configs[INSTANCE[0]])
    cfg.model.panoptic_head.loss_cls.class_weight = [1.0] * 79 + [2.0, 0.1]
    with pytest.raises(
        ValueError,
        match=r'model.panoptic_head.loss_cls.class_weight gives the 80 classes different '
        r'weights \(\[1.0, 2.0\]\)',
    ):
        set_num_classes(cfg.model, 4)


# A user's config inheriting ours by path, cut to a tiny model at 64 px.
SMALL_M2F = """
_base_ = [{base!r}]
image_size = (64, 64)
model = dict(
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size, img_pad_value=0,
                                                pad_mask=True, mask_pad_value=0, pad_seg=False)]),
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
                  pretrain_img_size=64, window_size=4, drop_path_rate=0., init_cfg=None),
    panoptic_head=dict(
        in_channels=[16, 32, 64, 128], feat_channels=32, out_channels=32, num_queries=10,
        pixel_decoder=dict(
            encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=dict(embed_dims=32),
                                                      ffn_cfg=dict(embed_dims=32, feedforward_channels=64))),
            positional_encoding=dict(num_feats=16)),
        positional_encoding=dict(num_feats=16),
        transformer_decoder=dict(num_layers=3, layer_cfg=dict(self_attn_cfg=dict(embed_dims=32),
                                                              cross_attn_cfg=dict(embed_dims=32),
                                                              ffn_cfg=dict(embed_dims=32, feedforward_channels=64)))),
    train_cfg=dict(num_points=256), test_cfg=dict(max_per_image=20))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile', to_float32=True), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True), dict(type='PackDetInputs')]))
"""


def test_train_tool_with_data_root_trains_own_classes(tmp_path):
    from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
    from maformer_mm.tools import train as train_tool

    names = ('ball', 'box', 'wedge', 'ring')
    ShapesSet(2, 1, (64, 64), classes=names).write_coco(str(tmp_path / 'data'), year='2017')
    config = tmp_path / 'small_m2f.py'
    config.write_text(SMALL_M2F.format(base=str(M2F_COCO_CONFIGS[0])))
    with unformatted_config_text():
        train_tool.main(
            [
                str(config),
                '--data-root',
                str(tmp_path / 'data'),
                '--work-dir',
                str(tmp_path / 'work'),
                '--device',
                'cpu',
                '--cfg-options',
                'train_cfg.max_iters=1',
                'train_cfg.val_interval=1',
                'train_cfg.dynamic_intervals=None',
                'val_cfg=None',
                'val_dataloader=None',
                'val_evaluator=None',
                'default_hooks.checkpoint.interval=1',
            ]
        )
    log = '\n'.join(p.read_text() for p in (tmp_path / 'work').glob('*/*.log'))
    assert (
        'set model.panoptic_head.num_things_classes, model.panoptic_head.loss_cls.class_weight (4 classes + '
        'background), model.panoptic_fusion_head.num_things_classes to 4'
    ) in log
    ckpt = load_mmengine_checkpoint(tmp_path / 'work' / 'iter_1.pth', 'cpu')
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == names
    assert ckpt['state_dict']['panoptic_head.cls_embed.weight'].shape[0] == 5  # 4 classes + "no object"


def test_onnx_export_of_the_instance_model(tmp_path, capsys):
    """Class logits (with "no object") and mask logits (stride 4) of the last decoder layer, checked in ONNX Runtime."""
    from maformer_mm.tools import export_onnx as tool

    config = tmp_path / 'small_m2f.py'
    config.write_text(SMALL_M2F.format(base=str(M2F_COCO_CONFIGS[0])))
    tool.main([str(config), '--shape', '64', '96', '--out', str(tmp_path / 'm2f.onnx'), '--verify'])
    text = capsys.readouterr().out
    assert 'Exporting detection (cls_logits, mask_logits)' in text and 'with the legacy exporter' in text
    assert 'cls_logits (1, 10, 81): ' in text and 'mask_logits (1, 10, 16, 24): ' in text
    assert 'Verified in ONNX Runtime' in text
