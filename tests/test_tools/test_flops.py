import re
from pathlib import Path
from typing import Tuple

import pytest
import torch
from mmengine.analysis import ActivationAnalyzer, FlopAnalyzer, complexity_analysis

from maformer_mm.analysis.complexity import backbone_rows, complexity, tensor_forward
from maformer_mm.analysis.sdpa import SDPA_OP
from maformer_mm.config.zoo import load_config
from maformer_mm.layers import CrossAttention, set_fused_attn
from maformer_mm.models import MAFormer
from maformer_mm.tools.get_flops import main


def test_sdpa_is_counted_like_the_explicit_matmuls(tiny_cfg, monkeypatch):
    model = MAFormer(**tiny_cfg)
    x = torch.rand(1, 3, 64, 64)
    fused, params = complexity(model, (x,))
    explicit, _ = complexity(set_fused_attn(model, False), (x,))
    assert fused == explicit
    assert params == sum(p.numel() for p in model.parameters())
    explicit_acts = ActivationAnalyzer(model, (x,)).total()
    # `import maformer_mm` made every analyzer count SDPA, activations as the explicit matmuls' outputs.
    set_fused_attn(model, True)
    assert FlopAnalyzer(model, (x,)).total() == fused
    assert ActivationAnalyzer(model, (x,)).total() == explicit_acts
    monkeypatch.delitem(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS, SDPA_OP)
    uncounted = FlopAnalyzer(model, (x,))
    uncounted.unsupported_ops_warnings(False)
    assert uncounted.total() < fused  # mmengine alone misses attention


def test_importing_maformer_mm_counts_another_models_attention_exactly(monkeypatch):
    """The SDPA handles are process-wide (docs/host_tools.md): mmpretrain's ViT (2 layers, 2 heads of 16 channels,
    16 patches and a class token) counts exactly its two attention products more than mmengine alone does, and
    their outputs as activations."""
    from mmpretrain.models import VisionTransformer

    arch = dict(embed_dims=32, num_layers=2, num_heads=2, feedforward_channels=64)
    vit = VisionTransformer(arch=arch, img_size=32, patch_size=8)
    vit.eval()  # mmpretrain's train() returns None, so not chained
    x = torch.rand(1, 3, 32, 32)
    tokens, layers, heads, width = 4 * 4 + 1, 2, 2, 16
    attention = layers * heads * tokens * tokens * (width + width)  # per head N * M * (d + dv)
    outputs = layers * heads * tokens * (tokens + width)  # per head the N x M scores and the N x dv result
    counted, acts = FlopAnalyzer(vit, (x,)), ActivationAnalyzer(vit, (x,))
    assert counted.by_operator()['scaled_dot_product_attention'] == attention
    assert acts.by_operator()['scaled_dot_product_attention'] == outputs
    total, acts_total = counted.total(), acts.total()
    monkeypatch.delitem(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS, SDPA_OP)
    monkeypatch.delitem(complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS, SDPA_OP)
    alone, acts_alone = FlopAnalyzer(vit, (x,)), ActivationAnalyzer(vit, (x,))
    alone.unsupported_ops_warnings(False)
    acts_alone.unsupported_ops_warnings(False)
    assert total - alone.total() == attention
    assert acts_total - acts_alone.total() == outputs


def test_cross_attention_flops_by_hand():
    attn = CrossAttention(8, 2)
    flops, _ = complexity(attn, (torch.rand(1, 10, 8), torch.rand(1, 4, 8)))
    projections = 10 * 8 * 8 + 4 * 8 * 16 + 10 * 8 * 8  # q, kv, proj
    attention = 2 * 10 * 4 * (4 + 4)  # heads * N * M * (d + dv)
    assert flops == projections + attention


README = Path(__file__).resolve().parents[2] / 'README.md'


def _readme_variant_row(name: str) -> Tuple[str, str]:
    """The (params, FLOPs) cells of a variant in the README's table, e.g. ('26.7M', '5.74G')."""
    row = re.search(rf'^\| \*\*{re.escape(name)}\*\* \|[^|]*\| ([\d.]+M) \| ([\d.]+G) \|', README.read_text(), re.M)
    assert row, f'{name} row not found in README'
    return row.group(1), row.group(2)


def test_backbone_rows_and_cli(capsys):
    """MAFormer-T at 224 counts what the README reports (to 0.1%), and the README shows exactly these numbers."""
    ((arch, params, flops),) = backbone_rows(['tiny'], (224, 224))
    assert arch == 'tiny'
    assert params == pytest.approx(26.679674, rel=1e-3) and flops == pytest.approx(5.738976, rel=1e-3)
    assert _readme_variant_row('MAFormer-T') == (f'{params:.1f}M', f'{flops:.2f}G')
    main(['--arch', 't', '--shape', '64'])
    assert '| t |' in capsys.readouterr().out


@pytest.mark.parametrize('arch, name, count', [('small', 'MAFormer-S', 44764852), ('base', 'MAFormer-B', 86495560)])
def test_parameter_counts_of_the_larger_variants(arch, name, count):
    params = sum(p.numel() for p in MAFormer(arch=arch).parameters())
    assert params == pytest.approx(count, rel=1e-3)
    assert _readme_variant_row(name)[0] == f'{params / 1e6:.1f}M'


def test_package_config_names_resolve():
    cfg = load_config('mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    path = Path(cfg.filename)
    assert path.is_file() and path.parts[-3:] == ('configs', 'swin', 'mask-rcnn_swin-t-p4-w7_fpn_1x_coco.py')
    assert cfg.model.backbone.type == 'SwinTransformer'
    assert load_config('configs/mask_rcnn_maformer_t.py').model.backbone.type == 'MAFormer'
    with pytest.raises(FileNotFoundError, match='swin/nope.py'):
        load_config('mmseg::swin/nope.py')


def test_segmentor_config_complexity(capsys):
    """A whole UperNet through the CLI: its parameter count is the README's (independent of the size)."""
    main(['configs/upernet_maformer_t_512x512_160k_ade20k.py', '--shape', '64', '128'])
    out = capsys.readouterr().out
    assert 'input (H, W): (64, 128)' in out and 'params: 56.99 M' in out  # README: 57.0M
    assert float(re.search(r'FLOPs: ([\d.]+) G', out).group(1)) > 0


@pytest.mark.parametrize('training', [True, False])
def test_tensor_forward_keeps_the_models_mode(training):
    from mmengine.registry import MODELS, init_default_scope

    cfg = load_config('configs/upernet_maformer_t_512x512_160k_ade20k.py')
    cfg.model.backbone.init_cfg = None
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).train(training)
    runnable, x = tensor_forward(model, 'mmseg', (32, 32))
    assert runnable.training is training and runnable.model is model and x.shape == (1, 3, 32, 32)
    assert tensor_forward(model.backbone, 'backbone', (32, 32))[0] is model.backbone
