"""Converting timm-style MAFormer checkpoints: the key mapping round-trips into our model, the reordered patch
merging computes what timm's does, and tools/convert_checkpoint.py writes checkpoints our loader and mmpretrain
read, reporting what it dropped."""

import argparse
import re
from typing import Dict

import pytest
import torch
import torch.nn.functional as F

import maformer_mm  # noqa: F401  (registers MAFormer)
from maformer_mm.checkpoint.backbone import load_backbone_checkpoint
from maformer_mm.checkpoint.convert import convert_timm, convert_timm_head, dropped_timm_keys, timm_merge_to_unfold
from maformer_mm.models import MAFormer
from maformer_mm.tools import convert_checkpoint as convert_tool
from tests.helpers import REPO, TINY_ARCH, run_tool

NUM_CLASSES = 5
# Saved by a timm-convention trainer besides the weights: buffers, which are not ours to load.
BUFFERS = ('stages.0.blocks.0.attn.relative_position_index', 'stages.1.blocks.0.attn.relative_position_index')


def make_backbone() -> MAFormer:
    model = MAFormer(arch=TINY_ARCH, pretrain_img_size=64, window_size=4, out_indices=(3,), drop_path_rate=0.0)
    model.init_weights()
    with torch.no_grad():  # no tensor left at a constant, so that any swap or misplaced channel shows
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    return model.eval()


def unfold_to_timm_order(tensor: torch.Tensor) -> torch.Tensor:
    """Our (mmcv unfold) 4C order back to timm's, by explicit indices: timm's slot (2*col+row)*C + c holds our
    4*c + 2*row + col."""
    c = tensor.shape[-1] // 4
    index = torch.empty(4 * c, dtype=torch.long)
    for row in range(2):
        for col in range(2):
            for ch in range(c):
                index[(2 * col + row) * c + ch] = 4 * ch + 2 * row + col
    return tensor[..., index]


def timm_style(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """What a timm-convention trainer would have saved for this model (with a head and buffers)."""
    out = {}
    for key, value in state_dict.items():
        new = key.replace('patch_embed.projection.', 'patch_embed.proj.').replace('.ffn.layers.0.0.', '.mlp.fc1.')
        new = new.replace('.ffn.layers.1.', '.mlp.fc2.').replace('norm3.', 'norm.')
        out[new] = unfold_to_timm_order(value) if '.downsample.' in key else value
    out['head.fc.weight'] = torch.randn(NUM_CLASSES, 128)
    out['head.fc.bias'] = torch.randn(NUM_CLASSES)
    for key in BUFFERS:
        out[key] = torch.arange(49)
    return out


@pytest.fixture(scope='module')
def source():
    torch.manual_seed(0)
    model = make_backbone()
    return model.state_dict(), timm_style(model.state_dict())


def test_every_backbone_key_is_mapped_and_loads_strictly(source):
    ours, timm = source
    converted = convert_timm(timm)
    model = MAFormer(arch=TINY_ARCH, pretrain_img_size=64, window_size=4, out_indices=(3,))
    model.load_state_dict(converted, strict=True)  # everything but the head, nothing left over
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[key]), key
    assert dropped_timm_keys(timm) == ['head.fc.weight', 'head.fc.bias', *BUFFERS]
    assert set(convert_timm_head(timm)) == {'fc.weight', 'fc.bias'}
    assert set(convert_timm_head({'head.weight': torch.zeros(2, 3), 'head.bias': torch.zeros(2)})) == {
        'fc.weight',
        'fc.bias',
    }


