"""Layer-wise lr decay for MAFormer: `MAFormer.get_layer_depth` and `LayerDecayOptimWrapperConstructor` give every
backbone parameter of T, S and B exactly the lr scale its depth implies and the weight decay its kind implies, each
parameter in one group; a block placed one depth off, or a table that decays its relative-position tables, fails the
same check. Each recipe of configs/layer_decay/ is its parent config plus the documented optimiser, and builds the
documented groups on the full-size model (neck and heads at the full lr); mmpretrain's constructor builds the same
table through its classifier; the hosts' own constructors' bare errors, and ours, are checked."""

from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

import maformer_mm  # noqa: F401
from maformer_mm.engine.layer_decay import LayerDecayOptimWrapperConstructor, check_layer_decay_constructor
from maformer_mm.layers.attention import WindowAttention
from maformer_mm.models import MAFormer
from tests.helpers import REPO, TINY_CFG, memoised_package_config_index

RECIPE_DIR = REPO / 'configs' / 'layer_decay'
ARCH_OF = {'t': 'tiny', 's': 'small', 'b': 'base'}
# The documented recipes (docs/layer_decay.md): kind -> (rate, decay_type, lr, weight decay, no-decay name keys).
M2F_KEYS = ('query_embed', 'query_feat', 'level_embed')
RECIPES = {
    'mask_rcnn': (0.95, 'layer_wise', 1e-4, 0.05, ()),
    'cascade_mask_rcnn': (0.9, 'layer_wise', 2e-4, 0.05, ()),
    'dino_4scale': (0.9, 'layer_wise', 1e-4, 1e-4, ()),
    'mask2former': (0.9, 'layer_wise', 1e-4, 0.05, M2F_KEYS),
    'upernet': (0.9, 'stage_wise', 1e-4, 0.05, ()),
}
DENSE = sorted(p for p in RECIPE_DIR.glob('*.py') if not p.stem.startswith('maformer_'))
CLS_RECIPE = RECIPE_DIR / 'maformer_t_finetune_my_cls.py'
PAPERWISE = dict(flat_decay_mult=0.0, custom_keys={'relative_position_bias_table': dict(decay_mult=0.0)})


def kind_of(path: Path) -> str:
    return path.stem.split('_maformer_')[0]


def size_of(path: Path) -> str:
    return path.stem.split('_maformer_')[1][0]


def expected_depths(backbone: MAFormer, decay_type: str) -> Tuple[Dict[int, int], int]:
    """{id(parameter): depth} of every backbone parameter and the number of depths, from the modules themselves in
    forward order (not from the names `get_layer_depth` parses): the stem 0, then each block one deeper (or each stage
    one deeper, stage-wise), a patch merging with the first block of the stage it opens, the output norms last."""
    layer_wise = decay_type == 'layer_wise'
    num_layers = (sum(len(s.blocks) for s in backbone.stages) if layer_wise else len(backbone.stages)) + 2
    depth: Dict[int, int] = {id(p): 0 for p in backbone.patch_embed.parameters()}
    block = 0
    for i, stage in enumerate(backbone.stages):
        if stage.downsample is not None:
            depth.update({id(p): block + 1 if layer_wise else i + 1 for p in stage.downsample.parameters()})
        for module in stage.blocks:
            block += 1
            depth.update({id(p): block if layer_wise else i + 1 for p in module.parameters()})
    for i in backbone.out_indices:
        depth.update({id(p): num_layers - 1 for p in getattr(backbone, f'norm{i}').parameters()})
    return depth, num_layers


