"""Builds a wheelhouse: one folder holding every wheel a GPU node without network needs beyond its own torch
environment, a manifest of what it holds and the GPU check suite (`tools/gpu_check.sh`). See docs/gpu.md.

    python -m tools.env.wheelhouse build --out DIR                          # the pinned stack, as .venv holds it
    python -m tools.env.wheelhouse build --out DIR --python 3.12 --torch 2.11.0 --cuda 13 --archs 9.0
    python -m tools.env.wheelhouse pack --out DIR                           # run by the environment's own python

`build` picks (or prepares) an environment holding the target's Python, torch and an mmcv compiled for it and
the architectures, then runs `pack` in it. `pack` builds the maformer_mm wheel from the source tree and
re-packs the environment's installed distributions (the requirements' closure, less what a CUDA torch
container holds) into wheels, with debug sections stripped from compiled code, so nothing is downloaded twice
and mmcv's hour of compilation travels. The host libraries' shipped configs (`mmdet/.mim`, ...) travel as
installed: this project's configs inherit them (`mmdet::`).
"""

import argparse
import base64
import csv
import email.parser
import glob
import hashlib
import io
import json
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MANIFEST = 'manifest.json'
CHECKS = 'maformer_mm-checks.tar.gz'
SUMS = 'SHA256SUMS'
# What a CUDA torch container holds, with everything these require: never carried (`--leave-out`). torch and
# torchvision are the node's own whatever is asked (their CUDA build is the node's); the others are large and in
# such images.
NODE_TORCH = ('torch', 'torchvision')
LEAVE_OUT = ('torch', 'torchvision', 'numpy', 'scipy', 'opencv-python', 'opencv-python-headless', 'matplotlib')
# Carried even where the node has them: mmengine's `mmdet::` config bases need pkg_resources (setuptools < 82).
ALWAYS = ('setuptools',)
# Carried for the node's side: pip installs without network; pytest and pyelftools run tests/test_gpu.
CHECK_TOOLS = ('pip', 'pytest', 'pyelftools')
# Runtime requirements from requirements.txt that a build environment does not need.
NOT_FOR_NODES = (
    *('torch', 'torchvision', 'ruff', 'onnx', 'onnxscript', 'onnxruntime'),
    *('hypothesis', 'nbclient', 'nbformat', 'ipykernel'),  # tests outside tests/test_gpu
)
# The check suite: what tests/test_gpu and the benchmark read from a source tree (maformer_mm itself is the wheel).
SUITE = ('tests', 'benchmarks', 'tools', 'configs', 'pytest.ini', 'setup.py', 'Makefile', 'requirements.txt')


# ------------------------------------------------------------------------------------------ environment facts
def torch_facts() -> dict:
    """What an mmcv extension built against this interpreter's torch depends on, and the GPUs it sees."""
    import platform
    import sysconfig

    facts = dict(
        python='%d.%d' % sys.version_info[:2],
        python_tag='cp%d%d' % sys.version_info[:2],
        platform=sysconfig.get_platform(),
        glibc=platform.libc_ver()[1],
        executable=sys.executable,
    )
    try:
        import torch
    except ImportError as error:
        return dict(facts, torch=None, error=f'{type(error).__name__}: {error}')
    facts.update(
        torch=torch.__version__,
        torch_cuda=torch.version.cuda,
        cxx11_abi=bool(torch._C._GLIBCXX_USE_CXX11_ABI),
        cuda_available=torch.cuda.is_available(),
        gpus=[],
    )
    for i in range(torch.cuda.device_count() if facts['cuda_available'] else 0):
        props = torch.cuda.get_device_properties(i)
        facts['gpus'].append(
            dict(
                name=props.name, capability='%d.%d' % (props.major, props.minor), memory_gib=props.total_memory / 2**30
            )
        )
    return facts


