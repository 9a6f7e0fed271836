import pytest
import torch

from maformer_mm.checkpoint.state_dict import backbone_state_dict
from maformer_mm.models import MAFormer


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
    'model_ema': lambda sd: {'model_ema': sd, 'epoch': 3},
    'compiled': lambda sd: _prefixed(sd, '_orig_mod.'),
    'ddp_compiled': lambda sd: {'model': _prefixed(sd, 'module._orig_mod.')},
    'compiled_ddp': lambda sd: {'model': _prefixed(sd, '_orig_mod.module.')},  # torch.compile(DDP(model))
    'compiled_detector': lambda sd: {'state_dict': _prefixed(sd, '_orig_mod.backbone.')},
    'backbone_prefix': lambda sd: _prefixed(sd, 'backbone.'),
    'module_prefix': lambda sd: {'model': _prefixed(sd, 'module.')},
    'ddp_detector': lambda sd: {'state_dict': _prefixed(sd, 'module.backbone.')},
    'whole_detector': lambda sd: {
        'state_dict': {
            **_prefixed(sd, 'backbone.'),
            'neck.lateral_convs.0.conv.weight': torch.ones(4, 16, 1, 1),
            'rpn_head.rpn_cls.bias': torch.ones(3),
        },
        'meta': {},
    },
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
    model = _load(tmp_path, {'state_dict': _prefixed(state, 'student.backbone.')}, tiny_cfg, prefix='student.backbone')
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
    assert torch.equal(
        model.state_dict()['stages.2.blocks.0.attn.qkv.weight'], state['stages.2.blocks.0.attn.qkv.weight']
    )
    assert 'Resized stages.0.blocks.0.gld.fc.weight' in mm_log()


def _distinct_states(tiny_cfg, count):
    """`count` state dicts of the same model that differ in every tensor."""
    states = []
    for seed in range(count):
        torch.manual_seed(seed)
        states.append(_source(tiny_cfg)[1])
    return states


def _loaded_index(model, states):
    """Which of `states` the model holds (every tensor equal), or None."""
    loaded = model.state_dict()
    matches = [i for i, s in enumerate(states) if all(torch.equal(loaded[k], v) for k, v in s.items())]
    return matches[0] if len(matches) == 1 else None


def test_state_dict_keys_are_looked_for_in_order(tmp_path, tiny_cfg):
    """With several weight sets in one file, `state_dict` wins over `model`, `model` over `state_dict_ema`,
    `state_dict_ema` over `model_ema`; the order is STATE_DICT_KEYS'."""
    from maformer_mm.checkpoint.state_dict import STATE_DICT_KEYS

    assert STATE_DICT_KEYS == ('state_dict', 'model', 'state_dict_ema', 'model_ema')
    states = _distinct_states(tiny_cfg, 4)
    for first in range(4):
        checkpoint = {key: states[i] for i, key in enumerate(STATE_DICT_KEYS) if i >= first}
        checkpoint['meta'] = {'epoch': 1}
        assert _loaded_index(_load(tmp_path, checkpoint, tiny_cfg), states) == first, STATE_DICT_KEYS[first]
    # a key that holds no mapping is passed over
    checkpoint = {'state_dict': 'not weights', 'model_ema': states[3]}
    assert _loaded_index(_load(tmp_path, checkpoint, tiny_cfg), states) == 3


def test_explicit_prefix_wins_over_backbone_keys(tmp_path, tiny_cfg):
    states = _distinct_states(tiny_cfg, 2)
    checkpoint = {'state_dict': {**_prefixed(states[0], 'backbone.'), **_prefixed(states[1], 'teacher.backbone.')}}
    assert _loaded_index(_load(tmp_path, checkpoint, tiny_cfg), states) == 0
    assert _loaded_index(_load(tmp_path, checkpoint, tiny_cfg, prefix='teacher.backbone.'), states) == 1
