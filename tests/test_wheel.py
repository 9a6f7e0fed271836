"""The wheel works outside the source tree: built, installed into a separate folder, then in a fresh process
(run from an empty folder) its configs are listed, one is inherited with `maformer_mm::`, built, and trained
for one iteration on generated data."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import MIN_ARCH, REPO, backbone_override, widths

TINY = """_base_ = ['maformer_mm::maformer/mask_rcnn_maformer_t_demo.py']
data_root = {root!r}
model = dict(
    {backbone},
    neck=dict(in_channels={widths}, out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32), mask_head=dict(in_channels=32, conv_out_channels=32)))
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator
train_cfg = dict(max_epochs=1, val_interval=1)
default_hooks = dict(logger=dict(interval=1))
"""


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """(site folder, environment) of the wheel installed with `pip install --target`, away from the tree."""
    root = tmp_path_factory.mktemp('wheel')
    dist, site = root / 'dist', root / 'site'
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', '-q']
    subprocess.run(
        [*pip, 'wheel', '--no-deps', '--no-build-isolation', '-w', dist, REPO],
        check=True,
        cwd=root,
        capture_output=True,
        timeout=600,
    )
    wheel = next(dist.glob('maformer_mm-*.whl'))
    subprocess.run(
        [*pip, 'install', '--no-deps', '--target', site, wheel], check=True, cwd=root, capture_output=True, timeout=600
    )
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')}
    env['PYTHONPATH'] = str(site)
    return site, env


def _run(args, cwd: Path, env: dict) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f'{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}'
    return proc.stdout + proc.stderr


def test_the_wheel_carries_configs_index_and_commands(installed):
    site, _ = installed
    configs = site / 'maformer_mm' / '.mim' / 'configs' / 'maformer'
    assert configs.is_dir() and not configs.is_symlink()
    shipped = {p.relative_to(configs).as_posix() for p in configs.rglob('*.py')}
    in_tree = {p.relative_to(REPO / 'configs').as_posix() for p in (REPO / 'configs').rglob('*.py')}
    assert shipped == in_tree
    assert (configs / 'metafile.yml').is_file() and (site / 'maformer_mm' / '.mim' / 'model-index.yml').is_file()
    assert (site / 'maformer_mm_prefix.pth').is_file() and (site / 'maformer_mm_prefix.py').is_file()
    commands = {p.name for p in (site / 'bin').iterdir()}
    assert {
        'maformer-train',
        'maformer-test',
        'maformer-infer',
        'maformer-export',
        'maformer-flops',
        'maformer-convert',
        'maformer-configs',
        'maformer-plot-curve',
    } <= commands


def test_installed_configs_are_listed_inherited_built_and_trained(installed, tmp_path):
    site, env = installed
    work = tmp_path / 'empty'
    work.mkdir()
    where = _run([sys.executable, '-c', 'import maformer_mm; print(maformer_mm.__file__)'], work, env)
    assert where.strip().startswith(str(site)), where  # the installed copy, not the source tree
    listing = _run([site / 'bin' / 'maformer-configs', 'mask_rcnn'], work, env)
    assert 'mask_rcnn_maformer_t.py' in listing and 'COCO' in listing
    path = _run([sys.executable, '-m', 'maformer_mm.tools.configs', '--path', 'mask_rcnn_maformer_t'], work, env)
    assert path.strip() == str(site / 'maformer_mm' / '.mim' / 'configs' / 'maformer' / 'mask_rcnn_maformer_t.py')

    _run(
        [
            sys.executable,
            '-m',
            'maformer_mm.tools.make_demo_data',
            'coco',
            '--out',
            'data',
            '--train',
            2,
            '--val',
            1,
            '--size',
            64,
            64,
        ],
        work,
        env,
    )
    (work / 'my_config.py').write_text(
        TINY.format(
            root=str(work / 'data') + '/',
            widths=widths(MIN_ARCH),
            backbone=backbone_override(MIN_ARCH, 64, window_size=4),
        )
    )
    log = _run([site / 'bin' / 'maformer-train', 'my_config.py', '--work-dir', 'out', '--device', 'cpu'], work, env)
    assert 'Epoch(train) [1][1/1]' in log and 'coco/bbox_mAP' in log
    assert (work / 'out' / 'epoch_1.pth').is_file()

    # A `--target` folder is no site directory, so its `.pth` line never runs: the host's own print_config.py
    # takes the one-line config through `python -m maformer_mm_prefix SCRIPT` (docs/host_tools.md).
    print_config = Path(importlib.util.find_spec('mmdet').origin).parent / '.mim' / 'tools' / 'misc' / 'print_config.py'
    printed = _run([sys.executable, '-m', 'maformer_mm_prefix', print_config, 'my_config.py'], work, env)
    assert "type='MAFormer'" in printed and 'custom_imports' in printed