def test_converted_patch_merging_computes_what_timm_merging_does():
    torch.manual_seed(0)
    c, x = 8, torch.randn(2, 6, 10, 8)  # B, H, W, C
    norm_w, norm_b, reduction = torch.randn(4 * c), torch.randn(4 * c), torch.randn(2 * c, 4 * c)
    # timm (>= 0.9) Swin PatchMerging: neighbours (row, col) as (0,0), (1,0), (0,1), (1,1), then norm, reduction.
    b, h, w, _ = x.shape
    merged = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
    expected = F.linear(F.layer_norm(merged, (4 * c,), norm_w, norm_b), reduction)

    timm = {
        'stages.1.downsample.norm.weight': norm_w,
        'stages.1.downsample.norm.bias': norm_b,
        'stages.1.downsample.reduction.weight': reduction,
    }
    ours = MAFormer(arch=dict(embed_dims=c, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)), pretrain_img_size=32)
    merging = ours.stages[1].downsample
    merging.load_state_dict({k.split('downsample.')[1]: v for k, v in convert_timm(timm).items()})
    out, out_hw = merging(x.reshape(b, h * w, c), (h, w))
    assert out_hw == (h // 2, w // 2)
    torch.testing.assert_close(out.view(b, h // 2, w // 2, 2 * c), expected)
    torch.testing.assert_close(timm_merge_to_unfold(unfold_to_timm_order(reduction)), reduction)


def test_a_state_dict_already_in_our_naming_is_refused(source):
    ours, _ = source
    with pytest.raises(ValueError, match="already in this project's naming"):
        convert_timm(ours)


def test_cli_writes_a_checkpoint_our_loader_reads_and_reports_drops(source, tmp_path):
    ours, timm = source
    src, dst = tmp_path / 'timm.pth', tmp_path / 'out' / 'maformer.pth'
    torch.save({'model': timm}, src)  # DeiT-style wrapper
    proc = run_tool([REPO / 'tools' / 'convert_checkpoint.py', src, dst], cwd=tmp_path)
    n_backbone = len(ours)
    assert f'mapped {n_backbone} of {len(timm)} keys to the backbone; dropped 4: ' in proc.stdout
    assert re.search(r"dropped 4: \['head\.fc\.weight', 'head\.fc\.bias', .*relative_position_index", proc.stdout)
    written = torch.load(dst, map_location='cpu')
    assert set(written) == {'state_dict'} and all(k.startswith('backbone.') for k in written['state_dict'])
    model = MAFormer(arch=TINY_ARCH, pretrain_img_size=64, window_size=4, out_indices=(3,))
    result = load_backbone_checkpoint(model, str(dst))
    assert not result.missing_keys and not result.unexpected_keys
    for key, value in model.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_cli_takes_ema_weights_and_head_for_mmpretrain(source, tmp_path):
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmpretrain.registry import MODELS

    ours, timm = source
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in timm.items()}
    src, dst = tmp_path / 'timm_train.pth', tmp_path / 'maformer_ema.pth'
    # timm's train.py also saves its argparse arguments, which torch's safe loader refuses.
    torch.save({'state_dict': timm, 'state_dict_ema': ema, 'args': argparse.Namespace(lr=1e-3), 'epoch': 299}, src)
    with pytest.raises(SystemExit, match='--trust'):
        convert_tool.load_source(str(src), ema=False, trust=False)

    proc = run_tool(
        [REPO / 'tools' / 'convert_checkpoint.py', src, dst, '--trust', '--ema', '--keep-head'], cwd=tmp_path
    )
    assert 'kept the head (2 keys); dropped 2: ' in proc.stdout
    init_default_scope('mmpretrain')
    classifier = MODELS.build(
        dict(
            type='ImageClassifier',
            backbone=dict(type='MAFormer', arch=TINY_ARCH, pretrain_img_size=64, window_size=4, out_indices=(3,)),
            neck=dict(type='GlobalAveragePooling'),
            head=dict(type='LinearClsHead', num_classes=NUM_CLASSES, in_channels=128),
        )
    )
    load_checkpoint(classifier, str(dst), map_location='cpu', strict=True)
    torch.testing.assert_close(classifier.head.fc.weight, ema['head.fc.weight'])
    for key, value in classifier.backbone.state_dict().items():
        assert torch.equal(value, ours[key] + 1), key
