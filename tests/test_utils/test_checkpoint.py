import pytest
import torch

from maformer_mm.models import MAFormer
from maformer_mm.utils.checkpoint import backbone_state_dict


def _source(tiny_cfg):
    model = MAFormer(**tiny_cfg)
    model.init_weights()
    return model, model.state_dict()


def _load(tmp_path, checkpoint, tiny_cfg, **init):
    path = tmp_path / 'ckpt.pth'
    torch.save(checkpoint, path)
    model = MAFormer(**tiny_cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path), **init))
    model.init_weights()
    return model


def _prefixed(state_dict, prefix):
    return {prefix + k: v for k, v in state_dict.items()}


FORMS = {
    'raw': lambda sd: sd,
    'model': lambda sd: {'model': sd, 'epoch': 3},
    'state_dict': lambda sd: {'state_dict': sd, 'meta': {'epoch': 3}},
    'state_dict_ema': lambda sd: {'state_dict_ema': sd},
    'backbone_prefix': lambda sd: _prefixed(sd, 'backbone.'),
    'module_prefix': lambda sd: {'model': _prefixed(sd, 'module.')},
    'ddp_detector': lambda sd: {'state_dict': _prefixed(sd, 'module.backbone.')},
    'whole_detector': lambda sd: {'state_dict': {**_prefixed(sd, 'backbone.'),
                                                 'neck.lateral_convs.0.conv.weight': torch.ones(4, 16, 1, 1),
                                                 'rpn_head.rpn_cls.bias': torch.ones(3)},
                                  'meta': {}},
}


@pytest.mark.parametrize('form', sorted(FORMS))
def test_checkpoint_forms_round_trip(tmp_path, tiny_cfg, form):
    _, state = _source(tiny_cfg)
    model = _load(tmp_path, FORMS[form](state), tiny_cfg)
    loaded = model.state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


def test_explicit_prefix(tmp_path, tiny_cfg):
    _, state = _source(tiny_cfg)
    model = _load(tmp_path, {'state_dict': _prefixed(state, 'student.backbone.')}, tiny_cfg,
                  prefix='student.backbone')
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_pure_unwrap_keeps_only_backbone_keys():
    sd = backbone_state_dict({'state_dict': {'backbone.a': torch.ones(1), 'neck.b': torch.ones(1)}})
    assert list(sd) == ['a']


def test_no_matching_key_raises(tmp_path, tiny_cfg):
    with pytest.raises(KeyError, match='no key matches MAFormer'):
        _load(tmp_path, {'state_dict': {'head.fc.weight': torch.ones(2, 2)}}, tiny_cfg)


def test_mismatched_shapes_raise_naming_them(tmp_path, tiny_cfg):
    other = dict(tiny_cfg, arch=dict(tiny_cfg['arch'], embed_dims=32))
    _, state = _source(other)
    with pytest.raises(ValueError, match=r'size mismatch for patch_embed\.projection\.weight.*\[32, 3, 4, 4\]'):
        _load(tmp_path, state, tiny_cfg)


def test_missing_file_is_named(tiny_cfg):
    model = MAFormer(**tiny_cfg, init_cfg=dict(type='Pretrained', checkpoint='/nonexistent/w.pth'))
    with pytest.raises(FileNotFoundError, match='/nonexistent/w.pth'):
        model.init_weights()


def test_partial_load_reports_missing_and_unexpected(tmp_path, tiny_cfg, mm_log):
    _, state = _source(tiny_cfg)
    state = dict(state)
    state.pop('norm3.weight')
    state['extra.weight'] = torch.ones(1)
    _load(tmp_path, state, tiny_cfg)
    text = mm_log()
    assert 'norm3.weight' in text and 'extra.weight' in text


def test_window_and_reference_grid_changes_are_interpolated(tmp_path, tiny_cfg, mm_log):
    _, state = _source(tiny_cfg)
    target = dict(tiny_cfg, window_size=6, pretrain_img_size=96)
    model = _load(tmp_path, state, target)
    block = model.stages[0].blocks[0]
    assert block.attn.relative_position_bias_table.shape == (11 * 11, 1)
    assert block.gld.fc.weight.shape == (17 * 17, 24 * 24)
    # everything without a grid is copied as is
    assert torch.equal(model.state_dict()['stages.2.blocks.0.attn.qkv.weight'],
                       state['stages.2.blocks.0.attn.qkv.weight'])
    assert 'Resized stages.0.blocks.0.gld.fc.weight' in mm_log()
