"""OpenMMLab's own tools and mim, run as a user runs them, with configs that inherit ours in one line
(`_base_ = ['maformer_mm::maformer/NAME.py']`), in an environment installed as `make env` installs it: an editable
install (of a copy of the tree, so the test may edit it) with the `.pth` line and mim's link, in a throwaway venv
that sees this environment's packages. docs/host_tools.md."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List

import pytest

from tests.helpers import MIN_ARCH, REPO, backbone_override, run_tool, user_det_config
from tests.test_cls.test_cls_pretrain import CLASSES, CROP_64, write_image_folders
from tests.test_cls.test_cls_pretrain import USER_CONFIG as CLS_CONFIG
from tests.test_seg.test_seg_tools import user_seg_config

HOSTS = ('mmdet', 'mmseg', 'mmpretrain')
BASES = {  # the one line of each host's user config
    'mmdet': 'maformer_mm::maformer/mask_rcnn_maformer_t_demo.py',
    'mmseg': 'maformer_mm::maformer/upernet_maformer_t_demo.py',
    'mmpretrain': 'maformer_mm::maformer/maformer_t_in1k.py',
}
TOOLS = sorted(  # every console tool of ours (the modules `mim run` finds in maformer_mm/tools/)
    p.stem for p in (REPO / 'maformer_mm' / 'tools').glob('*.py') if p.stem not in ('__init__', 'cli', 'entry_points')
)
# mim's `run` for each tool named in argv with `--help`; its subprocess replaced by running the script by path in
# this process (sys.argv and sys.path[0] as `python SCRIPT --help` sets them).
MIM_RUN_EVERY_TOOL = """
import contextlib, importlib, io, os, runpy, sys
mim_run = importlib.import_module('mim.commands.run')
def by_path(cmd, env=None):
    script, args = cmd[1], cmd[2:]
    sys.argv, sys.path[0], out = [script, *args], os.path.dirname(script), io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name='__main__')
        code = 0
    except SystemExit as stop:
        code = stop.code or 0
    print(f"{os.path.basename(script)[:-3]}: exit {code}, usage: {'yes' if 'usage:' in out.getvalue() else 'no'}, "
          f"script {script}")
    return code
mim_run.subprocess.check_call = by_path
for tool in sys.argv[1:]:
    mim_run.run(package='maformer_mm', command=tool, yes=True, other_args=('--help',))
"""
NO_WEIGHTS = 'no-released-weights: maformer_mm has released no trained weights'


def _host_tool(host: str, *parts: str) -> Path:
    """A script of the host's own tools, as its wheel ships them (`<host>/.mim/tools/...`)."""
    import importlib.util

    return Path(importlib.util.find_spec(host).origin).parent / '.mim' / 'tools' / Path(*parts)


@pytest.fixture(scope='module')
def env(tmp_path_factory) -> Dict[str, Path]:
    """A venv whose site-packages holds only an editable install of a copy of the tree (the `.pth` files, mim's
    link), and this environment's site-packages as a plain path (whose `.pth` files Python does not run)."""
    root = tmp_path_factory.mktemp('hostenv')
    src = root / 'src'
    skip = shutil.ignore_patterns('__pycache__', '*.pyc', '*.egg-info')
    for name in ('maformer_mm', 'configs'):
        shutil.copytree(REPO / name, src / name, symlinks=True, ignore=skip)
    for name in ('setup.py', 'MANIFEST.in', 'README.md', 'maformer_mm_prefix.py', 'maformer_mm_prefix.pth'):
        shutil.copy2(REPO / name, src / name)
    venv = root / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv], check=True, timeout=120)
    python = venv / 'bin' / 'python'
    site = Path(sysconfig.get_path('purelib', vars={'base': str(venv), 'platbase': str(venv)}))
    (site / 'host_env.pth').write_text(sysconfig.get_path('purelib') + '\n')
    environ = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'PIP_REQUIRE_VIRTUALENV')}
    environ['HOME'] = str(root / 'home')  # mim makes ~/.cache/mim, matplotlib its config: here, not in the user's
    (root / 'home').mkdir()
    pip = [python, '-m', 'pip', '--disable-pip-version-check', '--no-cache-dir', '-q', 'install', '--no-deps']
    pip.append('--no-build-isolation')
    # --ignore-installed: never touches the install in this environment's site-packages.
    subprocess.run([*pip, '--ignore-installed', '-e', src], check=True, cwd=root, env=environ, timeout=600)
    subprocess.run(
        [python, REPO / 'tools' / 'env' / 'mim_link.py', '--source', src / 'maformer_mm'],
        check=True,
        env=environ,
        timeout=120,
    )
    return dict(root=root, src=src, python=python, site=site, environ=environ)


def _run(env: dict, args: List, cwd: Path, timeout: int = 600) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env['environ'], capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f'{args} failed ({proc.returncode}):\n{out[-4000:]}'
    return out


