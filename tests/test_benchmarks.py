"""The benchmark scripts run end to end at small sizes and write consistent reports. Nothing here is
timed: the tests check structure and the values that do not depend on the machine."""

import json

import pytest

from benchmarks import backbone_benchmark, dense_cost


def test_backbone_benchmark_writes_tables_json_and_plot(tmp_path):
    out = tmp_path / 'results.md'
    backbone_benchmark.main(
        [
            '--sizes',
            '64',
            '48x80',
            '--repeats',
            '1',
            '--models',
            'MAFormer-T',
            'Swin-T',
            '--cp-size',
            '128',
            '--out',
            str(out),
        ]
    )
    res = json.loads((tmp_path / 'results_cpu.json').read_text())
    assert (tmp_path / 'results_cpu.png').stat().st_size > 0
    assert not (tmp_path / 'results_cpu.partial.json').exists()
    assert [(r['model'], r['size']) for r in res['rows']] == [
        ('MAFormer-T', [64, 64]),
        ('Swin-T', [64, 64]),
        ('MAFormer-T', [48, 80]),
        ('Swin-T', [48, 80]),
    ]
    for row in res['rows']:
        assert row['gflops'] > 0 and row['infer_s'] > 0 and row['train_s'] > 0
        if row['model'] == 'Swin-T':  # its own reference
            assert row['time_ratio'] == row['infer_time_per_flop_ratio'] == row['train_time_per_flop_ratio'] == 1
    assert set(res['memory']) == {'MAFormer-T', 'Swin-T'} and all(m > 0 for m in res['memory'].values())
    cp = res['with_cp']  # MAFormer-S at --cp-size: activation checkpointing lowers the peak memory
    assert cp['size'] == [128, 128] and cp['peak_mib'] > 0 and cp['peak_mib_ref'] > 0
    # Above weights and gradients (repeatable): 75 -> 26 MiB at 128x128; without checkpointing, 28 at 64x64.
    assert 0 < cp['activation_mib'] < 0.6 * cp['activation_mib_ref']
    assert res['bf16'].startswith('works')
    text = out.read_text()
    assert '| MAFormer-T | 48x80 |' in text and 'No GPU was available' in text


def test_dense_cost_rows_at_a_small_size(tmp_path):
    rows = dense_cost.measure('det', repeats=1, device='cpu', hw=(448, 448))
    by_name = {r['model']: r for r in rows}
    glob, win, swin = (by_name[f'Mask R-CNN {n}'] for n in ('MAFormer-T (global)', 'MAFormer-T (window)', 'Swin-T'))
    assert glob['params_m'] == win['params_m'] == pytest.approx(46.8, abs=0.05)  # README, same weights
    assert swin['params_m'] == pytest.approx(47.8, abs=0.05)
    # a 28x28 stage-3 map: four 14x14 windows cost less attention than one global map
    assert 0 < win['gflops'] < glob['gflops']
    assert swin['flop_ratio'] == swin['time_ratio'] == 1 and glob['flop_ratio'] == glob['gflops'] / swin['gflops']
    text = dense_cost.markdown(rows, 'cpu', 'test machine', 1)
    assert '| Mask R-CNN MAFormer-T (window) | 448x448 | 46.8M |' in text


def test_dense_cost_main_writes_the_segmentation_report(tmp_path, monkeypatch):
    """main() end to end for the UperNet task, at 64x128 instead of 512x2048 (the task's reporting size)."""
    scope, _, configs = dense_cost.TASKS['seg']
    monkeypatch.setitem(dense_cost.TASKS, 'seg', (scope, (64, 128), configs))
    out = tmp_path / 'dense.md'
    dense_cost.main(['--tasks', 'seg', '--repeats', '1', '--out', str(out)])
    rows = json.loads((tmp_path / 'dense_cpu.json').read_text())
    by_name = {r['model']: r for r in rows}
    assert list(by_name) == ['UperNet MAFormer-T (global)', 'UperNet MAFormer-T (window)', 'UperNet Swin-T']
    glob, win, swin = by_name.values()
    assert glob['params_m'] == win['params_m'] == pytest.approx(56.99, abs=0.005)  # README: 57.0M, same weights
    assert swin['params_m'] == pytest.approx(59.9, abs=0.05)
    assert all(r['size'] == [64, 128] and r['gflops'] > 0 and r['infer_s'] > 0 for r in rows)
    # a 4x8 stage-3 map fits in one 14x14 window: window mode is global attention there, at the same cost
    assert win['gflops'] == glob['gflops']
    assert swin['flop_ratio'] == swin['time_ratio'] == 1 and glob['flop_ratio'] == glob['gflops'] / swin['gflops']
    text = out.read_text()
    assert '| UperNet MAFormer-T (window) | 64x128 | 57.0M |' in text and 'No GPU was available' in text
