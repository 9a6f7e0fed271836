"""Set-up helpers that `make env` calls for mmcv's compiled ops: the visible GPUs, an nvcc that matches
torch's CUDA, and a check that proves which build of `mmcv._ext` was made.

    python tools/env/mmcv_build.py gpu-archs               # '9.0' or '8.0;8.6' for the visible GPUs; '' if none
    python tools/env/mmcv_build.py toolkit DIR             # nvcc + headers matching torch's CUDA; DIR is CUDA_HOME
    python tools/env/mmcv_build.py check cpu               # a CPU-only _ext whose ops give correct results
    python tools/env/mmcv_build.py check cuda [--archs L]  # GPU: the ops on CUDA tensors; no GPU: CUDA kernels for L
    python tools/env/mmcv_build.py inspect [LIB]           # CUDA evidence of a shared library (default: mmcv._ext)

ELF sections and symbols are read with pyelftools. `cuobjdump` is not in the toolkit's wheels, so the kernels'
architectures are read from the fat binary in the `.nv_fatbin` section directly (its format is below).
"""

import argparse
import glob
import importlib.metadata
import importlib.util
import json
import os
import os.path as osp
import re
import struct
import subprocess
import sys
from typing import Dict, List, Optional, Sequence, Set, Tuple

# The fat binary that nvcc embeds in `.nv_fatbin`: a sequence of containers, each a 16-byte header
# (magic, version, header size, size of the entries) followed by entries. Every entry is one compiled
# kernel image: kind 1 is PTX, kind 2 an ELF cubin, and its target architecture (75, 90, 120, ...) sits
# at byte 28 of the entry header.
FATBIN_MAGIC = 0xBA55ED50
FATBIN_PTX, FATBIN_CUBIN = 1, 2


# ----------------------------------------------------------------------------------------------- ELF
def ELFFile(stream):  # noqa: N802 (pyelftools' class)
    """pyelftools' ELF reader, imported on first use: tools/gpu_check.sh imports this module before pyelftools
    (carried in the wheelhouse) is installed."""
    from elftools.elf.elffile import ELFFile as reader

    return reader(stream)


def elf_sections(path: str) -> Dict[str, Tuple[int, int]]:
    """name -> (file offset, size) of every section of an ELF file (read with pyelftools)."""
    with open(path, 'rb') as f:
        return {section.name: (section['sh_offset'], section['sh_size']) for section in ELFFile(f).iter_sections()}


def read_section(path: str, name: str) -> bytes:
    """The bytes of one section; b'' when the file has no such section."""
    with open(path, 'rb') as f:
        section = ELFFile(f).get_section_by_name(name)
        return section.data() if section is not None else b''


