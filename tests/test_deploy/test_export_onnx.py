"""tools/deploy/export_onnx.py on tiny models: every export kind at a small size, verified in ONNX Runtime;
dynamic exports verified at sizes other than the export size (whole detectors: test_whole_detectors.py); the
fixed-size fallback for window-mode blocks; a verify that fails raises, and the tool then exits with an error;
detector parts without an export form are named. Each export costs seconds, so each test covers one kind and one
more property."""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from maformer_mm.config.zoo import load_config
from maformer_mm.deploy import OnnxVerificationError, build_model, build_target, verify_onnx
from maformer_mm.deploy.exportable import ExportableAdaptiveAvgPool2d, make_exportable
from maformer_mm.layers import export_forms
from maformer_mm.tools import export_onnx as tool
from tests.helpers import MIN_ARCH, backbone_override, widths

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
ARCH = dict(MIN_ARCH, num_heads=(1, 2, 2, 4))  # several heads: the export handles their split and merge
TINY_BACKBONE = backbone_override(ARCH, 64, window_size=4, drop_path_rate=0.0)
# Small configs of each kind, inheriting the project's configs by path as a user's config would.
TINY = {
    'classification': f"""_base_ = [{str(CONFIGS / 'maformer_t_in1k.py')!r}]
model = dict({TINY_BACKBONE}, head=dict(in_channels=128, num_classes=10))
""",
    'segmentation': f"""_base_ = [{str(CONFIGS / 'upernet_maformer_t_demo.py')!r}]
model = dict({TINY_BACKBONE}, decode_head=dict(in_channels={widths(ARCH)}, channels=16),
             auxiliary_head=dict(in_channels=64, channels=16))
""",
    'detection': f"""_base_ = [{str(CONFIGS / 'mask_rcnn_maformer_t_demo.py')!r}]
model = dict({TINY_BACKBONE}, neck=dict(in_channels={widths(ARCH)}, out_channels=16))
""",
}
SHAPE = (64, 96)  # the GLD grids are made for 64x64: the width shrinks to them


@pytest.fixture(scope='module')
def configs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp('configs')
    paths = {}
    for kind, text in TINY.items():
        paths[kind] = root / f'{kind}.py'
        paths[kind].write_text(text)
    return paths


def _outputs(path: Path, images: np.ndarray) -> dict:
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {session.get_inputs()[0].name: images})))


def _export(capsys, *args) -> str:
    tool.main([str(a) for a in args])
    return capsys.readouterr().out


def _export_dynamic(capsys, config: Path, path: Path, verify_shapes: tuple, *extra: str) -> str:
    """Exports `config` at SHAPE with symbolic H and W, verified at SHAPE and at `verify_shapes` (h, w, h, w...)."""
    return _export(capsys, config, '--shape', *SHAPE, '--out', path, '--dynamic', '--verify', '--verify-shapes',
                   *verify_shapes, *extra)  # fmt: skip


def test_classifier_from_a_checkpoint(configs, tmp_path, capsys):
    """The logits of the checkpoint's weights, not of a fresh random model; metadata says how to normalise.
    (The legacy exporter, which is faster: the other exports use the default one.)"""
    cfg = load_config(str(configs['classification']))
    model = build_model(cfg)
    ckpt = tmp_path / 'cls.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    out = _export(
        capsys,
        configs['classification'],
        ckpt,
        '--shape',
        *SHAPE,
        '--out',
        tmp_path / 'cls.onnx',
        '--verify',
        '--exporter',
        'legacy',
    )
    assert f'{SHAPE[0]}x{SHAPE[1]} logits (1, 10): max |onnx - torch|' in out and 'Verified' in out
    images = torch.randn(1, 3, *SHAPE)
    with torch.no_grad():
        expected = model(images, mode='tensor').numpy()
    logits = _outputs(tmp_path / 'cls.onnx', images.numpy())['logits']
    np.testing.assert_allclose(logits, expected, atol=1e-4 * np.abs(expected).max())
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / 'cls.onnx')).metadata_props}
    assert meta['kind'] == 'classification' and meta['checkpoint'] == str(ckpt)
    assert meta['mean'] == '[123.675, 116.28, 103.53]' and meta['bgr_to_rgb'] == 'true'
    assert meta['exporter'] == 'legacy' and meta['dynamic_hw'] == 'false'