def _run_all(env: dict, commands: List[List], cwd: Path, timeout: int = 600) -> List[str]:
    """Runs commands that do not depend on each other at once (each spends seconds importing torch and its host),
    each output to a file (a full pipe would stall it); their outputs, in order."""
    procs = []
    for i, args in enumerate(commands):
        log = (cwd / f'.run_all_{i}.log').open('w+')
        argv = [str(a) for a in args]
        proc = subprocess.Popen(argv, cwd=cwd, env=env['environ'], stdout=log, stderr=subprocess.STDOUT, text=True)
        procs.append((args, proc, log))
    outs = []
    for args, proc, log in procs:
        with log:
            try:
                proc.wait(timeout=timeout)
            finally:
                proc.kill()  # a no-op where it ended
            log.seek(0)
            out = log.read()
        assert proc.returncode == 0, f'{args} failed ({proc.returncode}):\n{out[-4000:]}'
        outs.append(out)
    return outs


def _mim(env: dict, *args, cwd: Path) -> str:
    return _run(env, [env['python'], '-m', 'mim', *args], cwd)


def test_the_prefix_is_registered_without_importing_maformer_mm(env):
    """A plain host process: the `.pth` finder registers the prefix when mmengine's config utils load, removes
    itself, and nothing imports maformer_mm (its checkpoint loaders stay out of plain host runs)."""
    code = (
        'import sys; hooks = [type(f).__name__ for f in sys.meta_path];'
        'import mmdet, mmengine.runner; from mmengine.config import utils;'
        'print(hooks[0], utils.MODULE2PACKAGE["maformer_mm"], "maformer_mm" in sys.modules,'
        ' [type(f).__name__ for f in sys.meta_path if "maformer" in type(f).__name__])'
    )
    out = _run(env, [env['python'], '-c', code], env['root']).split('\n')[-2]
    assert out == 'maformer_mm_prefix_hook maformer_mm.version False []'


def _workspace(host: str, root: Path) -> Path:
    """Small generated data and a user config for `host` that inherits ours in one line (BASES)."""
    root.mkdir()
    tools = REPO / 'tools' / 'make_demo_data.py'
    if host == 'mmdet':
        run_tool([tools, 'coco', '--out', root / 'data', '--train', 2, '--val', 1, '--size', 96, 96], cwd=REPO)
        text = user_det_config(BASES[host], str(root / 'data') + '/')
    elif host == 'mmseg':
        run_tool([tools, 'ade', '--out', root / 'data', '--train', 2, '--val', 1, '--size', 64, 64], cwd=REPO)
        text = user_seg_config(BASES[host], str(root / 'data') + '/').replace('max_iters=2', 'max_iters=1')
    else:
        write_image_folders(root / 'data', dict(train=len(CLASSES), val=len(CLASSES)))  # one image a class
        text = CLS_CONFIG.format(
            base=BASES[host], root=str(root / 'data'), classes=CLASSES, backbone=backbone_override(MIN_ARCH, 64)
        )
    assert text.count('maformer_mm::') == 1 and f"_base_ = ['{BASES[host]}']" in text
    config = root / 'my_config.py'
    config.write_text(text)
    return config


