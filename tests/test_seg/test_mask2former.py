"""Mask2Former with MAFormer on ADE20K (mmseg): the T/S 512x512 and B 640x640 configs are mmseg's own Mask2Former
configs with the backbone swapped (compared with them); each full-size model builds with the pixel decoder reading
all four backbone levels and mmseg's Swin optimiser keys applied to MAFormer's parameter names; each config trains
one iteration of a tiny model and evaluates mIoU on generated ADE-layout data; the trained model runs in
tools/infer.py."""

from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401
from maformer_mm.datasets.synthetic import ShapesSet
from maformer_mm.models import MAFormer
from tests.helpers import memoised_package_config_index
from tests.query_heads import (
    ARCH_OF,
    M2F_ADE_CONFIGS,
    ade_run_config,
    assert_trained_backbone,
    run,
    shrink_mask2former_head,
    size_of,
    tiny_backbone,
    unformatted_config_text,
    unscoped,
)

NAMES = [p.stem for p in M2F_ADE_CONFIGS]
MMSEG_OF = {
    512: 'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py',
    640: 'mmseg::mask2former/mask2former_swin-b-in1k-384x384-pre_8xb2-160k_ade20k-640x640.py',
}
DROP_PATH = {'t': 0.2, 's': 0.4, 'b': 0.6}


def _crop(name: str) -> int:
    return 640 if '640x640' in name else 512


@pytest.fixture(scope='module')
def configs() -> dict:
    from maformer_mm.config.zoo import load_config

    with memoised_package_config_index():
        ours = {p.stem: Config.fromfile(str(p)) for p in M2F_ADE_CONFIGS}
        return dict(ours, **{ref: load_config(ref) for ref in MMSEG_OF.values()})


def test_the_issues_variants_exist():
    assert set(NAMES) == {
        'mask2former_maformer_t_512x512_160k_ade20k',
        'mask2former_maformer_s_512x512_160k_ade20k',
        'mask2former_maformer_b_640x640_160k_ade20k',
    }


def backbone_param_is_undecayed(name: str) -> bool:
    """What mmseg's Swin Mask2Former configs exempt from weight decay, in MAFormer's names: norms and position terms."""
    return 'norm' in name or 'relative_position_bias_table' in name or name.endswith('gld.fc.bias')


@pytest.mark.parametrize('name', NAMES)
def test_config_is_mmsegs_mask2former_with_a_maformer_backbone(configs, name):
    cfg, ref = configs[name], configs[MMSEG_OF[_crop(name)]]
    size = size_of(Path(name))
    assert cfg.default_scope == 'mmseg' and cfg.custom_imports.imports == ['maformer_mm', 'mmdet.models']
    head = cfg.model.decode_head  # the head, losses and matcher
    assert unscoped(head) == dict(unscoped(ref.model.decode_head), in_channels=head.in_channels)
    for key in ('train_cfg', 'test_cfg'):
        assert unscoped(cfg.model.get(key)) == unscoped(ref.model.get(key)), key
    # Test images padded to a multiple of 32 as in mmseg's 512x512 configs (its standalone 640x640 one does not pad)
    assert unscoped(cfg.model.data_preprocessor) == dict(
        unscoped(ref.model.data_preprocessor), test_cfg=dict(size_divisor=32)
    )
    for key in ('train_dataloader', 'val_dataloader', 'val_evaluator', 'param_scheduler', 'train_cfg', 'auto_scale_lr'):
        assert unscoped(cfg[key]) == unscoped(ref[key]), key  # pipelines and crop size, poly schedule, 160k iterations
    # AdamW 1e-4, weight decay 0.05
    assert unscoped(cfg.optim_wrapper.optimizer) == unscoped(ref.optim_wrapper.optimizer)
    assert unscoped(cfg.optim_wrapper.clip_grad) == unscoped(ref.optim_wrapper.clip_grad)
    backbone = cfg.model.backbone
    assert backbone.type == 'MAFormer' and backbone.arch == ARCH_OF[size] and backbone.out_indices == (0, 1, 2, 3)
    assert backbone.drop_path_rate == DROP_PATH[size] and backbone.vit_window_size == 0
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=f'checkpoints/maformer_{size}_in1k.pth')
    widths = [MAFormer.arch_zoo[backbone.arch]['embed_dims'] * 2**i for i in range(4)]
    assert list(cfg.model.decode_head.in_channels) == widths
    assert cfg.custom_hooks == [dict(type='InvalidLossHook')]


