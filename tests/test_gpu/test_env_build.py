"""The set-up that adapts to the machine: `make env` picks the mmcv build (CPU-only or CUDA), and
tools/env/mmcv_build.py proves which one was made by reading the extension's ELF file."""

import glob
import importlib.metadata
import os
import os.path as osp
import shutil
import subprocess
from typing import List, Optional, Sequence, Tuple

import pytest
import torch
import torchvision

from tests.helpers import REPO
from tools.env.mmcv_build import (
    check,
    elf_sections,
    fatbin_archs,
    inspect_library,
    link_cuda_runtime,
    links_and_symbols,
    merge_tree,
    mmcv_ext_path,
    read_section,
    required_archs,
    runs_on,
    toolkit_requirements,
)

GPU_DRIVER = any(osp.exists(p) for p in ('/dev/nvidiactl', '/dev/dxg'))


def glob_one(pattern: str) -> str:
    found = glob.glob(pattern)
    assert len(found) == 1, pattern
    return found[0]


def test_fatbin_reader_lists_the_kernels_of_a_cuda_library():
    # torchvision's CUDA wheel: its nms / roi_align kernels for every architecture it supports
    lib = glob_one(osp.join(osp.dirname(torchvision.__file__), '_C*.so'))
    info = inspect_library(lib)
    assert {'sm_80', 'sm_90'} <= set(info['archs']) and info['nv_fatbin_mib'] > 1
    assert any(a.startswith('compute_') for a in info['archs'])  # its PTX entry
    assert any(n.startswith('libcudart.so') for n in info['cuda_libraries'])
    assert fatbin_archs(b'\0' * 64) == set()


def gpu_capabilities() -> List[Tuple[int, int]]:
    """The compute capability of every GPU torch sees (none without CUDA)."""
    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())]


def build_fault(info: dict, gpus: Sequence[Tuple[int, int]]) -> Optional[str]:
    """Why the mmcv extension described by `info` (`inspect_library`) cannot run its ops on the GPUs `gpus`
    (their compute capabilities; empty: no GPU), or None when it can.

    `runs_on` decides for each GPU. A CPU-only build on a machine with a GPU is the fault this catches:
    without it the test below passed for the wrong build.
    """
    archs = set(info['archs'])
    for major, minor in gpus:
        if not runs_on(sorted(archs), (major, minor)):
            built = ', '.join(sorted(archs)) or 'no CUDA kernels (a CPU-only build)'
            return (
                f'{info["path"]} has {built}, but torch sees a GPU of compute capability {major}.{minor}: '
                f"rebuild mmcv for it with `make env` (TORCH_CUDA_ARCH_LIST='{major}.{minor}', MMCV_CUDA=1)"
            )
    return None


def test_build_fault_decides_on_the_gpus_seen():
    cpu_build = dict(path='_ext.so', archs=[])
    assert build_fault(cpu_build, []) is None  # no GPU: a CPU-only build is right
    fault = build_fault(cpu_build, [(9, 0)])
    assert 'no CUDA kernels (a CPU-only build)' in fault and "TORCH_CUDA_ARCH_LIST='9.0'" in fault
    cuda_build = dict(path='_ext.so', archs=['sm_80', 'sm_90'])
    assert build_fault(cuda_build, [(9, 0), (8, 0)]) is None
    assert build_fault(cuda_build, [(8, 6)]) is None  # an sm_80 cubin runs on 8.6
    assert 'sm_80, sm_90' in build_fault(cuda_build, [(7, 5)])  # no cubin of major 7, no PTX
    assert build_fault(cuda_build, [(10, 0)]) is not None  # cubins do not cross major versions
    assert build_fault(dict(path='_ext.so', archs=['sm_90', 'compute_90']), [(12, 0)]) is None  # its PTX compiles
    # the installed extension, judged as on a machine with an H200 (torch.cuda.is_available() true)
    installed = inspect_library(mmcv_ext_path())
    if not installed['archs']:
        assert 'no CUDA kernels' in build_fault(installed, [(9, 0)])