def test_detector_exports_backbone_and_neck(configs, tmp_path, capsys):
    path = tmp_path / 'det.onnx'
    out = _export(capsys, configs['detection'], '--shape', *SHAPE, '--out', path, '--verify', '--neck-only')
    assert 'random weights' in out and out.count(': max |onnx - torch|') == 5
    outputs = _outputs(path, np.random.randn(1, 3, *SHAPE).astype(np.float32))
    assert {name: a.shape for name, a in outputs.items()} == {
        'fpn0': (1, 16, 16, 24),
        'fpn1': (1, 16, 8, 12),
        'fpn2': (1, 16, 4, 6),
        'fpn3': (1, 16, 2, 3),
        'fpn4': (1, 16, 1, 2),
    }


def test_dynamic_segmentor_is_verified_at_other_sizes(configs, tmp_path, capsys):
    """One file for every size: odd sizes that pad windows and merges differently and make the GLD grids
    shrink on one axis and grow on the other; the pyramid pooling of UperNet's head follows the size too."""
    path = tmp_path / 'seg.onnx'
    out = _export_dynamic(capsys, configs['segmentation'], path, (45, 121, 130, 37))
    for h, w in [SHAPE, (45, 121), (130, 37)]:
        assert f'{h}x{w} seg_logits (1, 3, {(h + 3) // 4}, {(w + 3) // 4}): max |onnx - torch|' in out
    assert 'FAILED' not in out
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 3, 'height', 'width']