@pytest.mark.parametrize('name', NAMES)
def test_full_size_model_and_the_optimiser_keys(configs, name):
    """Backbone at 0.1x the lr, no weight decay on its norms, relative-position tables and GLD position biases, nor
    on the query and level embeddings; the head's other parameters at the base lr and decay (mmseg's recipe)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.optim import build_optim_wrapper
    from mmseg.registry import MODELS

    cfg = configs[name]
    init_default_scope('mmseg')
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    assert isinstance(model.backbone, MAFormer)
    assert model.backbone.out_channels == tuple(cfg.model.decode_head.in_channels)
    assert [getattr(model.backbone, f'norm{i}').normalized_shape[0] for i in range(4)] == list(
        model.backbone.out_channels
    )  # one output norm per level the pixel decoder reads
    decoder = model.decode_head.pixel_decoder
    assert [c.conv.in_channels for c in decoder.input_convs] == list(model.backbone.out_channels[:0:-1])
    assert decoder.lateral_convs[0].conv.in_channels == model.backbone.out_channels[0]  # stride 4: the mask features
    assert model.decode_head.num_classes == 150 and model.decode_head.cls_embed.out_features == 151
    optim = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    group = {id(p): (g['lr'], g['weight_decay']) for g in optim.param_groups for p in g['params']}
    for param_name, param in model.named_parameters():
        lr, decay = group[id(param)]
        if param_name.startswith('backbone.'):
            undecayed = backbone_param_is_undecayed(param_name[len('backbone.') :])
            assert (lr, decay) == pytest.approx((1e-5, 0.0 if undecayed else 0.05)), param_name
        elif any(k in param_name for k in ('query_embed', 'query_feat', 'level_embed')):
            assert (lr, decay) == pytest.approx((1e-4, 0.0)), param_name
        else:
            assert lr == pytest.approx(1e-4), param_name


@pytest.fixture(scope='module')
def ade_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('m2f_ade')
    ShapesSet(num_train=2, num_val=1, size=(64, 64)).write_ade(str(root))
    return root


def _tiny(cfg: Config) -> Config:
    tiny_backbone(cfg.model.backbone)
    head = cfg.model.decode_head
    shrink_mask2former_head(head)
    head.update(num_classes=3)
    head.loss_cls.class_weight = [1.0] * 3 + [0.1]
    head.train_cfg.num_points = 256
    return cfg


@pytest.fixture(scope='module')
def trained(ade_data, tmp_path_factory):
    """Each config, tiny, after one iteration and its evaluation: {name: (runner, record)}."""
    results = {}
    for config in M2F_ADE_CONFIGS:
        with unformatted_config_text():
            cfg = _tiny(ade_run_config(config, ade_data, tmp_path_factory.mktemp(config.stem), _crop(config.stem)))
            results[config.stem] = run(cfg)
    return results


@pytest.mark.parametrize('name', NAMES)
def test_config_trains_one_iteration_and_evaluates_miou(trained, name):
    runner, record = trained[name]
    assert_trained_backbone(record, runner.model)
    assert {'decode.loss_cls', 'decode.loss_mask', 'decode.loss_dice', 'decode.d0.loss_cls'} <= set(record.losses[0])
    (metrics,) = record.metrics
    assert 0 <= metrics['mIoU'] <= 100 and 0 <= metrics['aAcc'] <= 100


def test_infer_tool_writes_label_maps_of_the_trained_model(trained, ade_data, tmp_path):
    from maformer_mm.apis.inference import infer

    runner, _ = trained['mask2former_maformer_t_512x512_160k_ade20k']
    checkpoint = Path(runner.work_dir) / 'iter_1.pth'
    image = sorted((ade_data / 'images' / 'validation').glob('*.jpg'))[0]
    written = infer(str(image), runner.cfg, str(checkpoint), str(tmp_path), device='cpu')
    assert len(written.vis) == len(written.preds) == 1
    import numpy as np
    from PIL import Image

    assert [Path(p).name for p in written.preds] == [image.stem + '.png']  # named as tools/test.py --out names them
    labels = np.array(Image.open(written.preds[0]))  # and valued so: class k is k + 1 (reduce_zero_label)
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= {1, 2, 3}


def test_onnx_export_of_the_trained_segmentor(trained, tmp_path, capsys):
    """The whole segmentor to the per-pixel class scores of its last decoder layer (stride 4), from the trained
    checkpoint, checked in ONNX Runtime; the legacy exporter is picked for its deformable attention."""
    from maformer_mm.tools import export_onnx as tool

    runner, _ = trained['mask2former_maformer_t_512x512_160k_ade20k']
    config = tmp_path / 'tiny_m2f.py'
    with unformatted_config_text():
        runner.cfg.dump(str(config))
    tool.main(
        [
            str(config),
            str(Path(runner.work_dir) / 'iter_1.pth'),
            '--shape',
            '64',
            '96',
            '--out',
            str(tmp_path / 'm2f.onnx'),
            '--verify',
        ]
    )
    text = capsys.readouterr().out
    assert 'Exporting segmentation (seg_logits)' in text and 'with the legacy exporter' in text
    assert '64x96 seg_logits (1, 3, 16, 24): ' in text and 'Verified in ONNX Runtime' in text


def test_get_flops_counts_the_mask2former_segmentor(trained):
    """tools/get_flops.py on a Mask2Former segmentor: mmseg 1.2.2's mode 'tensor' calls its head without the data
    samples it takes, so the count calls the head as the segmentor's `predict` does."""
    from maformer_mm.analysis.complexity import config_complexity

    runner, _ = trained['mask2former_maformer_t_512x512_160k_ade20k']
    cfg = runner.cfg.copy()
    flops, params, hw = config_complexity(cfg, (64, 96))
    model = runner.model
    assert hw == (64, 96) and params == sum(p.numel() for p in model.parameters())
    backbone_flops, _, _ = config_complexity(
        Config(dict(default_scope='mmseg', model=dict(cfg.model.backbone))), (64, 96)
    )
    assert flops > backbone_flops > 0  # the pixel decoder and the transformer decoder are counted too