def test_the_installed_mmcv_passes_the_check_of_its_own_build():
    info = inspect_library(mmcv_ext_path())
    fault = build_fault(info, gpu_capabilities())
    assert fault is None, fault
    assert info['size_mib'] > 1  # the compiled ops are there (2 MiB CPU-only once a wheelhouse strips debug sections)
    if info['archs']:  # a CUDA build: kernels, linked against the CUDA runtime
        assert check('cuda', '')['archs'] == info['archs']
        assert any(n.startswith('libcudart.so') for n in info['cuda_libraries'])
        assert len(info['roi_align_kernels']) == 3  # half, float, double
    else:
        assert read_section(mmcv_ext_path(), '.nv_fatbin') == b'' and info['cuda_kernel_symbols'] == 0
        assert check('cpu', '')['proof'].startswith('CPU-only build')
        with pytest.raises(SystemExit, match='lacks CUDA kernels'):  # no GPU here (build_fault): no CUDA build
            check('cuda', '9.0')


def test_arch_list_and_toolkit_requirements():
    assert required_archs('8.6;9.0+PTX') == {'sm_86', 'sm_90', 'compute_90'}
    assert required_archs('7.5 8.0') == {'sm_75', 'sm_80'}
    # torch's CUDA 13 wheels pin NVIDIA's cuda-toolkit: the same version brings nvcc and the headers
    torch_requires = importlib.metadata.requires('torch')
    pinned = [r for r in torch_requires if r.startswith('cuda-toolkit')]
    assert pinned and toolkit_requirements(torch_requires, torch.version.cuda) == [
        'cuda-toolkit[nvcc,cccl,crt,nvvm]==' + pinned[0].split('==')[1].split(';')[0].strip()
    ]
    # CUDA 12 wheels from PyTorch's index pin per-library packages: nvcc of the same minor version
    assert toolkit_requirements(['nvidia-cuda-runtime-cu12==12.6.77'], '12.6') == [
        'nvidia-cuda-nvcc-cu12==12.6.*',
        'nvidia-cuda-cccl-cu12==12.6.*',
        'nvidia-cuda-runtime-cu12==12.6.*',
    ]


def test_split_toolkit_packages_become_one_cuda_home(tmp_path):
    nvidia = tmp_path / 'nvidia'
    files = [
        'cuda_nvcc/bin/nvcc',
        'cuda_nvcc/include/crt/host_config.h',
        'cuda_nvcc/nvvm/bin/cicc',
        'cuda_runtime/include/cuda_runtime.h',
        'cuda_runtime/lib/libcudart.so.12',
        'cuda_cccl/include/cub/cub.cuh',
        'cublas/include/cublas_v2.h',
        'cublas/include/crt/ignored.h',
    ]
    for i, name in enumerate(files):
        (nvidia / name).parent.mkdir(parents=True, exist_ok=True)
        (nvidia / name).write_text(str(i))
    home = tmp_path / 'cuda'
    merge_tree(
        [str(nvidia / 'cuda_nvcc'), str(nvidia / 'cublas'), str(nvidia / 'cuda_runtime'), str(nvidia / 'cuda_cccl')],
        str(home),
    )
    link_cuda_runtime(str(home))
    for name in (
        'bin/nvcc',
        'nvvm/bin/cicc',
        'include/crt/host_config.h',
        'include/cuda_runtime.h',
        'include/cub/cub.cuh',
        'include/cublas_v2.h',
        'include/crt/ignored.h',
    ):
        assert (home / name).is_file(), name
    assert (home / 'lib64' / 'libcudart.so').read_text() == str(files.index('cuda_runtime/lib/libcudart.so.12'))
    with pytest.raises(SystemExit, match='no libcudart'):
        (tmp_path / 'empty' / 'lib').mkdir(parents=True)
        link_cuda_runtime(str(tmp_path / 'empty'))