def test_backbone_only_and_the_fixed_size_fallback_of_window_mode(configs, tmp_path, capsys):
    """The backbone's maps; window-mode ViT blocks cannot be dynamic, so the tool says why and exports at
    the fixed size, which it verifies."""
    path = tmp_path / 'backbone.onnx'
    out = _export(
        capsys,
        configs['detection'],
        '--shape',
        *SHAPE,
        '--out',
        path,
        '--backbone-only',
        '--dynamic',
        '--verify',
        '--cfg-options',
        'model.backbone.vit_window_size=2',
    )
    assert 'cannot be dynamic' in out and 'vit_window_size > 0' in out and f'fixed size {SHAPE[0]}x{SHAPE[1]}' in out
    assert out.count(': max |onnx - torch|') == 4 and 'Verified' in out
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, *SHAPE]
    outputs = _outputs(path, np.random.randn(1, 3, *SHAPE).astype(np.float32))
    assert {name: a.shape for name, a in outputs.items()} == {
        f'stage{i}': (1, 16 * 2**i, 16 // 2**i, 24 // 2**i) for i in range(4)
    }


def test_verify_fails_on_a_perturbed_model_and_a_corrupted_file(configs, tmp_path, capsys):
    cfg = load_config(str(configs['detection']))
    target = build_target(cfg, backbone_only=True)
    path = tmp_path / 'backbone.onnx'
    from maformer_mm.deploy import export_onnx

    export_onnx(target, str(path), SHAPE, exporter='legacy')  # the fast exporter: the file only has to be valid
    verify_onnx(str(path), target.module, target.output_names, [SHAPE], log=lambda line: None)
    with torch.no_grad():
        target.module.backbone.stages[3].blocks[0].attn.proj.weight.mul_(1.01)  # a 1% change in one layer
    with pytest.raises(OnnxVerificationError, match='stage3 .* FAILED'):
        verify_onnx(str(path), target.module, target.output_names, [SHAPE], log=lambda line: None)

    corrupted = tmp_path / 'corrupted.onnx'
    corrupted.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(OnnxVerificationError, match='cannot load'):
        verify_onnx(str(corrupted), target.module, target.output_names, [SHAPE])


def test_the_tool_exits_with_an_error_when_verify_fails(configs, tmp_path, monkeypatch, capsys):
    """A file that ONNX Runtime cannot run (written here in place of the export) stops the tool loudly."""
    monkeypatch.setattr(tool, 'export_onnx', lambda target, path, *a, **k: Path(path).write_bytes(b'not onnx'))
    with pytest.raises(SystemExit) as exit_info:
        tool.main(
            [
                str(configs['detection']),
                '--shape',
                '64',
                '--out',
                str(tmp_path / 'x.onnx'),
                '--verify',
                '--backbone-only',
            ]
        )
    assert exit_info.value.code == 1
    assert 'VERIFY FAILED' in capsys.readouterr().err


def test_bad_arguments_are_named(tmp_path):
    out = ['--out', str(tmp_path / 'x.onnx')]
    with pytest.raises(ValueError, match=r'--shape takes H W or one side, positive, got \[0, 64\]'):
        tool.main(['no_config.py', '--shape', '0', '64', *out])
    with pytest.raises(ValueError, match='--shape takes H W or one side'):
        tool.main(['no_config.py', '--shape', '64', '64', '64', *out])
    with pytest.raises(ValueError, match='--verify-shapes'):
        tool.main(['no_config.py', '--shape', '64', '--verify-shapes', '45', '121', '130', *out])


@pytest.mark.parametrize('size', [1, 2, 3, 6])
def test_pyramid_pooling_stand_in_is_adaptive_avg_pool(size):
    """What `make_exportable` puts in UperNet's head: the parent module eagerly, matrices in an export graph."""
    holder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(size))
    assert make_exportable(holder) == ['0'] and isinstance(holder[0], ExportableAdaptiveAvgPool2d)
    reference = torch.nn.AdaptiveAvgPool2d(size)
    for hw in [(2, 2), (5, 7), (16, 16), (17, 3)]:
        x = torch.randn(1, 4, *hw)
        assert torch.equal(holder(x), reference(x))
        with export_forms():
            torch.testing.assert_close(holder(x), reference(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    'kind, first_output', [('classification', 'logits (1, 10)'), ('detection', 'fpn0 (1, 16, 12, 31)')]
)
def test_dynamic_classifier_and_detector_are_verified_at_another_size(configs, tmp_path, capsys, kind, first_output):
    """The other two kinds exported with symbolic H and W, checked in ONNX Runtime at an odd size that pads
    the windows and merges and makes the GLD grid grow on one axis and shrink on the other."""
    path = tmp_path / f'{kind}.onnx'
    neck = ['--neck-only'] if kind == 'detection' else []
    out = _export_dynamic(capsys, configs[kind], path, (45, 121), *neck)
    assert f'45x121 {first_output}: max |onnx - torch|' in out and 'Verified' in out and 'FAILED' not in out
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 3, 'height', 'width']


@pytest.mark.parametrize(
    'option, message',
    [
        ('model.test_cfg.rcnn.nms.type=soft_nms', r"test_cfg.rcnn: nms type 'soft_nms'; only mmcv's 'nms' has an ONNX"),
        ('model.roi_head.bbox_roi_extractor.roi_layer.pool_mode=max', 'only RoIAlign with pool_mode "avg"'),
        ('model.rpn_head.bbox_coder.type=TBLRBBoxCoder', 'rpn_head: box coder TBLRBBoxCoder; only DeltaXYWHBBoxCoder'),
    ],
)
def test_a_detector_part_without_an_export_form_is_named(configs, tmp_path, option, message):
    """The whole-detector export refuses what it cannot reproduce, naming the part and pointing to --neck-only."""
    from maformer_mm.deploy.detectors import UnsupportedDetector

    with pytest.raises(UnsupportedDetector, match=message + '.*--neck-only'):
        tool.main([str(configs['detection']), '--shape', *map(str, SHAPE), '--out', str(tmp_path / 'x.onnx'),
                   '--cfg-options', option])  # fmt: skip


def test_a_whole_detector_export_size_must_be_padded(configs, tmp_path):
    with pytest.raises(ValueError, match=r'export size 60x96 must be a multiple of 32 .* e.g. 64x96'):
        tool.main([str(configs['detection']), '--shape', '60', '96', '--out', str(tmp_path / 'x.onnx')])
