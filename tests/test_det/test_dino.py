"""DINO with MAFormer: the 4-scale (T/S/B) and 5-scale (B/L) configs for 12 and 36 epochs are mmdet's own DINO
configs with the backbone swapped (compared with them key by key); each full-size model builds with the ChannelMapper,
the encoder and the decoder reading the same number of levels and the backbone at 0.1x the lr; each config trains
one iteration of a tiny model and evaluates bbox mAP on generated COCO data; `--data-root` sets the classes of the
head and of its denoising queries, and the trained model runs in tools/infer.py."""

import json
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401
from maformer_mm.datasets.synthetic import ShapesSet
from maformer_mm.models import MAFormer
from tests.helpers import memoised_package_config_index, train_on_data_root_argv
from tests.query_heads import (
    ARCH_OF,
    CONFIG_DIR,
    DINO_CONFIGS,
    assert_trained_backbone,
    coco_run_config,
    host_settings,
    run,
    shrink_dino,
    size_of,
    unformatted_config_text,
    unscoped,
)

# The mmdet config each of ours is thin over: the R-50 4-scale ones, and the Swin-L 5-scale ones (whose backbone
# replacement and extra ChannelMapper level ours follow).
MMDET_OF = {
    ('4scale', '12e'): 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py',
    ('4scale', '36e'): 'mmdet::dino/dino-4scale_r50_8xb2-36e_coco.py',
    ('5scale', '12e'): 'mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py',
    ('5scale', '36e'): 'mmdet::dino/dino-5scale_swin-l_8xb2-36e_coco.py',
}
DROP_PATH = {'t': 0.1, 's': 0.3, 'b': 0.5, 'l': 0.5}
NAMES = [p.stem for p in DINO_CONFIGS]


def _kind(name: str):
    return name.split('_')[1], name.split('_')[-1]


@pytest.fixture(scope='module')
def configs() -> dict:
    from maformer_mm.config.zoo import load_config

    with memoised_package_config_index():
        ours = {p.stem: Config.fromfile(str(p)) for p in DINO_CONFIGS}
        return dict(ours, **{ref: load_config(ref) for ref in MMDET_OF.values()})


def test_the_issues_variants_exist():
    assert set(NAMES) == {f'dino_4scale_maformer_{s}_{e}' for s in 'tsb' for e in ('12e', '36e')} | {
        f'dino_5scale_maformer_{s}_{e}' for s in 'bl' for e in ('12e', '36e')
    }


@pytest.mark.parametrize('name', NAMES)
def test_config_is_mmdets_dino_with_a_maformer_backbone(configs, name):
    cfg, ref = configs[name], configs[MMDET_OF[_kind(name)]]
    size, (scales, _) = size_of(Path(name)), _kind(name)
    assert cfg.default_scope == 'mmdet' and cfg.custom_imports.imports == ['maformer_mm']
    # the detector, transformer, head, denoising, matching, test settings
    for key in (set(cfg.model) | set(ref.model)) - {'_scope_'}:
        if key not in ('backbone', 'neck'):
            assert unscoped(cfg.model.get(key)) == unscoped(ref.model.get(key)), key
    assert unscoped(cfg.model.neck) == dict(unscoped(ref.model.neck), in_channels=cfg.model.neck.in_channels)
    for key in (
        'train_dataloader',
        'val_dataloader',
        'test_dataloader',
        'val_evaluator',
        'optim_wrapper',
        'param_scheduler',
        'train_cfg',
        'auto_scale_lr',
        'default_hooks',
    ):
        # pipelines, AdamW + clipping + backbone at 0.1x lr, schedule, runtime
        assert unscoped(cfg[key]) == host_settings(ref, key), key
    assert cfg.optim_wrapper.paramwise_cfg.custom_keys == {'backbone': dict(lr_mult=0.1)}
    backbone = cfg.model.backbone
    assert backbone.type == 'MAFormer' and backbone.arch == ARCH_OF[size]
    assert backbone.drop_path_rate == DROP_PATH[size] and backbone.vit_window_size == 0
    assert backbone.out_indices == ((1, 2, 3) if scales == '4scale' else (0, 1, 2, 3))
    assert backbone.with_cp == (size == 'l')  # as mmdet's Swin-L DINO
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/maformer_{size}_in1k.pth')
    widths = [MAFormer.arch_zoo[backbone.arch]['embed_dims'] * 2**i for i in range(4)]
    assert list(cfg.model.neck.in_channels) == [widths[i] for i in backbone.out_indices]
    assert cfg.custom_hooks == [dict(type='InvalidLossHook')]


