"""The shipped configs by name, and inheriting them with `maformer_mm::`: parsed, and their host types built in
the host's registries (mmdet's LoadAnnotations for a detection config, mmseg's for a segmentation one), with no
registry warning."""

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import HOOKS, PARAM_SCHEDULERS, TRANSFORMS, DefaultScope, init_default_scope

import maformer_mm  # noqa: F401  (registers the package with mmengine's config table)
from maformer_mm.config.zoo import config_dir, list_configs, model_index, resolve_config
from maformer_mm.registry import SCOPE, host_scope
from maformer_mm.tools.configs import main as configs_main
from tests.helpers import REPO, memoised_package_config_index


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    with memoised_package_config_index():
        yield


def test_configs_are_listed_by_name_and_resolved():
    names = list_configs()
    assert 'mask_rcnn_maformer_t.py' in names and 'examples/upernet_maformer_t_my_seg.py' in names
    assert not [n for n in names if '_base_' in n]
    expected = str(config_dir() / 'mask_rcnn_maformer_t.py')
    for name in ('mask_rcnn_maformer_t', 'mask_rcnn_maformer_t.py', 'maformer_mm::maformer/mask_rcnn_maformer_t.py'):
        assert resolve_config(name) == expected, name
    assert config_dir().resolve() == (REPO / 'configs').resolve()  # in a checkout: the link to configs/
    here = str(REPO / 'configs' / 'retinanet_maformer_s.py')
    assert resolve_config(here) == here  # a path wins
    with pytest.raises(
        FileNotFoundError,
        match=r'no config of maformer_mm is named mask_rcnn_maformer_q.py '
        r'\(similar: .*mask_rcnn_maformer_t.py',
    ):
        resolve_config('mask_rcnn_maformer_q')


def test_every_config_has_one_model_index_entry(capsys):
    index = model_index()
    assert sorted(index) == list_configs()
    entry = index['mask_rcnn_maformer_t.py']
    assert entry['Metadata']['Training Data'] == 'COCO' and entry['Metadata']['Epochs'] == 12
    assert {r['Task'] for r in entry['Results']} == {'Object Detection', 'Instance Segmentation'}
    assert index['upernet_maformer_t_512x512_160k_ade20k.py']['Metadata']['Iterations'] == 160000
    assert configs_main(['upernet']) == [n for n in list_configs() if 'upernet' in n]
    assert 'Semantic Segmentation' in capsys.readouterr().out


def test_model_index_params_are_the_built_models(tmp_path):
    """Params of one config per task, counted on the model its config builds."""
    from mmengine.analysis import parameter_count
    from mmengine.registry import MODELS

    from maformer_mm.analysis.complexity import config_complexity  # noqa: F401

    index = model_index()
    for name in ('retinanet_maformer_t.py', 'upernet_maformer_t_512x512_160k_ade20k.py', 'maformer_t_in1k.py'):
        cfg = Config.fromfile(resolve_config(name))
        init_default_scope(cfg.default_scope)
        params = parameter_count(MODELS.build(cfg.model))['']
        assert index[name]['Metadata']['Parameters'] == f'{params / 1e6:.1f}M', name


def _inheriting(tmp_path, base: str) -> Config:
    path = tmp_path / 'mine.py'
    path.write_text(f"_base_ = ['maformer_mm::maformer/{base}']\n")
    return Config.fromfile(str(path))


@pytest.mark.parametrize(
    'base, host, loader',
    [
        ('mask_rcnn_maformer_t_demo.py', 'mmdet', 'mmdet.datasets.transforms.loading'),
        ('upernet_maformer_t_demo.py', 'mmseg', 'mmseg.datasets.transforms.loading'),
    ],
)
def test_inherited_configs_build_their_host_types_without_warnings(tmp_path, mm_log, base, host, loader):
    cfg = _inheriting(tmp_path, base)
    assert cfg.custom_hooks[0]._scope_ == SCOPE  # mmengine marks what the base defines itself with our scope
    init_default_scope(cfg.default_scope)
    assert cfg.default_scope == host
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = PARAM_SCHEDULERS.build(cfg.param_scheduler[0], default_args=dict(optimizer=optimizer))
    assert type(scheduler).__name__ == 'LinearLR'
    assert type(HOOKS.build(cfg.custom_hooks[0])).__name__ == 'InvalidLossHook'
    load = next(t for t in cfg.train_pipeline if t['type'] == 'LoadAnnotations')
    assert load.get('_scope_') in (SCOPE, host)
    assert type(TRANSFORMS.build(load)).__module__ == loader  # the host's LoadAnnotations, not mmcv's
    assert 'Failed to search registry' not in mm_log() and 'is not installed' not in mm_log()


def test_the_host_scope_is_the_one_before_ours():
    init_default_scope('mmseg')
    with DefaultScope.overwrite_default_scope(SCOPE):
        assert DefaultScope.get_current_instance().scope_name == SCOPE
        assert host_scope() == 'mmseg'
    assert host_scope() == 'mmseg'
