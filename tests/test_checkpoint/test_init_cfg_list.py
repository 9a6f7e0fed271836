"""A Pretrained entry in a list init_cfg goes through the strict backbone loader, after the other entries."""

import pytest
import torch

from maformer_mm.models import MAFormer


def _checkpoint(tmp_path, tiny_cfg, state=None):
    source = MAFormer(**tiny_cfg)
    source.init_weights()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    path = tmp_path / 'w.pth'
    torch.save(
        {'state_dict': state if state is not None else {'backbone.' + k: v for k, v in source.state_dict().items()}},
        path,
    )
    return source, path


def test_pretrained_in_a_list_init_cfg_loads_strictly_after_the_other_entries(tmp_path, tiny_cfg, mm_log):
    source, path = _checkpoint(tmp_path, tiny_cfg)
    model = MAFormer(
        **tiny_cfg,
        init_cfg=[
            dict(type='Constant', layer='LayerNorm', val=3.0, bias=2.0),
            dict(type='Pretrained', checkpoint=str(path)),
        ],
    )
    model.init_weights()
    for key, value in source.state_dict().items():  # the checkpoint wins over the Constant init
        assert torch.equal(model.state_dict()[key], value), key
    assert 'Loaded ' in mm_log() and 'backbone tensors from' in mm_log()  # our loader, with its report
    assert model.init_cfg[1]['type'] == 'Pretrained'  # the config is left as given


def test_pretrained_in_a_list_init_cfg_gets_the_strict_loaders_errors(tmp_path, tiny_cfg):
    _, path = _checkpoint(tmp_path, tiny_cfg, state={'head.fc.weight': torch.ones(2, 2)})
    model = MAFormer(
        **tiny_cfg,
        init_cfg=[dict(type='Pretrained', checkpoint=str(path)), dict(type='Constant', layer='LayerNorm', val=1.0)],
    )
    with pytest.raises(KeyError, match='no key matches MAFormer'):  # mmengine's loader would load nothing, silently
        model.init_weights()
    two = MAFormer(**tiny_cfg, init_cfg=[dict(type='Pretrained', checkpoint=str(path))] * 2)
    with pytest.raises(ValueError, match='2 Pretrained entries'):
        two.init_weights()