@pytest.mark.parametrize('name', [n for n in NAMES if n.endswith('_12e')])
def test_full_size_model_reads_every_level_and_learns_the_backbone_at_a_tenth(configs, name):
    """Built at the config's real size (the 36-epoch configs hold the same model, checked above against mmdet)."""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper

    cfg = configs[name]
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, MAFormer)
    assert model.backbone.arch_settings == MAFormer.arch_zoo[cfg.model.backbone.arch]
    assert list(model.neck.convs[i].conv.in_channels for i in range(len(model.backbone.out_indices))) == list(
        model.backbone.out_channels
    )
    levels = model.num_feature_levels
    assert levels == len(model.neck.convs) + len(model.neck.extra_convs) == (4 if '4scale' in name else 5)
    assert model.encoder.layers[0].self_attn.num_levels == model.decoder.layers[0].cross_attn.num_levels == levels
    assert model.level_embed.shape == (levels, 256)
    assert model.backbone.stages[0].with_cp == (cfg.model.backbone.arch == 'large')
    optim = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    lrs = {id(p): g['lr'] for g in optim.param_groups for p in g['params']}
    for param_name, param in model.named_parameters():
        assert lrs[id(param)] == pytest.approx(1e-5 if param_name.startswith('backbone.') else 1e-4), param_name


@pytest.fixture(scope='module')
def coco_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('dino_data')
    ShapesSet(num_train=2, num_val=1, size=(64, 64)).write_coco(str(root))
    return root


@pytest.mark.parametrize('name', NAMES)
def test_config_trains_one_iteration_and_evaluates(coco_data, tmp_path, name):
    """The config's own pipeline (at 64/800 of its scale), optimiser and hooks, a tiny MAFormer and a narrow head: one
    iteration reaches every backbone parameter with a finite gradient, then COCO bbox evaluation runs."""
    with unformatted_config_text():
        cfg = coco_run_config(Path(__file__).parents[2] / 'configs' / f'{name}.py', coco_data, tmp_path, 800)
        shrink_dino(cfg.model)
        runner, record = run(cfg)
    assert_trained_backbone(record, runner.model)
    assert {'loss_cls', 'loss_bbox', 'loss_iou', 'enc_loss_cls', 'dn_loss_cls', 'dn_loss_bbox'} <= set(record.losses[0])
    (metrics,) = record.metrics
    assert 0 <= metrics['coco/bbox_mAP'] <= 1 and 0 <= metrics['coco/bbox_mAP_50'] <= 1


# A user's config inheriting ours by path, cut to a tiny model at 64 px (the shrunk settings of the test above).
SMALL_DINO = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
                  pretrain_img_size=64, window_size=4, drop_path_rate=0., init_cfg=None),
    neck=dict(in_channels=[32, 64, 128]), num_queries=30,
    encoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=256))),
    decoder=dict(num_layers=1, layer_cfg=dict(ffn_cfg=dict(feedforward_channels=256))),
    dn_cfg=dict(group_cfg=dict(num_dn_queries=10)), test_cfg=dict(max_per_img=30))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='PackDetInputs')]))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