def undecayed_backbone_params(backbone: nn.Module) -> set:
    """ids of the backbone parameters the recipes exempt from weight decay, by kind: LayerNorms, biases (every 1-D
    parameter) and the window attentions' relative-position tables."""
    found = {id(p) for m in backbone.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    found |= {id(p) for p in backbone.parameters() if p.ndim == 1}
    found |= {id(m.relative_position_bias_table) for m in backbone.modules() if isinstance(m, WindowAttention)}
    return found


def check_groups(model: nn.Module, groups, rate: float, decay_type: str, lr: float, wd: float, head_keys=()) -> None:
    """Raises AssertionError unless every trainable parameter of `model` is in exactly one group, each backbone
    parameter at lr * rate ** (num_layers - 1 - depth) with weight decay 0 or `wd` by its kind, and every other
    parameter at the full lr (`initial_lr` where a scheduler has moved `lr`)."""
    backbone = model if isinstance(model, MAFormer) else model.backbone
    depth, num_layers = expected_depths(backbone, decay_type)
    undecayed = undecayed_backbone_params(backbone)
    seen: Dict[int, dict] = {}
    for group in groups:
        for param in group['params']:
            assert id(param) not in seen, 'a parameter is in two groups'
            seen[id(param)] = group
    names = {id(p): n for n, p in model.named_parameters()}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(seen) == trainable, f'missed: {[names[i] for i in trainable - set(seen)][:5]}'
    wrong = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = seen[id(param)]
        group_lr = group.get('initial_lr', group['lr'])
        if id(param) in depth:
            want = (lr * rate ** (num_layers - 1 - depth[id(param)]), 0.0 if id(param) in undecayed else wd)
        else:
            undecayed_head = param.ndim == 1 or any(k in name for k in head_keys)
            want = (lr, 0.0 if undecayed_head else wd)
        if (group_lr, group['weight_decay']) != pytest.approx(want, rel=1e-9):
            wrong.append(f'{name}: lr {group_lr:.4g} wd {group["weight_decay"]} (want {want[0]:.4g}, {want[1]})')
    assert not wrong, f'{len(wrong)} wrong: {wrong[:5]}'


def build_groups(model: nn.Module, rate: float = 0.9, decay_type: str = 'layer_wise', **paramwise) -> list:
    optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05))
    paramwise = dict(PAPERWISE, layer_decay_rate=rate, decay_type=decay_type, **paramwise)
    return LayerDecayOptimWrapperConstructor(optim_wrapper, paramwise)(model).optimizer.param_groups


@pytest.fixture(scope='module')
def variants() -> Dict[str, MAFormer]:
    return {size: MAFormer(arch=arch) for size, arch in ARCH_OF.items()}


@pytest.mark.parametrize('decay_type', ['layer_wise', 'stage_wise'])
@pytest.mark.parametrize('size', list(ARCH_OF))
def test_every_backbone_parameter_gets_its_depths_scale_and_its_kinds_decay(variants, size, decay_type):
    backbone = variants[size]
    groups = build_groups(backbone, decay_type=decay_type)
    check_groups(backbone, groups, 0.9, decay_type, 1e-4, 0.05)
    depths = MAFormer.arch_zoo[ARCH_OF[size]]['depths']
    num_layers = sum(depths) + 2 if decay_type == 'layer_wise' else 6
    # Two groups (decayed, not decayed) per depth; the backbone's last depth holds only its output norms.
    assert len(groups) == 2 * num_layers - 1
    assert [g['layer_id'] for g in groups] == sorted(g['layer_id'] for g in groups)


def _shift(depth_fn, selected: str, by: int):
    def shifted(self, param_name, prefix='', decay_type='layer_wise'):
        depth, num_layers = depth_fn(self, param_name, prefix, decay_type)
        return (depth + by if selected in param_name else depth), num_layers

    return shifted


@pytest.mark.parametrize(
    'selected, by',
    [
        ('stages.2.blocks.5.', 1),  # one stage-3 block one depth too deep
        ('stages.0.blocks.0.attn.', 1),  # a block's window attention apart from the rest of its block
        ('stages.1.downsample.', -1),  # the merging with the last block of the stage it closes
        ('stages.3.blocks.0.ffn.', -1),
    ],
)
def test_a_block_one_depth_off_fails_the_check(monkeypatch, variants, selected, by):
    monkeypatch.setattr(MAFormer, 'get_layer_depth', _shift(MAFormer.get_layer_depth, selected, by))
    groups = build_groups(variants['t'])
    with pytest.raises(AssertionError, match=r'wrong: \[.stages'):
        check_groups(variants['t'], groups, 0.9, 'layer_wise', 1e-4, 0.05)


def test_decayed_relative_position_tables_fail_the_check(variants):
    groups = build_groups(variants['t'], custom_keys={})
    with pytest.raises(AssertionError, match='relative_position_bias_table: lr .* wd 0.05'):
        check_groups(variants['t'], groups, 0.9, 'layer_wise', 1e-4, 0.05)


def test_get_layer_depth_follows_mmpretrains_contract():
    model = MAFormer(**TINY_CFG)  # depths 1, 1, 2, 1: 7 depths
    assert model.get_layer_depth('backbone.patch_embed.norm.weight', 'backbone.') == (0, 7)
    assert model.get_layer_depth('backbone.stages.1.downsample.reduction.weight', 'backbone.') == (2, 7)
    assert model.get_layer_depth('backbone.stages.2.blocks.1.attn.qkv.bias', 'backbone.') == (4, 7)
    assert model.get_layer_depth('backbone.norm3.weight', 'backbone.') == (6, 7)
    assert model.get_layer_depth('neck.lateral_convs.0.conv.weight', 'backbone.') == (6, 7)  # after the backbone
    assert model.get_layer_depth('stages.3.blocks.0.norm1.weight', decay_type='stage_wise') == (4, 6)
    for bad in ('stages.4.blocks.0.norm1.weight', 'stages.2.blocks.2.norm1.weight', 'stages.0.downsample.norm.weight'):
        with pytest.raises(ValueError, match=f'{bad!r} names no parameter of this MAFormer'):
            model.get_layer_depth(bad)
    with pytest.raises(ValueError, match="decay_type must be 'layer_wise' or 'stage_wise', got 'block'"):
        model.get_layer_depth('patch_embed.norm.weight', decay_type='block')


