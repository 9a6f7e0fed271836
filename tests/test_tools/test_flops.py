from pathlib import Path

import pytest
import torch
from mmengine.analysis import FlopAnalyzer

from maformer_mm.layers import CrossAttention, set_fused_attn
from maformer_mm.models import MAFormer
from maformer_mm.utils.cli import config_path
from maformer_mm.utils.flops import complexity
from tools.get_flops import backbone_rows, main


def test_sdpa_is_counted_like_the_explicit_matmuls(tiny_cfg):
    model = MAFormer(**tiny_cfg)
    x = torch.rand(1, 3, 64, 64)
    fused, params = complexity(model, (x, ))
    explicit, _ = complexity(set_fused_attn(model, False), (x, ))
    assert fused == explicit
    assert params == sum(p.numel() for p in model.parameters())
    uncounted = FlopAnalyzer(set_fused_attn(model, True), (x, ))
    uncounted.unsupported_ops_warnings(False)
    assert uncounted.total() < fused  # mmengine alone misses attention


def test_cross_attention_flops_by_hand():
    attn = CrossAttention(8, 2)
    flops, _ = complexity(attn, (torch.rand(1, 10, 8), torch.rand(1, 4, 8)))
    projections = 10 * 8 * 8 + 4 * 8 * 16 + 10 * 8 * 8  # q, kv, proj
    attention = 2 * 10 * 4 * (4 + 4)  # heads * N * M * (d + dv)
    assert flops == projections + attention


def test_backbone_rows_and_cli(capsys):
    (arch, params, flops), = backbone_rows(['tiny'], (224, 224))
    assert arch == 'tiny' and 20 < params < 35 and 4 < flops < 8
    main(['--arch', 't', '--shape', '64'])
    assert '| t |' in capsys.readouterr().out


def test_package_config_names_resolve():
    path = Path(config_path('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py'))
    assert path.is_file() and path.parts[-3:] == ('configs', 'swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert config_path('configs/mask_rcnn_maformer_t.py') == 'configs/mask_rcnn_maformer_t.py'
    with pytest.raises(FileNotFoundError, match="config 'mmseg::swin/nope.py' not found"):
        config_path('mmseg::swin/nope.py')
