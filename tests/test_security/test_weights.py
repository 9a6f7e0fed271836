"""Backbone weights as plain data: safetensors files written by tools/convert_checkpoint.py and read through
`init_cfg` with every loader check, and `--trust` only for a named file, with a warning."""

import argparse
import importlib.util

import pytest
import torch
from safetensors.torch import save_file

from maformer_mm.checkpoint.safe_load import load_weights
from maformer_mm.models import MAFormer
from tests.helpers import REPO
from tests.test_security.crafted import write_crafted


def _convert(argv):
    spec = importlib.util.spec_from_file_location('security_convert', REPO / 'tools' / 'convert_checkpoint.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def _trained_backbone(tiny_cfg) -> MAFormer:
    model = MAFormer(**tiny_cfg)
    model.init_weights()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    return model


def _pretrained(tiny_cfg, path) -> MAFormer:
    model = MAFormer(**tiny_cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    return model


def test_safetensors_weights_from_the_converter_load_through_init_cfg(tmp_path, tiny_cfg, capsys, mm_log):
    source = _trained_backbone(tiny_cfg)
    src = tmp_path / 'mmpretrain.pth'
    torch.save(
        {'state_dict': {'backbone.' + k: v for k, v in source.state_dict().items()}, 'meta': {'epoch': 300}}, src
    )
    dst = tmp_path / 'published' / 'maformer.safetensors'
    _convert([src, dst, '--safetensors'])
    out = capsys.readouterr().out
    assert f"{src} is in this project's naming: copied {len(source.state_dict())} backbone tensors" in out
    assert f'wrote {dst} (safetensors)' in out
    assert dst.read_bytes()[8:9] == b'{'  # a safetensors header, not a pickle (zip) file
    model = _pretrained(tiny_cfg, dst)
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert f'Loaded {len(source.state_dict())}/{len(source.state_dict())} backbone tensors from {dst}' in mm_log()


def test_safetensors_weights_get_every_loader_check(tmp_path, tiny_cfg):
    none_match = tmp_path / 'head.safetensors'
    save_file({'head.fc.weight': torch.ones(2, 2)}, str(none_match))
    with pytest.raises(KeyError, match='no key matches MAFormer'):
        _pretrained(tiny_cfg, none_match)
    wider = MAFormer(**dict(tiny_cfg, arch=dict(tiny_cfg['arch'], embed_dims=32)))
    wrong = tmp_path / 'wider.safetensors'
    save_file({'backbone.' + k: v.contiguous() for k, v in wider.state_dict().items()}, str(wrong))
    with pytest.raises(ValueError, match=r'size mismatch for patch_embed\.projection\.weight'):
        _pretrained(tiny_cfg, wrong)
    with pytest.raises(FileNotFoundError, match='missing.safetensors'):
        _pretrained(tiny_cfg, tmp_path / 'missing.safetensors')


def test_converter_refuses_a_crafted_source_and_asks_for_trust_only_for_foreign_objects(tmp_path, capsys):
    marker = tmp_path / 'payload_ran'
    crafted = write_crafted('exec_via_history_buffer', tmp_path / 'crafted.pth', marker)
    with pytest.raises(SystemExit, match=rf'{crafted} was refused.*getattr') as refused:
        _convert([crafted, tmp_path / 'out.safetensors'])
    assert '--trust' not in str(refused.value) and 'convert_checkpoint' not in str(refused.value)
    assert not marker.exists() and not (tmp_path / 'out.safetensors').exists()

    timm = tmp_path / 'timm_train.pth'  # timm's train.py saves its arguments: not data, so --trust is asked for
    torch.save(
        {'state_dict': {'patch_embed.proj.weight': torch.ones(16, 3, 4, 4)}, 'args': argparse.Namespace(lr=1e-3)}, timm
    )
    with pytest.raises(
        SystemExit,
        match=r"GLOBAL argparse\.Namespace .*This looks like a checkpoint of timm's "
        r'train\.py.*convert_checkpoint\.py .*timm_train\.pth OUT\.safetensors '
        r'--trust',
    ):
        _convert([timm, tmp_path / 'w.pth'])
    _convert([timm, tmp_path / 'w.pth', '--trust'])
    assert 'WARNING: --trust: ' in capsys.readouterr().err
    assert set(load_weights(tmp_path / 'w.pth')['state_dict']) == {'backbone.patch_embed.projection.weight'}


def test_safetensors_flag_needs_the_extension(tmp_path):
    with pytest.raises(SystemExit, match=r'--safetensors: .*w\.pth must end in \.safetensors'):
        _convert([tmp_path / 'any.pth', tmp_path / 'w.pth', '--safetensors'])