def run_json(python: str, *args: str) -> dict:
    """Runs `python -m tools.env.wheelhouse ARGS` (in the repository) and returns the JSON it prints last."""
    proc = subprocess.run(
        [python, '-m', 'tools.env.wheelhouse', *args], cwd=REPO, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise SystemExit(f'{python} -m tools.env.wheelhouse {" ".join(args)} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def public_version(version: str) -> Tuple[int, ...]:
    """'2.11.0+cu130' or '2.11.0a0+git1234' -> (2, 11, 0)."""
    return tuple(int(x) for x in re.findall(r'\d+', version.split('+')[0])[:3])


# ------------------------------------------------------------------------------------------- distributions
def normalize(name: str) -> str:
    """PEP 503 name: 'Opencv_Python' -> 'opencv-python'."""
    return re.sub(r'[-_.]+', '-', name).lower()


def requirement_class():
    """packaging's Requirement: the environment's own, else pip's vendored copy."""
    try:
        from packaging.requirements import Requirement
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def wanted(requirement: str, extras: Iterable[str] = ()) -> Optional[Tuple[str, Set[str], object]]:
    """(name, extras, specifier) of a `Requires-Dist` that applies here with `extras` requested, else None."""
    req = requirement_class()(requirement)
    if req.marker is not None and not any(req.marker.evaluate({'extra': e}) for e in ('', *extras)):
        return None
    return normalize(req.name), set(req.extras), req.specifier


def installed() -> Dict[str, object]:
    """Normalised name -> the distribution that imports would find first (sys.path order)."""
    import importlib.metadata as md

    found: Dict[str, object] = {}
    for dist in md.distributions():
        found.setdefault(normalize(dist.metadata['Name']), dist)
    return found


def closure(
    roots: Dict[str, Set[str]], dists: Dict[str, object], stop: Set[str] = frozenset(), strict: bool = True
) -> Dict[str, str]:
    """Name -> version of every installed distribution `roots` (name -> extras) need, through their requirements,
    without entering `stop`. A requirement that is not installed stops the build with its name (`strict`) or
    is passed over."""
    seen: Dict[str, str] = {}
    todo = list(roots.items())
    while todo:
        name, extras = todo.pop()
        if name in stop:
            continue
        if name not in dists:
            if not strict:
                continue
            raise SystemExit(f'{name} is required but not installed in {sys.prefix}: the wheelhouse would lack it')
        dist = dists[name]
        if name in seen and not extras:
            continue
        seen[name] = dist.version
        for requirement in dist.requires or []:
            need = wanted(requirement, extras)
            if need is not None and need[0] not in seen:
                todo.append((need[0], need[1]))
    return seen


# ------------------------------------------------------------------------------------------------- re-packing
def record_hash(data: bytes) -> str:
    return 'sha256=' + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()


def compressed_tag(tags: Sequence[str]) -> str:
    """The file name's tag of a WHEEL file's Tag lines: 'cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64'."""
    parts = [list(dict.fromkeys(t.split('-')[i] for t in tags)) for i in range(3)]
    return '-'.join('.'.join(p) for p in parts)


def debug_sections(path: str) -> bool:
    """Whether a file is an ELF object carrying DWARF debug sections."""
    with open(path, 'rb') as f:
        if f.read(4) != b'\x7fELF':
            return False
    from tools.env.mmcv_build import elf_sections

    return any(name.startswith('.debug_') for name in elf_sections(path))


def stripped(path: str) -> bytes:
    """The bytes of an ELF file without its debug sections (`strip --strip-debug`; the symbol tables stay)."""
    tool = shutil.which('strip') or shutil.which('objcopy')
    if tool is None:
        raise SystemExit(f'{path} has debug sections and neither strip nor objcopy is installed (binutils)')
    with tempfile.TemporaryDirectory() as tmp:
        out = osp.join(tmp, osp.basename(path))
        subprocess.run([tool, '--strip-debug', '-o', out, path], check=True)
        with open(out, 'rb') as f:
            return f.read()


def repack(dist, out_dir: str) -> dict:
    """Writes the wheel of an installed distribution (its RECORD's files, as installed; byte code left out;
    debug sections stripped) into `out_dir`. Returns its name, version, file and what was stripped."""
    info_dir = str(dist._path)  # the .dist-info folder
    site = osp.dirname(info_dir)
    info_name = osp.basename(info_dir)
    name, version = dist.metadata['Name'], dist.version
    wheel_meta = email.parser.Parser().parsestr(dist.read_text('WHEEL') or '')
    tags = wheel_meta.get_all('Tag') or []
    if not tags:
        raise SystemExit(f'{name} {version} was not installed from a wheel (no WHEEL tags in {info_dir})')
    direct = json.loads(dist.read_text('direct_url.json') or '{}')
    if direct.get('dir_info', {}).get('editable'):
        raise SystemExit(
            f'{name} is an editable install ({direct.get("url")}): build its wheel from its source instead'
        )
    scripts = {e.name for e in dist.entry_points if e.group in ('console_scripts', 'gui_scripts')}
    data_dir = f'{info_name[: -len(".dist-info")]}.data'
    prefix = osp.realpath(sys.prefix)
    entries: List[Tuple[str, bytes]] = []
    strips: List[str] = []
    for row in csv.reader(io.StringIO(dist.read_text('RECORD') or '')):
        rel = row[0]
        if '__pycache__' in rel or rel.endswith('.pyc'):
            continue
        if rel.startswith(info_name + '/') and rel.split('/', 1)[1] in (
            'RECORD',
            'INSTALLER',
            'REQUESTED',
            'direct_url.json',
        ):
            continue
        path = osp.normpath(osp.join(site, rel))
        if not osp.isfile(path):
            raise SystemExit(f'{name}: {path} is listed in its RECORD but missing: reinstall {name}')
        if debug_sections(path):
            data = stripped(path)
            strips.append(f'{rel}: {osp.getsize(path) / 2**20:.1f} -> {len(data) / 2**20:.1f} MiB')
        else:
            with open(path, 'rb') as f:
                data = f.read()
        if rel.startswith('..'):  # outside site-packages: scripts and data files, under their install scheme
            outside = osp.relpath(osp.realpath(path), prefix)
            if outside.startswith('bin' + os.sep):
                base = osp.basename(outside)
                if any(re.fullmatch(re.escape(s) + r'[\d.]*', base) for s in scripts):
                    continue  # console scripts are made by the installer from entry_points.txt
                data = re.sub(rb'^#!.*python[^\n]*', b'#!python', data, count=1)  # the installer sets the interpreter
                rel = f'{data_dir}/scripts/{base}'
            else:
                rel = f'{data_dir}/data/{outside}'
        entries.append((rel, data))
    tag = compressed_tag(tags)
    filename = f'{re.sub(r"[-_.]+", "_", name)}-{version}-{tag}.whl'
    record = [f'{rel},{record_hash(data)},{len(data)}' for rel, data in entries] + [f'{info_name}/RECORD,,']
    entries.sort(key=lambda e: (e[0].startswith(info_name + '/'), e[0]))  # .dist-info last, as wheels have it
    entries.append((f'{info_name}/RECORD', ('\n'.join(record) + '\n').encode()))
    with zipfile.ZipFile(osp.join(out_dir, filename), 'w', zipfile.ZIP_DEFLATED, compresslevel=6) as whl:
        for rel, data in entries:
            info = zipfile.ZipInfo(rel, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if rel.endswith('.so') or '/scripts/' in rel else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            whl.writestr(info, data, compresslevel=6)
    return dict(name=normalize(name), version=version, file=filename, stripped=strips)


def build_own_wheel(out_dir: str) -> str:
    """Builds maformer_mm's wheel from the source tree into `out_dir`; returns its file name."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation', '-w', tmp, REPO],
            check=True,
            stdout=sys.stderr,
        )
        (wheel,) = glob.glob(osp.join(tmp, 'maformer_mm-*.whl'))
        shutil.move(wheel, osp.join(out_dir, osp.basename(wheel)))
    return osp.basename(wheel)


def wheel_requirements(path: str) -> List[str]:
    """The Requires-Dist lines of a wheel file."""
    with zipfile.ZipFile(path) as whl:
        meta = next(n for n in whl.namelist() if n.endswith('.dist-info/METADATA'))
        return email.parser.Parser().parsestr(whl.read(meta).decode()).get_all('Requires-Dist') or []


def write_checks(out_dir: str) -> str:
    """The check suite (tests, benchmarks, tools, configs: no package code) as a tar.gz in `out_dir`."""

    def keep(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
        if '__pycache__' in info.name or info.name.endswith('.pyc') or '.pytest_cache' in info.name:
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ''
        info.mtime = 0
        return info

    path = osp.join(out_dir, CHECKS)
    with tarfile.open(path, 'w:gz') as tar:
        for name in SUITE:
            tar.add(osp.join(REPO, name), arcname=name, filter=keep)
    return CHECKS


def sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def source_commit() -> str:
    """The commit the wheelhouse was built from, '+dirty' when the tree had changes."""
    git = ['git', '-C', REPO]
    try:
        commit = subprocess.run([*git, 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True, check=True)
        dirty = subprocess.run([*git, 'status', '--porcelain', '--untracked-files=no'], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return commit.stdout.strip() + ('+dirty' if dirty.stdout.strip() else '')


def pack(out_dir: str, leave_out: Sequence[str], archs: str = '') -> dict:
    """Writes the wheelhouse of this interpreter's environment into `out_dir`; returns its manifest."""
    from tools.env.mmcv_build import glibc_needed, inspect_library, mmcv_ext_path, required_archs

    start = time.time()
    facts = torch_facts()
    if facts['torch'] is None:
        raise SystemExit(
            f'{sys.executable} has no torch ({facts["error"]}): a wheelhouse is built in a torch environment'
        )
    os.makedirs(out_dir, exist_ok=True)
    for old in glob.glob(osp.join(out_dir, '*.whl')) + [osp.join(out_dir, n) for n in (MANIFEST, CHECKS, SUMS)]:
        if osp.exists(old):
            os.remove(old)
    ext = inspect_library(mmcv_ext_path())
    missing = required_archs(archs) - set(ext['archs'])
    if missing:
        raise SystemExit(f'mmcv in {sys.prefix} lacks kernels for {sorted(missing)} (has {ext["archs"]}): rebuild it')

    own = build_own_wheel(out_dir)
    dists = installed()
    roots: Dict[str, Set[str]] = {}
    for requirement in wheel_requirements(osp.join(out_dir, own)):
        need = wanted(requirement, ['pretrain'])
        if need is not None:
            roots.setdefault(need[0], set()).update(need[1])
    for name in CHECK_TOOLS:
        roots.setdefault(name, set())
    left = {normalize(n): set() for n in (*NODE_TORCH, *leave_out) if normalize(n) in dists}
    node_has = closure(left, dists, strict=False)
    carried = closure(roots, dists, stop=set(node_has) - set(ALWAYS))

    wheels = [dict(name='maformer-mm', version=own.split('-')[1], file=own, stripped=[])]
    for name in sorted(carried):
        wheels.append(repack(dists[name], out_dir))
    for wheel in wheels:
        path = osp.join(out_dir, wheel['file'])
        wheel.update(size=osp.getsize(path), sha256=sha256(path))
    checks = write_checks(out_dir)
    shutil.copy2(osp.join(REPO, 'tools', 'gpu_check.sh'), osp.join(out_dir, 'gpu_check.sh'))
    with zipfile.ZipFile(osp.join(out_dir, next(w['file'] for w in wheels if w['name'] == 'mmcv'))) as whl:
        ext_name = next(n for n in whl.namelist() if re.fullmatch(r'mmcv/_ext[^/]*\.so', n))
        ext_size = whl.getinfo(ext_name).file_size
    files = [w['file'] for w in wheels] + [checks, 'gpu_check.sh']
    total = sum(osp.getsize(osp.join(out_dir, f)) for f in files)
    manifest = dict(
        format=1,
        built=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        source=source_commit(),
        pack_seconds=None,  # the packing only: `make wheelhouse` prints the whole build's time
        target=dict(
            {k: facts[k] for k in ('python', 'python_tag', 'platform', 'glibc', 'torch', 'torch_cuda', 'cxx11_abi')},
            archs=ext['archs'],
            glibc_needed=glibc_needed(ext['path']),
        ),
        mmcv=dict(
            version=dists['mmcv'].version,
            cuda_ops=bool(ext['archs']),
            archs=ext['archs'],
            ext_mib=round(ext_size / 2**20, 1),
            ext_unstripped_mib=ext['size_mib'],
            nv_fatbin_mib=ext['nv_fatbin_mib'],
        ),
        left_out={n: dists[n].version for n in sorted(node_has) if n not in carried},
        wheels=wheels,
        checks=dict(file=checks, size=osp.getsize(osp.join(out_dir, checks)), sha256=sha256(osp.join(out_dir, checks))),
        total_mib=round(total / 2**20, 2),
    )
    manifest['pack_seconds'] = round(time.time() - start, 1)
    with open(osp.join(out_dir, MANIFEST), 'w') as f:
        json.dump(manifest, f, indent=1)
    with open(osp.join(out_dir, SUMS), 'w') as f:
        f.writelines(f'{sha256(osp.join(out_dir, n))}  {n}\n' for n in [*files, MANIFEST])
    return manifest


# ---------------------------------------------------------------------------------------- build environments
def requirement_pin(name: str) -> str:
    """The line of requirements.txt that pins `name` ('torch===2.13.0'), without its comment."""
    with open(osp.join(REPO, 'requirements.txt')) as f:
        for line in f:
            line = line.split('#')[0].strip()
            if re.match(rf'{re.escape(name)}\s*=', line):
                return line
    raise SystemExit(f'requirements.txt pins no {name}')


def find_python(version: str) -> str:
    """An interpreter of Python `version` ('3.12'): `python3.12` on PATH, else pyenv's."""
    found = shutil.which(f'python{version}')
    candidates = [found] if found else []
    candidates += sorted(glob.glob(osp.expanduser(f'~/.pyenv/versions/{version}.*/bin/python{version}')), reverse=True)
    for candidate in candidates:
        proc = subprocess.run(
            [candidate, '-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], capture_output=True
        )
        if proc.returncode == 0 and proc.stdout.decode().strip() == version:
            return candidate
    raise SystemExit(
        f'no Python {version} found (python{version} on PATH, ~/.pyenv/versions/{version}.*): set --python-exe'
    )


def matches(facts: dict, python: str, torch: str, cuda: Optional[str]) -> List[str]:
    """What differs between an environment's facts and the target (empty: it is the target)."""
    differences = []
    if facts.get('torch') is None:
        return [f'no torch ({facts.get("error")})']
    if facts['python'] != python:
        differences.append(f'Python {facts["python"]}, not {python}')
    if public_version(facts['torch']) != public_version(torch):
        differences.append(f'torch {facts["torch"]}, not {torch}')
    if cuda and (facts['torch_cuda'] or '').split('.')[0] != cuda:
        differences.append(f'torch built for CUDA {facts["torch_cuda"]}, not CUDA {cuda}')
    return differences


def prepare(env: str, interpreter: str, torch: str, cuda: Optional[str], archs: str, index: Optional[str]) -> str:
    """Makes `env` a build environment: the target's torch, mmcv compiled for it and `archs`, the runtime stack."""
    python = osp.join(env, 'bin', 'python')
    if not osp.exists(python):
        subprocess.run([interpreter, '-m', 'venv', env], check=True)
    pip = [python, '-m', 'pip', 'install', *(['--extra-index-url', index] if index else [])]
    subprocess.run([python, '-m', 'pip', 'install', '-q', '--upgrade', 'pip>=24'], check=True)
    torch_req = f'torch=={torch}' if index else f'torch==={torch}'  # `===`: the registry's public build (Makefile)
    build = [requirement_pin(n) for n in ('setuptools', 'wheel', 'ninja', 'pyelftools')]
    subprocess.run([*pip, torch_req, 'torchvision', *build], check=True)
    built_for = run_json(python, 'facts')['torch_cuda'] or 'no CUDA'
    if cuda and built_for.split('.')[0] != cuda:
        raise SystemExit(
            f'torch {torch} from the index is built for {built_for}, not CUDA {cuda}: name an index '
            f'of torch builds for CUDA {cuda} with --torch-index (WH_TORCH_INDEX)'
        )
    subprocess.run(
        ['bash', osp.join(REPO, 'tools', 'env', 'build_mmcv.sh'), python, requirement_pin('mmcv'), 'cuda', archs],
        check=True,
    )
    with open(osp.join(REPO, 'requirements.txt')) as f:
        runtime = [
            line.split('#')[0].strip()
            for line in f
            if line.split('#')[0].strip() and normalize(re.split(r'[=<>!~ ]', line.strip())[0]) not in NOT_FOR_NODES
        ]
    subprocess.run([*pip, *runtime], check=True)
    return python


def target_env(args: argparse.Namespace, venv_python: str, venv: Optional[dict]) -> Tuple[str, bool, dict]:
    """(python of the environment to pack, whether it must be prepared first, the target) for the settings `args`:
    .venv (`venv` are its facts) when it is the target, else `--env` or a folder named after the target."""
    target = dict(
        python=args.python or (venv['python'] if venv else '%d.%d' % sys.version_info[:2]),
        torch=args.torch or requirement_pin('torch').split('=')[-1],
        cuda=str(args.cuda) if args.cuda else None,
    )
    if args.env:
        return osp.join(osp.abspath(args.env), 'bin', 'python'), True, target
    if venv and not matches(venv, **target) and (not args.archs or has_archs(venv_python, args.archs)):
        return venv_python, False, target  # .venv is the target: nothing to build
    slug = 'py{python}-torch{torch}-cu{cuda}-'.format(**dict(target, cuda=target['cuda'] or 'any'))
    slug = re.sub(r'[^0-9A-Za-z.-]+', '_', slug + (args.archs or 'default'))
    return osp.join(REPO, 'build', 'wheelhouse-env', slug, 'bin', 'python'), True, target


def build(args: argparse.Namespace) -> dict:
    """Chooses or prepares the environment for the target, then packs the wheelhouse in it."""
    start = time.time()
    venv_python = osp.join(REPO, '.venv', 'bin', 'python')
    venv = run_json(venv_python, 'facts') if osp.exists(venv_python) else None
    env_python, build_it, target = target_env(args, venv_python, venv)
    if build_it:
        interpreter = args.python_exe or ('' if osp.exists(env_python) else find_python(target['python']))
        env = osp.dirname(osp.dirname(env_python))
        prepare(env, interpreter, target['torch'], target['cuda'], args.archs or '', args.torch_index)
        differences = matches(run_json(env_python, 'facts'), **target)
        if differences:
            raise SystemExit(f'{env_python} is not the target: {"; ".join(differences)}')
    command = [env_python, '-m', 'tools.env.wheelhouse', 'pack', '--out', osp.abspath(args.out)]
    command += ['--archs', args.archs or '', '--leave-out', *args.leave_out]
    subprocess.run(command, cwd=REPO, check=True)
    with open(osp.join(args.out, MANIFEST)) as f:
        manifest = json.load(f)
    print(f'wheelhouse built in {time.time() - start:.0f} s from {env_python}', file=sys.stderr)
    return manifest


def has_archs(python: str, archs: str) -> bool:
    """Whether the mmcv extension of the environment of `python` holds kernels for every one of `archs`: its fat
    binary read as `pack` reads it (`check cuda` would run the ops on a GPU here instead, whatever `archs`)."""
    from tools.env.mmcv_build import required_archs

    proc = subprocess.run(
        [python, osp.join(REPO, 'tools', 'env', 'mmcv_build.py'), 'inspect'], capture_output=True, text=True, cwd=REPO
    )
    return proc.returncode == 0 and required_archs(archs) <= set(json.loads(proc.stdout)['archs'])


def summary(manifest: dict) -> str:
    """A short text of a manifest: target, mmcv, the wheels by size."""
    target = manifest['target']
    lines = [
        f'Python {target["python"]}, torch {target["torch"]} (CUDA {target["torch_cuda"]}), '
        f'mmcv {manifest["mmcv"]["version"]} ops for {", ".join(target["archs"]) or "CPU only"}: '
        f'{len(manifest["wheels"])} wheels, {manifest["total_mib"]} MiB',
    ]
    for wheel in sorted(manifest['wheels'], key=lambda w: -w['size']):
        lines.append(f'  {wheel["size"] / 2**20:7.2f} MiB  {wheel["file"]}')
    return '\n'.join(lines)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest='command', required=True)
    sub.add_parser('facts', help="this interpreter's Python and torch, as JSON")
    for name in ('build', 'pack'):
        p = sub.add_parser(name)
        p.add_argument('--out', required=True, help='the wheelhouse folder (its wheels and manifest are replaced)')
        p.add_argument('--archs', default='', help="TORCH_CUDA_ARCH_LIST of mmcv's kernels, e.g. '9.0'")
        p.add_argument('--leave-out', nargs='*', default=list(LEAVE_OUT), help='what the node has: never carried')
    builder = sub.choices['build']
    builder.add_argument('--python', help="the target's Python version, e.g. 3.12 (default: .venv's)")
    builder.add_argument('--python-exe', help='an interpreter of that version (default: found on PATH or pyenv)')
    builder.add_argument('--torch', help="the target's torch version (default: requirements.txt's)")
    builder.add_argument('--cuda', help="the CUDA major version of the target's torch, e.g. 13")
    builder.add_argument('--torch-index', help='an extra index with torch builds for that CUDA version')
    builder.add_argument('--env', help='the build environment folder (default: .venv when it is the target)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = make_parser().parse_args(argv)
    if args.command == 'facts':
        print(json.dumps(torch_facts()))
    elif args.command == 'pack':
        print(summary(pack(args.out, args.leave_out, args.archs)))
    else:
        print(summary(build(args)))


if __name__ == '__main__':
    main()