test_dataloader = val_dataloader
"""
OWN_CLASSES = ('ball', 'box', 'wedge', 'ring')


@pytest.fixture(scope='module')
def trained_on_own_data(tmp_path_factory):
    """tools/train.py --data-root on a COCO-2017-layout set of four own classes: one epoch of one iteration."""
    from maformer_mm.tools import train as train_tool

    root = tmp_path_factory.mktemp('dino_own')
    ShapesSet(2, 1, (64, 64), classes=OWN_CLASSES).write_coco(str(root / 'data'), year='2017')
    config = root / 'small_dino.py'
    config.write_text(SMALL_DINO.format(base=str(CONFIG_DIR / 'dino_4scale_maformer_t_12e.py')))
    with unformatted_config_text():
        train_tool.main(train_on_data_root_argv(config, root / 'data', root / 'work'))
    return root, config


def test_data_root_sets_the_head_and_its_denoising_queries(trained_on_own_data):
    from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint

    root, _ = trained_on_own_data
    log = '\n'.join(p.read_text() for p in (root / 'work').glob('*/*.log'))
    assert f'4 classes from {root}/data/annotations/instances_train2017.json' in log
    assert 'set model.bbox_head.num_classes to 4' in log
    ckpt = load_mmengine_checkpoint(root / 'work' / 'epoch_1.pth', 'cpu')
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == OWN_CLASSES
    state = ckpt['state_dict']
    cls_branches = [k for k in state if k.startswith('bbox_head.cls_branches.') and k.endswith('.weight')]
    assert cls_branches and all(state[k].shape[0] == 4 for k in cls_branches)  # sigmoid scores: one per class
    assert state['dn_query_generator.label_embedding.weight'].shape[0] == 4  # noised labels of the 4 classes


def test_infer_tool_draws_and_writes_the_trained_detectors_boxes(trained_on_own_data, tmp_path):
    """tools/infer.py's `infer` with the config fitted to the four classes, as --data-root fitted it for training."""
    from maformer_mm.apis.inference import infer
    from maformer_mm.config.classes import set_num_classes

    root, config = trained_on_own_data
    cfg = Config.fromfile(str(config))
    assert set_num_classes(cfg.model, 4) == ['model.bbox_head.num_classes']
    written = infer(
        str(root / 'data' / 'val2017'),
        cfg,
        str(root / 'work' / 'epoch_1.pth'),
        str(tmp_path),
        pred_score_thr=0.0,
        device='cpu',
    )
    assert len(written.vis) == len(written.preds) == 1
    pred = json.loads(Path(written.preds[0]).read_text())
    assert len(pred['labels']) == len(pred['scores']) == len(pred['bboxes']) == 30  # max_per_img of the config
    assert set(pred['labels']) <= {0, 1, 2, 3} and all(len(b) == 4 for b in pred['bboxes'])
    assert all(0 <= s <= 1 for s in pred['scores'])


def test_onnx_export_of_the_whole_detector_at_a_fixed_size(trained_on_own_data, tmp_path, capsys):
    """DINO exports whole, to the class logits and boxes of its last decoder layer (checked in ONNX Runtime): with the
    legacy exporter, at a fixed size; asked for dynamic H and W it says why not and exports at the fixed size.
    (128x128: at 64x64 fewer encoder proposals are valid than there are queries, and the tied scores of the
    invalid ones make the top-k order differ between runtimes.)"""
    import onnx

    from maformer_mm.tools import export_onnx as tool

    _, config = trained_on_own_data
    out = tmp_path / 'dino.onnx'
    tool.main([str(config), '--shape', '128', '128', '--out', str(out), '--dynamic', '--verify'])
    text = capsys.readouterr().out
    assert 'cannot be dynamic for this model, so it is exported at the fixed size 128x128' in text
    assert 'multi-scale deformable attention modules' in text and 'with the legacy exporter' in text
    assert 'cls_logits (1, 30, 80): ' in text and 'boxes (1, 30, 4): ' in text and 'Verified in ONNX Runtime' in text
    assert [o.name for o in onnx.load(str(out)).graph.output] == ['cls_logits', 'boxes']
    with pytest.raises(
        ValueError,
        match=r'the dynamo exporter cannot export this model .* torch._shape_as_tensor.* '
        r'Use the legacy exporter',
    ):
        tool.main([str(config), '--shape', '128', '128', '--out', str(tmp_path / 'x.onnx'), '--exporter', 'dynamo'])


def test_onnx_export_of_the_backbone_with_dynamic_sizes(trained_on_own_data, tmp_path, capsys):
    from maformer_mm.tools import export_onnx as tool

    _, config = trained_on_own_data
    tool.main(
        [
            str(config),
            '--shape',
            '64',
            '64',
            '--out',
            str(tmp_path / 'backbone.onnx'),
            '--backbone-only',
            '--dynamic',
            '--verify',
        ]
    )
    text = capsys.readouterr().out
    assert 'H and W dynamic with the dynamo exporter' in text and 'stage3 (1, 128, 2, 2): ' in text
    assert 'Verified in ONNX Runtime (CPU) at 64x64, 45x101, 117x39' in text
