"""benchmarks/cuda_benchmark.py: its code paths at tiny sizes on CPU (AMP is bf16 there, memory is not
measured), and a short real run on CUDA. Nothing is timed: structure and machine-independent values."""

import json
import math

import pytest
import torch

from benchmarks import cuda_benchmark
from maformer_mm.models import MAFormer
from tests.helpers import TINY_CFG
from tests.test_gpu import requires_cuda

FLASH_CPU = ['_scaled_dot_product_flash_attention_for_cpu']


def run(tmp_path, device: str, *args: str) -> dict:
    out = tmp_path / 'cuda_results.md'
    res = cuda_benchmark.main(['--device', device, '--backbones', 'MAFormer-T', 'Swin-T', *args, '--out', str(out)])
    assert json.loads((tmp_path / 'cuda_results.json').read_text()) == json.loads(json.dumps(res))
    res['text'] = out.read_text()
    return res


def check_rows(res: dict, sizes, precisions, detectors, det_size) -> None:
    rows = res['backbones']
    assert [(r['model'], r['size'], r['batch'], r['precision']) for r in rows] == [
        (m, [h, w], b, p) for h, w, b in sizes for p in precisions for m in ('MAFormer-T', 'Swin-T')
    ]
    for r in rows:
        assert r['infer_ips'] > 0 and r['train_ips'] > 0
        if r['model'] == 'Swin-T':  # its own reference
            assert r['infer_ips_ratio'] == r['train_ips_ratio'] == 1
    det = res['detectors']
    assert [(r['model'], r['precision']) for r in det] == [(m, p) for p in precisions for m in detectors]
    for r in det:
        assert r['size'] == list(det_size) and r['batch'] == 2 and r['iter_s'] > 0 and math.isfinite(r['loss'])
        ref = [x for x in det if x['model'] == 'Swin-T' and x['precision'] == r['precision']]
        assert r['iter_s_ratio'] == (r['iter_s'] / ref[0]['iter_s'] if ref else None)


def test_code_paths_on_cpu(tmp_path, monkeypatch):
    # small: fp32 only (bf16 autocast is ~10x slower than fp32 on CPUs without bf16 units; AMP: next test),
    # one Mask R-CNN iteration without its Swin reference (the ratios then stay empty)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', False)
    rng = torch.get_rng_state()
    res = run(
        tmp_path,
        'cpu',
        '--backbone-sizes',
        '32x48:2',
        '--detectors',
        'MAFormer-T (window)',
        '--det-size',
        '64x96',
        '--precisions',
        'fp32',
        '--warmup',
        '0',
        '--repeats',
        '1',
    )
    # the run leaves the pytest process as it found it
    assert torch.backends.cudnn.benchmark is False and torch.equal(torch.get_rng_state(), rng)
    check_rows(res, [(32, 48, 2)], ['fp32'], ['MAFormer-T (window)'], (64, 96))
    assert all(r['train_peak_mib'] is None for r in res['backbones'])  # CUDA only
    # in training CPU flash attention gives the window attention's bias no gradient: math fallback
    assert res['kernels'] == {
        'fp32 inference': {'window': FLASH_CPU, 'cross': FLASH_CPU, 'global': FLASH_CPU},
        'fp32 training': {'window': ['math'], 'cross': FLASH_CPU, 'global': FLASH_CPU},
    }
    text = res['text']
    assert text.startswith('# CUDA benchmark: ') and '| fp32 training | math |' in text
    assert '| MAFormer-T | 32x48 | 2 | fp32 |' in text and '## Mask R-CNN training iteration (96x64, batch 2)' in text
    assert '| Mask R-CNN MAFormer-T (window) | fp32 |' in text


def test_amp_calls_and_optimizer_wrappers():
    model = MAFormer(**TINY_CFG)
    dtypes = []
    model.patch_embed.projection.register_forward_hook(lambda mod, args, out: dtypes.append(out.dtype))
    infer, train = cuda_benchmark.backbone_calls({'tiny': model}, torch.rand(2, 3, 64, 64), 'amp', 'cpu')
    infer['tiny']()
    assert not model.training and dtypes == [torch.bfloat16]
    train['tiny']()
    assert model.training and dtypes[1] == torch.bfloat16 and all(p.grad is None for p in model.parameters())
    base = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    assert cuda_benchmark.optim_wrapper_cfg(base, 'amp', 'cuda') == dict(
        base, type='AmpOptimWrapper', loss_scale='dynamic'
    )
    assert cuda_benchmark.optim_wrapper_cfg(base, 'amp', 'cpu') == dict(
        base, type='BF16OptimWrapper', scope='backbone', device_type='cpu'
    )
    assert cuda_benchmark.optim_wrapper_cfg(base, 'fp32', 'cuda') == base