def fatbin_archs(data: bytes) -> Set[str]:
    """'sm_90' for each cubin and 'compute_90' for each PTX entry in the bytes of a `.nv_fatbin` section."""
    archs: Set[str] = set()
    pos = 0
    while pos + 16 <= len(data):
        magic, _, header_size, size = struct.unpack_from('<IHHQ', data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # containers are 8-byte aligned
            continue
        entry, end = pos + header_size, pos + header_size + size
        while entry + 32 <= end:
            kind, _, entry_header, payload = struct.unpack_from('<HHIQ', data, entry)
            (arch,) = struct.unpack_from('<I', data, entry + 28)
            if kind in (FATBIN_PTX, FATBIN_CUBIN):
                archs.add(f'{"compute" if kind == FATBIN_PTX else "sm"}_{arch}')
            if entry_header == 0:
                break
            entry += entry_header + payload
        pos = end
    return archs


def links_and_symbols(path: str) -> Tuple[List[str], List[str]]:
    """(the libraries the file needs, the names in its dynamic and static symbol tables). The kernels'
    host stubs are local symbols: only the static table (`.symtab`, absent from stripped files) has them."""
    with open(path, 'rb') as f:
        elf = ELFFile(f)
        dynamic = elf.get_section_by_name('.dynamic')
        needed = [tag.needed for tag in dynamic.iter_tags('DT_NEEDED')] if dynamic is not None else []
        symbols = [
            symbol.name
            for table in ('.dynsym', '.symtab')
            if elf.get_section_by_name(table) is not None
            for symbol in elf.get_section_by_name(table).iter_symbols()
            if symbol.name
        ]
    return needed, symbols


def glibc_needed(path: str) -> str:
    """The newest glibc symbol version an ELF file needs ('2.32' for `__libc_single_threaded`), '' for none:
    a machine with an older glibc cannot load it."""
    with open(path, 'rb') as f:
        section = ELFFile(f).get_section_by_name('.gnu.version_r')
        names = [aux.name for _, auxs in section.iter_versions() for aux in auxs] if section is not None else []
    versions = [tuple(int(x) for x in n[len('GLIBC_') :].split('.')) for n in names if n.startswith('GLIBC_')]
    return '.'.join(map(str, max(versions))) if versions else ''


def inspect_library(path: str) -> dict:
    """The CUDA evidence of a shared library: fat-binary size and architectures, CUDA libraries, kernels."""
    sections = elf_sections(path)
    fatbin = read_section(path, '.nv_fatbin')
    needed, symbols = links_and_symbols(path)
    kernels = sorted({s for s in symbols if 'cuda_kernel' in s})
    return dict(
        path=path,
        size_mib=round(os.path.getsize(path) / 2**20, 1),
        nv_fatbin_mib=round(sections.get('.nv_fatbin', (0, 0))[1] / 2**20, 1),
        archs=sorted(fatbin_archs(fatbin), key=lambda a: (a.split('_')[0], int(a.split('_')[1]))),
        cuda_libraries=[n for n in needed if 'cud' in n],
        cuda_kernel_symbols=len(kernels),
        roi_align_kernels=[s for s in kernels if 'roi_align_forward_cuda_kernel' in s][:3],
    )


def mmcv_ext_path() -> str:
    """The file of mmcv's compiled extension, found without importing mmcv."""
    spec = importlib.util.find_spec('mmcv')
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('mmcv is not installed in this environment')
    found = glob.glob(osp.join(list(spec.submodule_search_locations)[0], '_ext*.so'))
    if not found:
        raise SystemExit(
            'mmcv has no compiled `_ext`: it was built without its ops (MMCV_WITH_OPS=1, --no-build-isolation)'
        )
    return found[0]


def required_archs(arch_list: str) -> Set[str]:
    """The fat-binary entries a TORCH_CUDA_ARCH_LIST asks for: '8.6;9.0+PTX' -> sm_86, sm_90, compute_90."""
    wanted: Set[str] = set()
    for item in filter(None, re.split(r'[;\s]+', arch_list)):
        number = item.split('+')[0].replace('.', '')
        wanted.add(f'sm_{number}')
        if item.endswith('+PTX'):
            wanted.add(f'compute_{number}')
    return wanted


def runs_on(archs: Sequence[str], capability: Tuple[int, int]) -> bool:
    """Whether kernels built for `archs` ('sm_90', 'compute_90', ...) run on a GPU of `capability` (9, 0).

    A GPU runs a cubin built for its own major version and a minor version up to its own, and compiles PTX
    built for a capability up to its own.
    """
    major, minor = capability
    cubin = any(a == f'sm_{major}{m}' for a in archs for m in range(minor + 1))
    ptx = any(a.startswith('compute_') and int(a.split('_')[1]) <= major * 10 + minor for a in archs)
    return cubin or ptx


# --------------------------------------------------------------------------------------------- GPUs
def gpu_archs() -> str:
    """The compute capabilities of the GPUs this torch sees, as a TORCH_CUDA_ARCH_LIST ('' without one)."""
    import torch

    caps = {'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return ';'.join(sorted(caps, key=lambda c: tuple(map(int, c.split('.')))))


# ---------------------------------------------------------------------------------------------- nvcc
def toolkit_requirements(torch_requires: Sequence[str], cuda_version: str) -> List[str]:
    """The packages that bring nvcc and the CUDA headers matching torch's CUDA.

    torch's CUDA 13 wheels pin NVIDIA's `cuda-toolkit` meta-package: the same version with its `nvcc`,
    `cccl`, `crt` and `nvvm` extras is the matching compiler. `nvcc` alone is not enough: nvidia-cuda-nvcc
    requires nvidia-nvvm and nvidia-cuda-crt unpinned, so pip takes the newest (13.5 beside a 13.0 ptxas:
    "ptxas fatal: Unsupported .version 9.5"); the `crt` and `nvvm` extras pin them to the toolkit's.
    Wheels that pin the older per-library packages (`nvidia-cuda-runtime-cu12`, ...) get `nvidia-cuda-nvcc-cu12`
    and `nvidia-cuda-cccl-cu12` of the same CUDA minor version.
    """
    for requirement in torch_requires:
        match = re.match(r'\s*cuda-toolkit\s*(\[[^\]]*\])?\s*==\s*([0-9.]+)', requirement)
        if match:
            return [f'cuda-toolkit[nvcc,cccl,crt,nvvm]=={match.group(2)}']
    major, minor = cuda_version.split('.')[:2]
    return [f'nvidia-cuda-{part}-cu{major}=={major}.{minor}.*' for part in ('nvcc', 'cccl', 'runtime')]


def merge_tree(sources: Sequence[str], dest: str) -> None:
    """Builds `dest` as the union of the `sources` trees: real folders, symbolic links to the files.

    The first source that has a file wins. The NVIDIA wheels split one CUDA toolkit over several
    folders (`nvidia/cu13`, or `nvidia/cuda_nvcc`, `nvidia/cuda_runtime`, ... for CUDA 12), while
    torch's extension builder and mmcv's setup want one CUDA_HOME with bin/, include/ and lib64/.
    """
    for source in sources:
        for root, _, files in os.walk(source):
            target = osp.join(dest, osp.relpath(root, source))
            os.makedirs(target, exist_ok=True)
            for name in files:
                link = osp.join(target, name)
                if not osp.lexists(link):
                    os.symlink(osp.join(root, name), link)


def link_cuda_runtime(home: str) -> None:
    """lib64 -> lib, and an unversioned libcudart.so: the wheels ship only libcudart.so.N, and the
    linker's `-lcudart` finds nothing else ("cannot find -lcudart")."""
    lib = osp.join(home, 'lib')
    if osp.isdir(lib) and not osp.lexists(osp.join(home, 'lib64')):
        os.symlink('lib', osp.join(home, 'lib64'))
    if not osp.lexists(osp.join(lib, 'libcudart.so')):
        versioned = sorted(glob.glob(osp.join(lib, 'libcudart.so.*')), key=len)
        if not versioned:
            raise SystemExit(f'no libcudart.so.* under {lib}: the CUDA runtime package is missing')
        os.symlink(osp.basename(versioned[0]), osp.join(lib, 'libcudart.so'))


def install_toolkit(dest: str) -> str:
    """pip-installs the nvcc matching torch's CUDA and assembles it as one CUDA_HOME at `dest`."""
    import torch

    if not torch.version.cuda:
        raise SystemExit(f'torch {torch.__version__} has no CUDA: a CUDA build of mmcv needs a CUDA-enabled torch')
    packages = toolkit_requirements(importlib.metadata.requires('torch') or [], torch.version.cuda)
    # pip reports on stderr: stdout carries only the CUDA_HOME that `make env` reads.
    subprocess.run([sys.executable, '-m', 'pip', 'install', *packages], check=True, stdout=sys.stderr)
    nvidia = osp.join(osp.dirname(osp.dirname(torch.__file__)), 'nvidia')
    roots = sorted(d for d in glob.glob(osp.join(nvidia, '*')) if osp.isdir(d))
    compilers = [d for d in roots if osp.isfile(osp.join(d, 'bin', 'nvcc'))]
    if not compilers:
        raise SystemExit(f'{packages} installed no bin/nvcc under {nvidia}')
    home = osp.abspath(dest)
    if osp.isdir(home):
        subprocess.run(['rm', '-rf', home], check=True)  # symlinks only: rebuilt from the packages
    merge_tree(compilers + [d for d in roots if d not in compilers], home)
    link_cuda_runtime(home)
    version = (
        subprocess.run([osp.join(home, 'bin', 'nvcc'), '--version'], capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    print(f'CUDA_HOME={home} ({version}; torch {torch.__version__}, CUDA {torch.version.cuda})', file=sys.stderr)
    return home


# --------------------------------------------------------------------------------------------- check
def _ops_agree_with_torchvision(device: str) -> None:
    """RoIAlign and nms of mmcv on `device` give torchvision's results (an independent implementation)."""
    import torch
    import torchvision
    from mmcv.ops import RoIAlign, nms

    feats = torch.linspace(0, 1, 2 * 3 * 12 * 12).reshape(2, 3, 12, 12).to(device)
    rois = torch.tensor([[0, 1.0, 1.0, 9.0, 7.0], [1, 0.5, 2.0, 6.0, 11.0]], device=device)
    got = RoIAlign((3, 3), spatial_scale=1.0, sampling_ratio=2, aligned=True)(feats, rois)
    want = torchvision.ops.roi_align(feats.cpu(), rois.cpu(), (3, 3), 1.0, 2, aligned=True)
    if got.device.type != device or not torch.allclose(got.cpu(), want, atol=1e-5):
        raise SystemExit(f'mmcv RoIAlign on {device} disagrees with torchvision')
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30.0]], device=device)
    scores = torch.tensor([0.9, 0.8, 0.7], device=device)
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    if keep.cpu().tolist() != torchvision.ops.nms(boxes.cpu(), scores.cpu(), 0.5).tolist():
        raise SystemExit(f'mmcv nms on {device} disagrees with torchvision')


def check(mode: str, archs: str) -> dict:
    """Proves the build asked for; exits with the reason otherwise. Returns the evidence."""
    import torch

    path = mmcv_ext_path()
    evidence = inspect_library(path)
    _ops_agree_with_torchvision('cpu')
    if mode == 'cpu':
        if evidence['archs']:
            raise SystemExit(
                f'{path} holds CUDA kernels ({", ".join(evidence["archs"])}) but a CPU-only build was asked for'
            )
        evidence['proof'] = 'CPU-only build: no CUDA kernels; RoIAlign and nms agree with torchvision on CPU'
    elif torch.cuda.is_available():
        _ops_agree_with_torchvision('cuda')
        evidence['proof'] = f'RoIAlign and nms ran on {torch.cuda.get_device_name()} and agree with torchvision'
    else:
        missing = required_archs(archs) - set(evidence['archs'])
        if not evidence['archs'] or missing:
            raise SystemExit(f'{path} lacks CUDA kernels for {sorted(missing) or archs} (has {evidence["archs"]})')
        evidence['proof'] = f'no GPU here: the extension holds CUDA kernels for {", ".join(evidence["archs"])}'
    return evidence


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('gpu-archs', help='compute capabilities of the visible GPUs')
    toolkit = sub.add_parser('toolkit', help="install nvcc matching torch's CUDA; print the CUDA_HOME made")
    toolkit.add_argument('dest')
    checker = sub.add_parser('check', help='prove which mmcv build was made')
    checker.add_argument('mode', choices=['cpu', 'cuda'])
    checker.add_argument(
        '--archs',
        default='',
        help='TORCH_CUDA_ARCH_LIST of the build: without a GPU, the '
        'extension must hold kernels for each of them (empty: any CUDA kernels)',
    )
    inspector = sub.add_parser('inspect', help='CUDA evidence of a shared library, as JSON')
    inspector.add_argument('library', nargs='?')
    args = parser.parse_args(argv)
    if args.command == 'gpu-archs':
        print(gpu_archs())
    elif args.command == 'toolkit':
        print(install_toolkit(args.dest))
    elif args.command == 'check':
        evidence = check(args.mode, args.archs)
        print(f'mmcv build check ({args.mode}): {evidence.pop("proof")}\n{json.dumps(evidence, indent=1)}')
    else:
        print(json.dumps(inspect_library(args.library or mmcv_ext_path()), indent=1))


if __name__ == '__main__':
    main()