@pytest.fixture
def make_dry_run(tmp_path):
    """`make -n env` in a copy of the build files, with a stand-in nvidia-smi printing `caps` (None: absent)."""
    if shutil.which('make') is None:
        pytest.skip('make is not installed here (a GPU node checked from a wheelhouse needs none)')
    for name in ('Makefile', 'requirements.txt', 'setup.py'):
        shutil.copy(REPO / name, tmp_path / name)
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()

    def run(caps=None, stamp=None, **variables) -> subprocess.CompletedProcess:
        smi = bin_dir / 'nvidia-smi'
        if caps is not None:
            smi.write_text(f'#!/bin/sh\nprintf "{caps}"\n')
            smi.chmod(0o755)
        elif smi.exists():
            smi.unlink()
        if stamp:
            (tmp_path / '.venv').mkdir(exist_ok=True)
            (tmp_path / '.venv' / stamp).touch()
        env = {k: v for k, v in os.environ.items() if k not in ('MMCV_CUDA', 'TORCH_CUDA', 'TORCH_CUDA_ARCH_LIST')}
        env['PATH'] = f'{bin_dir}:/usr/bin:/bin'
        return subprocess.run(
            ['make', '-n', 'env', *(f'{k}={v}' for k, v in variables.items())],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )

    return run


def _build_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return next(line for line in proc.stdout.splitlines() if 'build_mmcv.sh' in line)


def test_make_builds_cuda_mmcv_for_the_visible_gpus(make_dry_run):
    proc = make_dry_run('9.0\\n9.0\\n8.6\\n')
    assert _build_line(proc).endswith("'mmcv==2.1.0' cuda '8.6;9.0'")
    assert '-cuda\n' in proc.stdout  # the stamp names the build
    assert _build_line(make_dry_run('9.0\\n', TORCH_CUDA_ARCH_LIST='8.0')).endswith("cuda '8.0'")
    assert _build_line(make_dry_run('9.0\\n', MMCV_CUDA=0)).endswith("'mmcv==2.1.0' cpu ''")
    # nvidia-smi that prints an error instead of capabilities (driver not loaded) is no GPU
    if not GPU_DRIVER:
        assert _build_line(make_dry_run('NVIDIA-SMI has failed\\n')).endswith(" cpu ''")


@pytest.mark.skipif(GPU_DRIVER, reason='an NVIDIA driver is present: this machine is no CPU-only machine')
def test_make_without_a_gpu_builds_cpu_mmcv_unless_forced(make_dry_run):
    proc = make_dry_run()
    assert _build_line(proc).endswith("'mmcv==2.1.0' cpu ''") and '-cpu\n' in proc.stdout
    assert 'download.pytorch.org' not in proc.stdout and '-r requirements.txt' in proc.stdout
    # forced: the architectures default to the build script's list (an empty argument)
    assert _build_line(make_dry_run(MMCV_CUDA=1)).endswith("'mmcv==2.1.0' cuda ''")
    # an environment that already holds the CUDA build keeps it
    assert _build_line(make_dry_run(stamp='.stamp-0123456789abcdef-cuda')).endswith(" cuda ''")


def test_make_torch_cuda12_variant_and_bad_values(make_dry_run):
    proc = make_dry_run('8.0\\n', TORCH_CUDA='cu126')
    assert _build_line(proc).endswith("cuda '8.0'") and '-cuda-cu126\n' in proc.stdout
    install = next(line for line in proc.stdout.splitlines() if 'torch==' in line)
    assert '--extra-index-url https://download.pytorch.org/whl/cu126' in install
    assert 'torch==2.13.0+cu126' in install and 'torchvision==0.28.0+cu126' in install and '===' not in install
    assert "grep -vE '^(torch|torchvision)=' requirements.txt > .venv/requirements-cu126.txt" in proc.stdout
    for variables, message in (
        ({'MMCV_CUDA': 'yes'}, 'MMCV_CUDA must be 1'),
        ({'TORCH_CUDA': 'cu130'}, "TORCH_CUDA selects torch's CUDA 12 builds"),
    ):
        bad = make_dry_run(**variables)
        assert bad.returncode != 0 and message in bad.stderr


def test_the_elf_reader_finds_the_extensions_links_sections_and_symbols():
    """pyelftools reads what the build check relies on, from this environment's real extension (CPU or CUDA)."""
    path = mmcv_ext_path()
    needed, symbols = links_and_symbols(path)
    assert 'libtorch_cpu.so' in needed and 'libc10.so' in needed
    assert any('roi_align_forward' in s for s in symbols)
    sections = elf_sections(path)
    assert sections['.text'][1] > 0 and read_section(path, '.no_such_section') == b''