def test_frozen_stages_are_left_out():
    model = MAFormer(**TINY_CFG, frozen_stages=1)
    groups = build_groups(model)
    grouped = {id(p) for g in groups for p in g['params']}
    assert not grouped & {id(p) for p in [*model.patch_embed.parameters(), *model.stages[0].parameters()]}
    check_groups(model, groups, 0.9, 'layer_wise', 1e-4, 0.05)


@pytest.mark.parametrize(
    'paramwise, message',
    [
        (dict(decay_rate=0.9, num_layers=6), r"unknown keys \['decay_rate', 'num_layers'\].*layer_decay_rate here"),
        (dict(), 'needs paramwise_cfg.layer_decay_rate'),
        (dict(layer_decay_rate=1.5), r'layer_decay_rate must be a number in \(0, 1\], got 1.5'),
        (dict(layer_decay_rate=0.9, decay_type='block'), "decay_type must be 'layer_wise' or 'stage_wise'"),
        (dict(layer_decay_rate=0.9, custom_keys={'norm': dict(momentum=0.9)}), r"custom_keys\['norm'\] must be"),
    ],
)
def test_bad_paramwise_settings_are_named(paramwise, message):
    with pytest.raises(ValueError, match=message):
        LayerDecayOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)), paramwise)


def test_a_model_without_depths_or_stage_wise_on_a_backbone_without_stages_is_refused():
    from mmpretrain.models import SwinTransformer

    plain = nn.Module()
    plain.backbone = nn.Linear(2, 2)
    with pytest.raises(TypeError, match=r'neither Module nor its backbone \(Linear\) has get_layer_depth'):
        build_groups(plain)
    swin = nn.Module()
    swin.backbone, swin.head = SwinTransformer(arch='tiny', img_size=64), nn.Linear(768, 3)
    groups = build_groups(swin)  # layer-wise: mmpretrain's Swin has the contract too
    assert {g['layer_id'] for g in groups} == set(range(14)) and groups[-1]['lr_scale'] == 1.0
    with pytest.raises(ValueError, match='SwinTransformer.get_layer_depth has no decay_type argument'):
        build_groups(swin, decay_type='stage_wise')


@pytest.fixture(scope='module')
def recipes() -> Dict[str, Tuple[Config, Config]]:
    """Each layer-decay recipe and the config it inherits, parsed."""
    with memoised_package_config_index():
        return {p.stem: (Config.fromfile(str(p)), Config.fromfile(str(REPO / 'configs' / p.name))) for p in DENSE}


def test_the_recipes_exist():
    names = {p.stem for p in DENSE}
    assert names == {f'{k}_maformer_{s}_3x' for k in ('mask_rcnn', 'cascade_mask_rcnn') for s in 'tsb'} | {
        f'dino_4scale_maformer_{s}_12e' for s in 'tsb'
    } | {f'upernet_maformer_{s}_512x512_160k_ade20k' for s in 'tsb'} | {
        'mask2former_maformer_t_512x512_160k_ade20k',
        'mask2former_maformer_s_512x512_160k_ade20k',
        'mask2former_maformer_b_640x640_160k_ade20k',
    }


def _without_decay_fragments(cfg: Config) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k != 'optim_wrapper' and not k.startswith('layer_decay')}


@pytest.mark.parametrize('path', DENSE, ids=lambda p: p.stem)
def test_recipe_is_its_parent_with_the_documented_optimiser(recipes, path):
    cfg, parent = recipes[path.stem]
    assert _without_decay_fragments(cfg) == _without_decay_fragments(parent)  # model, data, schedule, hooks
    rate, decay_type, lr, wd, _ = RECIPES[kind_of(path)]
    optim = cfg.optim_wrapper
    assert optim.constructor == 'LayerDecayOptimWrapperConstructor'
    assert optim.optimizer == dict(parent.optim_wrapper.optimizer, lr=lr, weight_decay=wd)
    assert {k: v for k, v in optim.items() if k not in ('constructor', 'optimizer', 'paramwise_cfg')} == {
        k: v for k, v in parent.optim_wrapper.items() if k not in ('optimizer', 'paramwise_cfg')
    }  # type and gradient clipping as the parent's
    assert optim.paramwise_cfg.layer_decay_rate == rate and optim.paramwise_cfg.get('decay_type', 'layer_wise') == (
        decay_type
    )