@pytest.mark.parametrize('before', [False, True])
def test_process_state_is_restored_also_on_error(before, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', before)
    rng = torch.get_rng_state()
    with pytest.raises(RuntimeError, match='stop'):
        with cuda_benchmark.process_state_restored('cpu'):
            torch.manual_seed(123)
            torch.backends.cudnn.benchmark = not before
            assert torch.backends.cudnn.benchmark is not before  # settable without a GPU
            raise RuntimeError('stop')
    assert torch.backends.cudnn.benchmark is before and torch.equal(torch.get_rng_state(), rng)


def test_refuses_cuda_without_a_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(cuda_benchmark.torch.cuda, 'is_available', lambda: False)
    with pytest.raises(SystemExit):
        cuda_benchmark.main(['--out', str(tmp_path / 'x.md')])
    assert not (tmp_path / 'x.md').exists()


@requires_cuda
def test_short_run_on_cuda(tmp_path):
    res = run(
        tmp_path,
        'cuda',
        '--backbone-sizes',
        '224:8',
        '--detectors',
        'MAFormer-T (window)',
        'Swin-T',
        '--det-size',
        '320x480',
        '--warmup',
        '1',
        '--repeats',
        '2',
    )
    check_rows(res, [(224, 224, 8)], ['fp32', 'amp'], ['MAFormer-T (window)', 'Swin-T'], (320, 480))
    assert all(r['train_peak_mib'] > 0 for r in res['backbones'])
    assert all(r['peak_mib'] > 0 for r in res['detectors'])
    assert res['text'].startswith(f'# CUDA benchmark: {cuda_benchmark.torch.cuda.get_device_name()}')
    assert 'AmpOptimWrapper, dynamic loss scale' in res['text']
    for kernels in res['kernels'].values():
        assert 'math' not in sum(kernels.values(), [])  # every attention runs a fused kernel


def test_quick_mode_chooses_the_first_numbers_and_yields_to_explicit_options():
    quick = cuda_benchmark.parse_args(['--quick', '--device', 'cpu'])
    assert quick.mode == 'quick' and quick.backbones == ['MAFormer-T', 'Swin-T'] and quick.det_precisions == ['amp']
    assert (quick.warmup, quick.repeats) == (2, 5) and quick.precisions == ['fp32', 'amp']
    assert quick.backbone_sizes == ['224:64', '800x1333:2'] and quick.det_size == '800x1333' and quick.det_batch == 2
    assert quick.detectors == list(cuda_benchmark.DETECTORS)  # MAFormer-T global and window against Swin-T
    full = cuda_benchmark.parse_args(['--device', 'cpu'])
    assert full.mode == 'full' and full.backbones == list(cuda_benchmark.BACKBONES)
    assert full.det_precisions == full.precisions == ['fp32', 'amp'] and (full.warmup, full.repeats) == (3, 10)
    mine = cuda_benchmark.parse_args(['--quick', '--device', 'cpu', '--backbones', 'MAFormer-S', '--repeats', '1'])
    assert mine.backbones == ['MAFormer-S'] and mine.repeats == 1 and mine.warmup == 2
    assert cuda_benchmark.parse_args(['--device', 'cpu', '--precisions', 'fp32']).det_precisions == ['fp32']


def test_no_detectors_builds_nothing(monkeypatch):
    # gpu_check.sh's reduced set passes `--detectors` alone: no batch, no mmdet.models (mmcv's ops)
    def made(*args, **kwargs):
        raise AssertionError('a detection batch was made')

    monkeypatch.setattr(cuda_benchmark, 'detection_batch', made)
    assert cuda_benchmark.measure_detectors([], (64, 64), 2, ['amp'], 0, 1, 'cpu') == []
    assert cuda_benchmark.measure_detectors(['Swin-T'], (64, 64), 2, [], 0, 1, 'cpu') == []
