"""The wheelhouse for GPU nodes without network (`make wheelhouse`, tools/gpu_check.sh), on this machine's CPU.

The wheelhouse of the pinned stack is built from this environment's own installed distributions (`make wheelhouse`
without settings), then installed offline by tools/gpu_check.sh on a stand-in node: a fresh environment of the
same Python holding only what the wheelhouse leaves out (torch, torchvision, numpy, scipy, opencv, matplotlib and
what they require), so a wheel missing from the wheelhouse cannot be made up for by this environment. The check
runs end to end with `--device cpu`, then again against a manifest of another torch, where it must refuse and run
the reduced set without mmcv's compiled ops. Building the CUDA wheelhouse itself takes an hour: docs/gpu.md.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO
from tools.env import gpu_check
from tools.env import wheelhouse as wheelhouse_tool
from tools.env.mmcv_build import elf_sections, glibc_needed, mmcv_ext_path
from tools.env.wheelhouse import MANIFEST, SUMS, installed, normalize, public_version, record_hash, sha256

CARRIED = {'maformer-mm', 'mmcv', 'mmdet', 'mmsegmentation', 'mmpretrain', 'mmengine', 'pycocotools', 'setuptools'}
NODE_OWN = {'torch', 'torchvision', 'numpy', 'scipy', 'opencv-python', 'matplotlib', 'pillow'}


@pytest.fixture(scope='module')
def wheelhouse(tmp_path_factory) -> Path:
    """What `make wheelhouse` without settings packs: this environment (the pinned stack), into a fresh folder."""
    out = tmp_path_factory.mktemp('offline') / 'wheelhouse'
    proc = subprocess.run(
        [sys.executable, '-m', 'tools.env.wheelhouse', 'pack', '--out', out],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope='module')
def node(wheelhouse, tmp_path_factory) -> Path:
    """The interpreter of a stand-in node: a new environment that holds only what the wheelhouse leaves out
    (linked from this one)."""
    root = tmp_path_factory.mktemp('node')
    subprocess.run([sys._base_executable, '-m', 'venv', '--without-pip', root], check=True, timeout=120)
    python = root / 'bin' / 'python'
    code = 'import sysconfig; print(sysconfig.get_path("purelib"))'
    site = Path(subprocess.run([python, '-c', code], capture_output=True, text=True, check=True).stdout.strip())
    dists = installed()
    left_out = json.loads((wheelhouse / MANIFEST).read_text())['left_out']
    for name in left_out:
        folder = Path(str(dists[name]._path)).parent
        for top in {f.parts[0] for f in dists[name].files if f.parts[0] not in ('..', '__pycache__')}:
            if not (site / top).exists() and (folder / top).exists():
                (site / top).symlink_to(folder / top)
    return python


def run_gpu_check(wheelhouse: Path, out: Path, python: Path, *args: str) -> subprocess.CompletedProcess:
    # PIP_* settings of the caller (this machine's find-links, constraints) must not reach the offline install
    env = dict(os.environ, PYTHON=str(python), PIP_INDEX_URL='http://127.0.0.1:9/none', PIP_FIND_LINKS='/nonexistent')
    env.pop('PYTHONPATH', None)
    command = ['bash', REPO / 'tools' / 'gpu_check.sh', wheelhouse, out, *args]
    return subprocess.run(command, cwd=out.parent, env=env, capture_output=True, text=True, timeout=900)


def test_the_wheelhouse_holds_the_stack_beyond_the_nodes_own(wheelhouse):
    manifest = json.loads((wheelhouse / MANIFEST).read_text())
    names = {w['name'] for w in manifest['wheels']}
    assert CARRIED | {'pip', 'pytest', 'pyelftools'} <= names
    assert not names & NODE_OWN and not any(n.startswith(('nvidia-', 'cuda-', 'triton')) for n in names)
    assert NODE_OWN <= set(manifest['left_out'])
    target = manifest['target']
    assert target['python'] == '%d.%d' % sys.version_info[:2] and target['torch'] == torch.__version__
    assert target['torch_cuda'] == torch.version.cuda and target['cxx11_abi'] == torch._C._GLIBCXX_USE_CXX11_ABI
    assert manifest['mmcv']['cuda_ops'] == bool(target['archs'])  # this environment's build, as it is
    assert target['glibc_needed'] == glibc_needed(mmcv_ext_path()) and public_version(target['glibc_needed']) > (2, 2)
    assert manifest['total_mib'] < 60
    listed = {w['file']: w for w in manifest['wheels']}
    assert {p.name for p in wheelhouse.glob('*.whl')} == set(listed)
    sums = dict(line.split()[::-1] for line in (wheelhouse / SUMS).read_text().splitlines())
    for name, wheel in listed.items():
        assert wheel['size'] == (wheelhouse / name).stat().st_size
        assert wheel['sha256'] == sha256(wheelhouse / name) == sums[name]
    assert sums[MANIFEST] == sha256(wheelhouse / MANIFEST) and gpu_check.verify_sums(str(wheelhouse)) == []


def test_wheels_are_the_installed_files_with_debug_sections_stripped(wheelhouse, tmp_path):
    manifest = json.loads((wheelhouse / MANIFEST).read_text())
    dists = installed()
    for wheel in manifest['wheels']:
        with zipfile.ZipFile(wheelhouse / wheel['file']) as whl:
            (record,) = [n for n in whl.namelist() if n.endswith('.dist-info/RECORD') and n.count('/') == 1]
            rows = [line.split(',') for line in whl.read(record).decode().splitlines()]
            for path, digest, size in rows:
                if path != record:  # every file is in the wheel with the hash and size its RECORD says
                    data = whl.read(path)
                    assert digest == record_hash(data) and int(size) == len(data), (wheel['file'], path)
            assert not [n for n in whl.namelist() if '__pycache__' in n or n.endswith('.pyc')]
            if wheel['name'] == 'maformer-mm':
                continue
            site = Path(str(dists[wheel['name']]._path)).parent
            stripped = {s.split(':')[0] for s in wheel['stripped']}
            for path, digest, _ in rows:  # the installed files, byte for byte, but for stripped libraries
                if path not in stripped | {record} and '.data/' not in path:
                    assert record_hash((site / path).read_bytes()) == digest, (wheel['file'], path)
            if wheel['name'] == 'mmcv':
                (ext,) = [n for n in whl.namelist() if n.startswith('mmcv/_ext')]
                whl.extract(ext, tmp_path)
    sections = elf_sections(str(tmp_path / ext))
    assert '.text' in sections and not [s for s in sections if s.startswith('.debug_')] and '.symtab' in sections
    assert manifest['mmcv']['ext_mib'] < manifest['mmcv']['ext_unstripped_mib']
    with zipfile.ZipFile(next(wheelhouse.glob('mmdet-*.whl'))) as whl:  # the host's configs travel (`mmdet::`)
        assert 'mmdet/.mim/configs/_base_/models/mask-rcnn_r50_fpn.py' in whl.namelist()
    with zipfile.ZipFile(next(wheelhouse.glob('maformer_mm-*.whl'))) as whl:
        assert 'maformer_mm/.mim/configs/maformer/mask_rcnn_maformer_t.py' in whl.namelist()
        # every module of the source tree travels (a package without __init__.py would be left out)
        sources = {
            p.relative_to(REPO).as_posix() for p in (REPO / 'maformer_mm').rglob('*.py') if '.mim' not in p.parts
        }
        assert 'maformer_mm/hosts.py' in sources and 'maformer_mm/engine/runs.py' in sources
        assert sources - set(whl.namelist()) == set()


# The tests gpu_check runs here: all of tests/test_gpu runs in the suite itself, so a file of it (a CPU stand-in
# and a CUDA test) and a file outside the reduced set show that the node runs them and reports each.
SOME_TESTS = ('--tests', 'tests/test_gpu/test_gld_fp16.py', 'tests/test_gpu/test_env_build.py')


def test_gpu_check_installs_offline_and_runs_end_to_end_on_cpu(wheelhouse, node, tmp_path):
    node_site = {p.name for p in node.parent.parent.glob('lib/python*/site-packages/*')}
    out = tmp_path / 'report'
    proc = run_gpu_check(wheelhouse, out, node, '--device', 'cpu', *SOME_TESTS)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / 'report.json').read_text())
    assert report['set'] == 'full' and report['result'] == 'passed' and not report['refused'] and not report['errors']
    assert report['node']['torch'] == report['wheelhouse']['target']['torch'] and report['requirements_unmet'] == []
    # installed into the private folder only, and imported from there
    assert all(f.startswith(str(out / 'site')) for f in report['smoke']['files'].values())
    assert report['smoke']['built'] == 'Mask R-CNN MAFormer-T' and report['smoke']['parameters'] > 40e6
    assert {p.name for p in node.parent.parent.glob('lib/python*/site-packages/*')} == node_site
    assert 'RoIAlign and nms agree with torchvision' in report['mmcv_check']
    # the tests asked for ran there: the CPU stand-ins passed, the CUDA tests skipped with their reason
    files = {t['id'].split('::')[0] for t in report['tests']}
    assert files == {'tests/test_gpu/test_gld_fp16.py', 'tests/test_gpu/test_env_build.py'} and len(report['tests']) > 8
    assert 'tests/test_gpu/test_env_build.py::test_the_installed_mmcv_passes_the_check_of_its_own_build' in {
        t['id'] for t in report['tests']
    }
    assert {t['outcome'] for t in report['tests']} == {'passed', 'skipped'}
    assert all('needs a CUDA GPU' in t['message'] for t in report['tests'] if t['outcome'] == 'skipped')
    bench = report['benchmark']
    assert bench['mode'] == 'quick' and {r['model'] for r in bench['backbones']} == {'MAFormer-T', 'Swin-T'}
    assert [r['model'] for r in bench['detectors']] == ['MAFormer-T (window)'] and bench['kernels']
    assert set(report['seconds']) == {'node', 'install', 'checks', 'tests', 'benchmark', 'total'}
    text = (out / 'report.md').read_text()
    assert text.startswith('# GPU check: no GPU (CPU stand-ins)') and 'result: **passed**; set run: full' in text
    assert '| `tests/test_gpu/test_gld_fp16.py::test_gld_bound_and_fp16_at_1333x800_cpu_stand_in` | passed |' in text
    assert '### Mask R-CNN training iteration (96x64, batch 2)' in text


def built_for(wheelhouse: Path, folder: Path, **target) -> Path:
    """A copy of the wheelhouse (links to its wheels) whose manifest names another target, its sums updated."""
    folder.mkdir()
    for path in wheelhouse.iterdir():
        if path.name not in (MANIFEST, SUMS):
            (folder / path.name).symlink_to(path)
    manifest = json.loads((wheelhouse / MANIFEST).read_text())
    manifest['target'].update(target)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    sums = (wheelhouse / SUMS).read_text().replace(sha256(wheelhouse / MANIFEST), sha256(folder / MANIFEST))
    (folder / SUMS).write_text(sums)
    return folder


def test_another_torch_is_refused_and_the_reduced_set_runs_without_mmcv_ops(wheelhouse, node, tmp_path):
    other = built_for(wheelhouse, tmp_path / 'wheelhouse', torch='2.11.0+cu130')
    out = tmp_path / 'report'
    proc = run_gpu_check(other, out, node, '--device', 'cpu', *SOME_TESTS)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / 'report.json').read_text())
    assert report['set'] == 'reduced' and report['result'].startswith('refused')
    (refusal,) = report['refused']
    assert 'mmcv was compiled against torch 2.11.0+cu130' in refusal and report['node']['torch'] in refusal
    assert not list((out / 'site' / 'mmcv').glob('_ext*')) and 'mmcv_check' not in report
    assert report['smoke']['built'].startswith('MAFormer-T backbone') and not report['errors']
    reduced = [t['id'] for t in report['tests']]  # of the tests asked, those of the reduced set
    assert {t.split('::')[0] for t in reduced} == {'tests/test_gpu/test_gld_fp16.py'} and len(reduced) == 2
    assert {t['outcome'] for t in report['tests']} == {'passed', 'skipped'}
    bench = report['benchmark']
    assert [r['model'] for r in bench['backbones']] == ['MAFormer-T'] and bench['detectors'] == []
    assert 'refused: the node has torch' in (out / 'report.md').read_text()


def test_another_python_or_no_gpu_stops_before_the_install(wheelhouse, node, tmp_path):
    def stopped(folder: Path, out: Path, *args: str) -> str:
        proc = run_gpu_check(folder, out, node, *args)
        assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr[-3000:]
        report = json.loads((out / 'report.json').read_text())
        assert report['set'] == 'none' and not (out / 'site').exists() and report['tests'] == []
        (error,) = report['errors']
        return error

    other = built_for(wheelhouse, tmp_path / 'wheelhouse', python='3.9')
    error = stopped(other, tmp_path / 'python', '--device', 'cpu')
    assert 'the wheelhouse is for Python 3.9' in error and 'WH_PYTHON=%d.%d' % sys.version_info[:2] in error
    if not torch.cuda.is_available():
        error = stopped(wheelhouse, tmp_path / 'no_gpu')  # --device cuda, the default
        assert 'sees no GPU here' in error and '--device cpu' in error


def test_abi_mismatches_name_what_differs():
    target = dict(python='3.12', torch='2.11.0+cu130', torch_cuda='13.0', cxx11_abi=True, archs=['sm_90'])
    h100 = dict(name='NVIDIA H100 80GB HBM3', capability='9.0', memory_gib=79.2)
    node = dict(python='3.12', torch='2.11.0a0+gitabc', torch_cuda='13.0', cxx11_abi=True, gpus=[h100])
    assert gpu_check.abi_mismatches(target, node, 'cuda') == []  # a source build of the same minor version
    assert gpu_check.abi_mismatches(target, dict(node, gpus=[]), 'cpu') == []
    (python,) = gpu_check.abi_mismatches(target, dict(node, python='3.11'), 'cuda')
    assert 'Python 3.11' in python and 'Python 3.12' in python
    (cuda,) = gpu_check.abi_mismatches(target, dict(node, torch_cuda='12.8'), 'cuda')
    assert 'CUDA 12.8' in cuda and 'CUDA 13.0' in cuda
    (abi,) = gpu_check.abi_mismatches(target, dict(node, cxx11_abi=False), 'cuda')
    assert '_GLIBCXX_USE_CXX11_ABI=0' in abi
    a100 = dict(h100, name='NVIDIA A100', capability='8.0')
    (arch,) = gpu_check.abi_mismatches(target, dict(node, gpus=[a100]), 'cuda')
    assert 'compute capability 8.0' in arch and 'sm_90' in arch and "WH_ARCHS='8.0'" in arch
    b200 = dict(h100, name='NVIDIA B200', capability='10.0')
    assert gpu_check.abi_mismatches(dict(target, archs=['sm_90', 'compute_90']), dict(node, gpus=[b200]), 'cuda') == []
    (cpu_build,) = gpu_check.abi_mismatches(dict(target, archs=[]), node, 'cuda')
    assert 'a CPU-only mmcv' in cpu_build
    needs = dict(target, glibc_needed='2.32')
    assert gpu_check.abi_mismatches(needs, dict(node, glibc='2.35'), 'cuda') == []
    (glibc,) = gpu_check.abi_mismatches(needs, dict(node, glibc='2.28'), 'cuda')
    assert "the node's glibc is 2.28" in glibc and 'needs 2.32' in glibc


def test_the_tests_run_in_each_set():
    bench = 'tests/test_gpu/test_cuda_benchmark.py'
    assert gpu_check.selected_tests('full', None) == ['tests/test_gpu']
    assert gpu_check.selected_tests('full', [bench]) == [bench]
    assert gpu_check.selected_tests('reduced', None) == list(gpu_check.REDUCED_TESTS)
    assert gpu_check.selected_tests('reduced', ['tests/test_gpu/']) == list(gpu_check.REDUCED_TESTS)
    in_bench = gpu_check.selected_tests('reduced', [bench, 'tests/test_gpu/test_env_build.py'])
    assert in_bench == [r for r in gpu_check.REDUCED_TESTS if r.startswith(bench + '::')] and len(in_bench) == 5
    one = f'{bench}::test_no_detectors_builds_nothing'
    assert gpu_check.selected_tests('reduced', [one, f'{bench}::test_code_paths_on_cpu']) == [one]
    assert gpu_check.selected_tests('reduced', ['tests/test_gpu/test_gld']) == []  # no partial file names


def test_a_damaged_transfer_and_bad_arguments_are_named(wheelhouse, tmp_path):
    copy = tmp_path / 'copy'
    shutil.copytree(wheelhouse, copy, ignore=shutil.ignore_patterns('mm*.whl'))
    assert sorted(gpu_check.verify_sums(str(copy)))[0].endswith(': missing')
    with open(next(copy.glob('pytest-*.whl')), 'ab') as f:
        f.write(b'\0')
    assert any(b.startswith('pytest-') and 'SHA-256 differs' in b for b in gpu_check.verify_sums(str(copy)))
    proc = subprocess.run(['bash', REPO / 'tools' / 'gpu_check.sh', tmp_path], capture_output=True, text=True)
    assert proc.returncode == 3 and f"'{tmp_path}' is no wheelhouse" in proc.stderr
    proc = subprocess.run(['bash', REPO / 'tools' / 'gpu_check.sh'], capture_output=True, text=True)
    assert proc.returncode == 3 and 'usage:' in proc.stderr


def test_make_wheelhouse_passes_the_target_settings():
    def dry_run(*variables: str) -> str:
        proc = subprocess.run(
            ['make', '--no-print-directory', '-n', 'wheelhouse', *variables], cwd=REPO, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip().splitlines()[-1]

    assert dry_run().endswith("-m tools.env.wheelhouse build --out 'build/wheelhouse'")
    line = dry_run('WH_PYTHON=3.12', 'WH_TORCH=2.11.0', 'WH_CUDA=13', 'WH_ARCHS=9.0', 'WH_OUT=/tmp/w')
    assert line.endswith("--out '/tmp/w' --python '3.12' --torch '2.11.0' --cuda '13' --archs '9.0'")
    assert not line.startswith('.venv')  # a target of its own needs no .venv


def test_the_pinned_stack_is_packed_from_venv_and_another_target_gets_its_own_environment(tmp_path, monkeypatch):
    venv_python, facts = str(REPO / '.venv' / 'bin' / 'python'), wheelhouse_tool.torch_facts()
    # which kernels .venv's mmcv holds is read from its fat binary (`mmcv_build.py inspect`, as `pack` reads it)
    monkeypatch.setattr(wheelhouse_tool, 'has_archs', lambda python, archs: python == venv_python and archs == '8.0')

    def choose(*settings: str):
        args = wheelhouse_tool.make_parser().parse_args(['build', '--out', 'x', *settings])
        return wheelhouse_tool.target_env(args, venv_python, facts)

    assert choose() == (venv_python, False, dict(python=facts['python'], torch='2.13.0', cuda=None))
    assert choose('--python', facts['python'], '--torch', '2.13.0', '--cuda', '13')[:2] == (venv_python, False)
    assert choose('--archs', '8.0')[:2] == (venv_python, False)  # .venv's mmcv has those kernels
    python, build_it, target = choose('--python', '3.12', '--torch', '2.11.0', '--cuda', '13', '--archs', '9.0')
    assert build_it and target == dict(python='3.12', torch='2.11.0', cuda='13')
    assert python == str(REPO / 'build' / 'wheelhouse-env' / 'py3.12-torch2.11.0-cu13-9.0' / 'bin' / 'python')
    assert choose('--archs', '9.0')[0].endswith('py%s-torch2.13.0-cuany-9.0/bin/python' % facts['python'])
    assert choose('--cuda', '12')[1]  # .venv's torch is built for CUDA 13
    assert choose('--torch', '2.12.0')[1] and choose('--python', '3.99')[1]
    assert choose('--env', str(tmp_path / 'e'))[:2] == (str(tmp_path / 'e' / 'bin' / 'python'), True)


def test_normalized_names_and_leave_out_defaults():
    assert normalize('Opencv_Python') == normalize('opencv.python') == 'opencv-python'
    assert {'torch', 'torchvision', 'numpy', 'scipy', 'opencv-python', 'matplotlib'} <= set(wheelhouse_tool.LEAVE_OUT)
    tags = ['cp312-cp312-manylinux_2_17_x86_64', 'cp312-cp312-manylinux2014_x86_64']
    assert wheelhouse_tool.compressed_tag(tags) == 'cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64'