@pytest.mark.parametrize('path', [p for p in DENSE if size_of(p) == 't'], ids=lambda p: p.stem)
def test_recipe_builds_the_documented_groups_on_the_full_size_model(recipes, path):
    """The T recipe of each kind, the whole model (S and B backbones are checked on their own above)."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS

    cfg = recipes[path.stem][0]
    init_default_scope(cfg.default_scope)
    cfg.model.backbone.init_cfg = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    rate, decay_type, lr, wd, head_keys = RECIPES[kind_of(path)]
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    check_groups(model, groups, rate, decay_type, lr, wd, head_keys)
    depths = MAFormer.arch_zoo[ARCH_OF[size_of(path)]]['depths']
    assert len(groups) == 2 * ((sum(depths) if decay_type == 'layer_wise' else 4) + 2)  # docs/layer_decay.md


def test_mmpretrains_constructor_builds_the_table_through_its_classifier():
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(str(CLS_RECIPE))
    assert cfg.optim_wrapper.constructor == 'LearningRateDecayOptimWrapperConstructor'
    init_default_scope('mmpretrain')
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    groups = build_optim_wrapper(model, cfg.optim_wrapper).optimizer.param_groups
    assert len(groups) == sum(1 for p in model.parameters() if p.requires_grad)  # mmpretrain: one group per parameter
    check_groups(model, groups, 0.9, 'layer_wise', cfg.optim_wrapper.optimizer.lr, 0.05)


def _detector_with(constructor: str, paramwise: dict) -> Tuple[nn.Module, Config]:
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(RECIPE_DIR / 'mask_rcnn_maformer_t_3x.py'))
    cfg.model.backbone.update(TINY_CFG, init_cfg=None)
    cfg.model.neck.in_channels = [16, 32, 64, 128]
    cfg.optim_wrapper.update(constructor=constructor, paramwise_cfg=paramwise)
    init_default_scope('mmdet')
    return MODELS.build(cfg.model), cfg


def test_mmdets_own_constructor_fails_bare_and_our_check_says_what_to_write():
    model, cfg = _detector_with(
        'LearningRateDecayOptimizerConstructor', dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6)
    )
    with pytest.raises(NotImplementedError) as bare:  # mmdet 3.3: ConvNeXt's names only, no message
        build_optim_wrapper(model, cfg.optim_wrapper)
    assert str(bare.value) == ''
    with pytest.raises(
        ValueError,
        match=r"constructor='LearningRateDecayOptimizerConstructor' cannot give MAFormer layer-wise lr decay: mmdet's.*"
        r"constructor='LayerDecayOptimWrapperConstructor'.*layer_decay_rate=0.95, decay_type='layer_wise'",
    ):
        check_layer_decay_constructor(cfg)
    cfg.optim_wrapper.constructor = 'LayerDecayOptimWrapperConstructor'
    check_layer_decay_constructor(cfg)  # ours passes


def test_train_tool_refuses_a_host_constructor_before_building_anything(tmp_path):
    from maformer_mm.tools import train

    config = str(RECIPE_DIR / 'upernet_maformer_t_512x512_160k_ade20k.py')
    argv = [config, '--work-dir', str(tmp_path), '--cfg-options']
    with pytest.raises(ValueError, match="mmseg's constructors know ConvNeXt's and BEiT's parameter names only"):
        train.main(argv + ['optim_wrapper.constructor=LayerDecayOptimizerConstructor'])
    assert not any(tmp_path.iterdir())


def test_the_docs_tables_are_what_the_constructor_builds():
    from benchmarks.layer_decay_tables import PAGE, page_tables, render

    assert page_tables(PAGE.read_text()) == render(), 'run python -m benchmarks.layer_decay_tables'


def iter_recipe_groups(groups) -> Iterator[Tuple[int, float, float, int]]:
    """(depth, lr scale, weight decay, number of parameters) of each group."""
    for g in groups:
        yield g['layer_id'], g['lr_scale'], g['weight_decay'], len(g['params'])


def test_groups_are_one_per_depth_and_decay_and_keep_names_for_torch():
    model = MAFormer(**TINY_CFG)
    groups = build_groups(model)
    assert [(d, wd) for d, _, wd, _ in iter_recipe_groups(groups)] == [
        (d, wd) for d in range(7) for wd in (0.0, 0.05) if (d, wd) != (6, 0.05)
    ]
    names = [n for g in groups for n in g['param_names']]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    optimizer = torch.optim.AdamW(groups, lr=1e-4)  # torch keeps param_names (its own key) in its state_dict
    assert optimizer.state_dict()['param_groups'][0]['param_names'] == groups[0]['param_names']
