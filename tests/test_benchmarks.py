"""The benchmark scripts run end to end at small sizes and write consistent reports. Nothing here is
timed: the tests check structure and the values that do not depend on the machine."""
import json

import pytest

from benchmarks import backbone_benchmark, dense_cost


def test_backbone_benchmark_writes_tables_json_and_plot(tmp_path):
    out = tmp_path / 'results.md'
    backbone_benchmark.main(['--sizes', '64', '48x80', '--repeats', '1', '--models', 'MAFormer-T', 'Swin-T',
                             '--out', str(out)])
    res = json.loads((tmp_path / 'results_cpu.json').read_text())
    assert (tmp_path / 'results_cpu.png').stat().st_size > 0
    assert not (tmp_path / 'results_cpu.partial.json').exists()
    assert [(r['model'], r['size']) for r in res['rows']] == [
        ('MAFormer-T', [64, 64]), ('Swin-T', [64, 64]), ('MAFormer-T', [48, 80]), ('Swin-T', [48, 80])]
    for row in res['rows']:
        assert row['gflops'] > 0 and row['infer_s'] > 0 and row['train_s'] > 0
        if row['model'] == 'Swin-T':  # its own reference
            assert row['time_ratio'] == row['infer_time_per_flop_ratio'] == row['train_time_per_flop_ratio'] == 1
    assert set(res['memory']) == {'MAFormer-T', 'Swin-T'} and all(m > 0 for m in res['memory'].values())
    assert res['with_cp']['size'] == [64, 64]  # the largest input and res['with_cp']['peak_mib'] > 0
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