@pytest.mark.parametrize('host', HOSTS)
def test_the_hosts_own_train_test_and_print_config_take_the_one_line_config(env, host):
    config = _workspace(host, env['root'] / host)
    work, python = config.parent, env['python']
    train = [python, _host_tool(host, 'train.py'), config, '--work-dir', work / 'out']
    if host == 'mmpretrain':
        # One epoch (one iteration); the cosine phase, which starts after it, given an end past it; 64-pixel crops.
        train += ['--cfg-options', 'train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'param_scheduler.1.end=2']
        train += CROP_64
    printed, log = _run_all(env, [[python, _host_tool(host, 'misc', 'print_config.py'), config], train], work)
    assert "type='MAFormer'" in printed and 'custom_imports' in printed
    assert re.search(r'(Epoch|Iter)\(train\) *\[1[]/]', log), log[-3000:]
    checkpoint = max((work / 'out').glob('*.pth'), key=os.path.getmtime)
    test = [python, _host_tool(host, 'test.py'), config, checkpoint, '--work-dir', work / 'test']
    if host == 'mmdet':
        test += ['--out', work / 'results.pkl', '--show-dir', work / 'shown']
    log = _run(env, test, work)
    assert {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}[host] in log
    if host != 'mmdet':
        return
    assert (work / 'results.pkl').is_file() and any((work / 'shown').glob('*.png'))  # an absolute --show-dir
    # The analysis tools of the table, on that run's results and logs.
    tools, results = _host_tool(host, 'analysis_tools'), work / 'results.pkl'
    scalars = next((work / 'out').rglob('vis_data/*.json'))
    bench = ['--task', 'dataset', '--max-iter', '1', '--num-warmup', '0', '--log-interval', '1']  # the 1 val image
    _, metric, _, _, fps = _run_all(
        env,
        [
            [python, tools / 'confusion_matrix.py', config, results, work / 'cm'],
            [python, tools / 'eval_metric.py', config, results],
            [python, tools / 'browse_dataset.py', config, '--output-dir', work / 'browse', '--not-show'],
            [python, tools / 'analyze_logs.py', 'plot_curve', scalars, '--keys', 'loss', '--out', 'loss.png'],
            [python, tools / 'benchmark.py', config, *bench],
        ],
        work,
    )
    assert (work / 'cm' / 'confusion_matrix.png').is_file()
    assert 'bbox_mAP' in metric
    assert len(list((work / 'browse').iterdir())) == 2  # the two training images
    assert (work / 'loss.png').is_file()  # seaborn, pandas
    assert 'Overall fps' in fps  # psutil


def test_the_hosts_get_flops_counts_maformer_attention(env, tmp_path):
    """mmpretrain's own get_flops.py on MAFormer-T at 224 (a one-line config): the model index's 5.74G to 1%."""
    config = tmp_path / 'maformer_t.py'
    config.write_text(f"_base_ = ['{BASES['mmpretrain']}']\n")
    log = _run(env, [env['python'], _host_tool('mmpretrain', 'analysis_tools', 'get_flops.py'), config], tmp_path)
    flops = float(re.search(r'Flops: ([\d.]+)G', log).group(1))
    assert abs(flops - 5.74) / 5.74 < 0.01, log[-2000:]
    assert 'scaled_dot_product_attention' not in log  # no "unsupported operator" warning for it


def test_mim_finds_runs_and_downloads_from_the_editable_install(env, tmp_path):
    """mim's list, search, download and run (every tool of ours) on the install `make env` makes; an edit of the
    checkout is seen without reinstalling."""
    assert 'maformer-mm' in _mim(env, 'list', cwd=tmp_path).lower()
    found = _mim(env, 'search', 'maformer_mm', '--field', 'weight', cwd=tmp_path)
    assert 'mask_rcnn_maformer_t' in found and 'no-released-weights' in found
    proc = subprocess.run(
        [env['python'], '-m', 'mim', 'download', 'maformer_mm', '--config', 'mask_rcnn_maformer_t', '--dest', 'dl'],
        cwd=tmp_path,
        env=env['environ'],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and NO_WEIGHTS in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / 'dl').exists() or not any((tmp_path / 'dl').iterdir())  # nothing was fetched

    # `--help` after `--`: mim answers a plain `--help` itself, for its own list of OpenMMLab codebases only.
    out = _mim(env, 'run', 'maformer_mm', 'configs', '--', '--help', cwd=tmp_path)
    assert f'Use the script {env["site"] / "maformer_mm" / "tools" / "configs.py"}' in out and 'usage:' in out
    # Every tool, found by mim's `run` and run by its path as mim runs it, in one process (one import of torch).
    out = _run(env, [env['python'], '-c', MIM_RUN_EVERY_TOOL, *TOOLS], tmp_path)
    for tool in TOOLS:
        assert f'{tool}: exit 0, usage: yes, script ' + str(env['site'] / 'maformer_mm' / 'tools' / f'{tool}.py') in out

    # Edits of the checkout, seen without reinstalling: a new model in the index, a new tool.
    metafile, tool = env['src'] / 'configs' / 'metafile.yml', env['src'] / 'maformer_mm' / 'tools' / 'edited_tool.py'
    original = metafile.read_text()
    (env['src'] / 'configs' / 'edited_copy.py').write_text("_base_ = ['./maformer_t_in1k.py']\n")
    metafile.write_text(
        original.replace('Models:\n', 'Models:\n- Name: edited_copy\n  Config: configs/edited_copy.py\n')
    )
    tool.write_text("print('the edited tool ran')\n")
    try:
        assert 'edited_copy' in _mim(env, 'search', 'maformer_mm', cwd=tmp_path)
        assert 'the edited tool ran' in _mim(env, 'run', 'maformer_mm', 'edited_tool', cwd=tmp_path)
    finally:
        metafile.write_text(original)
        tool.unlink()
        (env['src'] / 'configs' / 'edited_copy.py').unlink()


def test_mim_train_and_test_run_our_tools(env):
    config = _workspace('mmdet', env['root'] / 'mim_det')
    work = config.parent
    log = _mim(env, 'train', 'maformer_mm', config, '--gpus', '0', '--work-dir', work / 'out', cwd=work)
    assert 'Epoch(train) [1][1/1]' in log, log[-3000:]
    checkpoint = work / 'out' / 'epoch_1.pth'
    log = _mim(env, 'test', 'maformer_mm', config, '--checkpoint', checkpoint, '--gpus', '0', cwd=work)
    assert 'coco/bbox_mAP' in log
