"""Checks a GPU node from a wheelhouse (`make wheelhouse`), without network: `tools/gpu_check.sh` runs this with the
node's own python, from the check suite it unpacked (no package code: maformer_mm is the wheel's).

1. The wheelhouse's files against its SHA256SUMS, then the node's Python and torch against the manifest: the same
   Python, torch major.minor, CUDA major version and C++ ABI, and mmcv's kernels built for the node's GPUs.
2. Every wheel installed offline (`pip --no-index --no-deps`, pip run from its own wheel) into OUT/site, a private
   folder put first on PYTHONPATH: the node's site-packages stay as they were, and its torch is the one used.
3. On a mismatch it says why, leaves mmcv's compiled extension out and runs the REDUCED set only: what needs
   no mmcv ops (the backbone, its kernels and precision, the benchmark's MAFormer rows). Else the full set:
   imports, a Mask R-CNN built from the shipped config, mmcv's ops against torchvision, all of tests/test_gpu,
   `benchmarks/cuda_benchmark.py --quick`.
4. One report, OUT/report.md and OUT/report.json: card, driver, torch, every step's seconds, every test's
   outcome, every number. Exit status 0: all passed; 1: something failed; 2: refused (mismatch, reduced set run);
   3: nothing could run (corrupt wheelhouse, no torch).
"""

import argparse
import glob
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from typing import Dict, List, Optional, Sequence, Tuple

from tools.env.wheelhouse import MANIFEST, SUMS, public_version, sha256

SUITE = os.getcwd()  # gpu_check.sh starts this in the unpacked check suite
# The reduced set: tests that need neither mmcv's compiled ops nor mmdet.models / mmseg.models (which import them).
REDUCED_TESTS = (
    'tests/test_gpu/test_attention_kernels.py',
    'tests/test_gpu/test_backbone_precision.py',
    'tests/test_gpu/test_gld_fp16.py',
    'tests/test_gpu/test_cuda_benchmark.py::test_amp_calls_and_optimizer_wrappers',
    'tests/test_gpu/test_cuda_benchmark.py::test_process_state_is_restored_also_on_error',
    'tests/test_gpu/test_cuda_benchmark.py::test_refuses_cuda_without_a_gpu',
    'tests/test_gpu/test_cuda_benchmark.py::test_quick_mode_chooses_the_first_numbers_and_yields_to_explicit_options',
    'tests/test_gpu/test_cuda_benchmark.py::test_no_detectors_builds_nothing',
)
REDUCED_BENCHMARK = ('--backbones', 'MAFormer-T', '--detectors')  # no Swin-T, no Mask R-CNN: mmdet.models
# `--device cpu`: the CPU stand-in of the quick benchmark, at sizes a CPU runs in seconds.
CPU_BENCHMARK = (
    '--backbone-sizes',
    '32x48:2',
    '--precisions',
    'fp32',
    '--det-precisions',
    'fp32',
    '--det-size',
    '64x96',
    '--detectors',
    'MAFormer-T (window)',
    '--warmup',
    '0',
    '--repeats',
    '1',
)

# Run in the private environment (from OUT, so that no local file shadows a config name): imports from OUT/site, a
# model built from the shipped configs and, for the full set, mmcv's compiled ops checked (tools/env/mmcv_build.py).
SMOKE = r"""
import json, sys
device, full, check_mode, suite = sys.argv[1], sys.argv[2] == 'full', sys.argv[3], sys.argv[4]
if full:
    try:
        import mmcv._ext
    except Exception as error:  # another torch's symbols: ImportError, or worse
        print(json.dumps(dict(ext_error=f'{type(error).__name__}: {error}'.splitlines()[0])))
        sys.exit(0)
import torch
import maformer_mm, mmcv, mmengine
from mmengine.config import Config
from maformer_mm.config.zoo import resolve_config
modules = {'maformer_mm': maformer_mm, 'mmcv': mmcv, 'mmengine': mmengine}
result = {}
cfg = Config.fromfile(resolve_config('mask_rcnn_maformer_t'))  # inherits mmdet:: bases from mmdet's shipped configs
if full:
    import mmdet, mmdet.models, mmseg.models, mmpretrain.models
    from mmdet.registry import MODELS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model).to(device)
    modules['mmdet'] = mmdet
    result['built'] = 'Mask R-CNN MAFormer-T'
    sys.path.append(suite)
    from tools.env.mmcv_build import check
    try:
        result['mmcv_check'] = check(check_mode, '')['proof']
    except SystemExit as error:
        result['mmcv_error'] = str(error)
else:
    from mmengine.registry import MODELS
    model = MODELS.build(cfg.model.backbone).to(device).eval()
    with torch.no_grad():
        shapes = [list(o.shape) for o in model(torch.rand(1, 3, 64, 64, device=device))]
    result['built'] = f'MAFormer-T backbone of Mask R-CNN MAFormer-T, outputs {shapes}'
result.update(
    parameters=sum(p.numel() for p in model.parameters()),
    files={name: module.__file__ for name, module in modules.items()},
)
print(json.dumps(result))
"""


# ---------------------------------------------------------------------------------------------------- checks
def verify_sums(wheelhouse: str) -> List[str]:
    """The files that do not match the wheelhouse's SHA256SUMS (a transfer that went wrong)."""
    path = osp.join(wheelhouse, SUMS)
    if not osp.isfile(path):
        return [f'{path} is missing']
    bad = []
    with open(path) as f:
        for line in f:
            digest, name = line.split(maxsplit=1)
            name = name.strip()
            file = osp.join(wheelhouse, name)
            if not osp.isfile(file):
                bad.append(f'{name}: missing')
            elif sha256(file) != digest:
                bad.append(f'{name}: SHA-256 differs from {SUMS}')
    return bad


def driver_version() -> Optional[str]:
    """The NVIDIA driver's version from nvidia-smi, or None where there is none."""
    smi = shutil.which('nvidia-smi')
    if smi is None:
        return None
    proc = subprocess.run([smi, '--query-gpu=driver_version', '--format=csv,noheader'], capture_output=True, text=True)
    return proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else None


def abi_mismatches(target: dict, node: dict, device: str) -> List[str]:
    """Why the wheelhouse built for `target` (its manifest's) cannot run its mmcv ops with the node's torch."""
    from tools.env.mmcv_build import runs_on

    problems = []
    if node['python'] != target['python']:
        problems.append(f'the node runs Python {node["python"]}, the wheelhouse is built for Python {target["python"]}')
    if public_version(node['torch'])[:2] != public_version(target['torch'])[:2]:
        problems.append(
            f'the node has torch {node["torch"]}, mmcv was compiled against torch {target["torch"]}: '
            "its extension links to that torch's C++ symbols"
        )
    node_cuda, built_cuda = (
        (node.get('torch_cuda') or 'none').split('.')[0],
        (target['torch_cuda'] or 'none').split('.')[0],
    )
    if node_cuda != built_cuda:
        problems.append(
            f"the node's torch is built for CUDA {node.get('torch_cuda')}, "
            f'the wheelhouse for CUDA {target["torch_cuda"]}'
        )
    if node.get('cxx11_abi') != target['cxx11_abi']:
        node_abi, built_abi = int(bool(node.get('cxx11_abi'))), int(target['cxx11_abi'])
        problems.append(f"the node's torch has _GLIBCXX_USE_CXX11_ABI={node_abi}, the wheelhouse {built_abi}")
    needed = target.get('glibc_needed')
    if needed and node.get('glibc') and public_version(node['glibc']) < public_version(needed):
        problems.append(f"the node's glibc is {node['glibc']}, mmcv's extension was built where it needs {needed}")
    if device == 'cuda':
        for gpu in node.get('gpus', []):
            capability = tuple(int(x) for x in gpu['capability'].split('.'))
            if not runs_on(target['archs'], capability):
                built = ', '.join(target['archs']) or 'no CUDA kernels (a CPU-only mmcv)'
                problems.append(
                    f'{gpu["name"]} is compute capability {gpu["capability"]}; mmcv in the wheelhouse has {built}: '
                    f"build one with WH_ARCHS='{gpu['capability']}'"
                )
    return problems


# ------------------------------------------------------------------------------------------------ the steps
class Steps:
    """Runs the steps' commands with their output in OUT/logs/STEP.log, and times each step."""

    def __init__(self, out: str, env: dict) -> None:
        self.out, self.env = out, env
        self.times: Dict[str, float] = {}
        os.makedirs(osp.join(out, 'logs'), exist_ok=True)

    def run(self, step: str, command: Sequence[str], cwd: str = SUITE, env: Optional[dict] = None) -> Tuple[int, str]:
        """(exit status, output) of `command`; the output also goes to OUT/logs/STEP.log."""
        start = time.perf_counter()
        proc = subprocess.run(
            [str(c) for c in command],
            cwd=cwd,
            env=env or self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.times[step] = self.times.get(step, 0.0) + time.perf_counter() - start
        with open(osp.join(self.out, 'logs', f'{step}.log'), 'a') as f:
            f.write(f'$ {" ".join(map(str, command))}\n{proc.stdout}\n')
        return proc.returncode, proc.stdout


def private_env(site: str, device: str) -> dict:
    """The environment of every command after the install: OUT/site first on the path (before the node's own
    site-packages, user site included, where its torch may live), pip's settings of the node dropped."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PIP_') and k not in ('PYTHONPATH', 'PYTHONHOME')}
    env.update(PYTHONPATH=site, PIP_CONFIG_FILE=os.devnull, PYTHONUNBUFFERED='1')
    if device == 'cpu':
        env['CUDA_VISIBLE_DEVICES'] = ''  # the CPU stand-ins, also on a machine with a GPU
    env.pop('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', None)
    return env


def install(steps: Steps, wheelhouse: str, manifest: dict, site: str) -> Tuple[int, str]:
    """pip, run from its own wheel, installs every wheel of the manifest into `site` (emptied first), offline."""
    (pip_wheel,) = [w['file'] for w in manifest['wheels'] if w['name'] == 'pip']
    if osp.isdir(site):
        shutil.rmtree(site)
    wheels = [osp.join(wheelhouse, w['file']) for w in manifest['wheels'] if w['name'] != 'pip']
    command = [sys.executable, osp.join(wheelhouse, pip_wheel, 'pip'), 'install', '--isolated', '--no-index']
    command += ['--no-deps', '--no-compile', '--disable-pip-version-check', '--target', site, *wheels]
    return steps.run('install', command)


UNMET = r"""
import json, sys
import importlib.metadata as md
sys.path.append(sys.argv[2])  # pip's wheel: its vendored packaging reads the requirements
from pip._vendor.packaging.requirements import Requirement
site, unmet = sys.argv[1], []
for dist in md.distributions(path=[site]):
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({'extra': ''}):
            continue
        try:
            found = md.version(req.name)
        except md.PackageNotFoundError:
            found = None
        if found is None or not req.specifier.contains(found, prereleases=True):
            unmet.append(f"{dist.metadata['Name']} requires {text}: {'found ' + found if found else 'not installed'}")
print(json.dumps(sorted(set(unmet))))
"""


def parse_junit(path: str) -> List[dict]:
    """Every test case of a pytest JUnit XML file: id, outcome, seconds, and the message of a failure or skip."""
    if not osp.isfile(path):
        return []
    tests = []
    for case in ET.parse(path).getroot().iter('testcase'):
        outcome, message = 'passed', ''
        for tag in ('failure', 'error', 'skipped'):
            node = case.find(tag)
            if node is not None:
                outcome = {'failure': 'failed', 'error': 'error', 'skipped': 'skipped'}[tag]
                message = (node.get('message') or '').splitlines()[0][:300] if node.get('message') else ''
                break
        module = case.get('classname', '').replace('.', '/')
        tests.append(
            dict(
                id=f'{module}.py::{case.get("name")}',
                outcome=outcome,
                seconds=float(case.get('time', 0)),
                message=message,
            )
        )
    return tests


def selected_tests(kind: str, asked: Optional[Sequence[str]]) -> List[str]:
    """The pytest ids the set `kind` runs: all of tests/test_gpu (full) or REDUCED_TESTS (reduced), or of those
    the `asked` ones (a path asked selects the reduced tests under it)."""
    if kind != 'reduced':
        return list(asked or ['tests/test_gpu'])
    if not asked:
        return list(REDUCED_TESTS)
    inside = [t for t in asked if any(t.startswith(r) for r in REDUCED_TESTS)]
    return inside + [r for r in REDUCED_TESTS if any(r.startswith(t.rstrip('/') + sep) for t in asked for sep in '/:')]


# ---------------------------------------------------------------------------------------------------- report
def markdown(report: dict) -> str:
    node, manifest = report['node'], report['wheelhouse']
    gpus = node.get('gpus') or []
    card = ', '.join(f'{g["name"]} (compute capability {g["capability"]}, {g["memory_gib"]:.0f} GiB)' for g in gpus)
    lines = [
        f'# GPU check: {card or "no GPU (CPU stand-ins)"}',
        '',
        f'- node: Python {node["python"]}, torch {node.get("torch")} (CUDA {node.get("torch_cuda")}), driver '
        f'{report["driver"] or "-"}, device `{report["device"]}`',
        f'- wheelhouse: {manifest["path"]}, built {manifest["built"]} from {manifest["source"]}: Python '
        f'{manifest["target"]["python"]}, torch {manifest["target"]["torch"]}, mmcv ops for '
        f'{", ".join(manifest["target"]["archs"]) or "CPU only"}, {manifest["total_mib"]} MiB',
        f'- result: **{report["result"]}**; set run: {report["set"]}',
    ]
    for problem in report['refused']:
        lines.append(f'- refused: {problem}')
    for problem in report['requirements_unmet']:
        lines.append(f'- requirement not met on the node: {problem}')
    lines += ['', '| step | seconds |', '|---|---|']
    lines += [f'| {step} | {seconds:.1f} |' for step, seconds in report['seconds'].items()]
    if report.get('smoke'):
        lines += [
            '',
            f'Built in the private install: {report["smoke"]["built"]}, {report["smoke"]["parameters"]:,} parameters.',
        ]
    if report.get('mmcv_check'):
        lines += ['', f'mmcv: {report["mmcv_check"]}']
    counts = report['test_counts']
    lines += ['', f'## Tests: {", ".join(f"{n} {k}" for k, n in counts.items()) or "none ran"}', '']
    lines += ['| test | outcome | seconds | message |', '|---|---|---|---|']
    for test in report['tests']:
        message = test['message'].replace('|', '/')
        lines.append(f'| `{test["id"]}` | {test["outcome"]} | {test["seconds"]:.2f} | {message} |')
    if report.get('benchmark_markdown'):
        lines += ['', '## Benchmark (`benchmarks/cuda_benchmark.py --quick`)', '']
        lines += [
            ('#' + line if line.startswith('#') else line) for line in report['benchmark_markdown'].splitlines()[1:]
        ]
    for error in report['errors']:
        lines += ['', f'**Error**: {error}']
    return '\n'.join(lines) + '\n'


def finish(report: dict, out: str, start: float) -> int:
    report['seconds']['total'] = round(time.perf_counter() - start, 1)
    failed = report['errors'] or report['test_counts'].get('failed') or report['test_counts'].get('error')
    if report['result'] == 'not run':
        status = 3
    elif report['refused']:
        status, report['result'] = 2, 'refused: ABI mismatch (reduced set run)'
    else:
        status, report['result'] = (1, 'failed') if failed else (0, 'passed')
    report['exit_status'] = status
    with open(osp.join(out, 'report.json'), 'w') as f:
        json.dump(report, f, indent=1)
    text = markdown(report)
    with open(osp.join(out, 'report.md'), 'w') as f:
        f.write(text)
    print(text)
    print(f'report: {osp.join(out, "report.md")} and report.json', file=sys.stderr)
    return status


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('wheelhouse')
    parser.add_argument('out')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='cpu: the CPU stand-ins')
    parser.add_argument(
        '--tests',
        nargs='+',
        metavar='TEST',
        help='pytest ids run instead of all of tests/test_gpu (in the reduced set: those of them it holds)',
    )
    args = parser.parse_args(argv)
    start = time.perf_counter()
    wheelhouse, out = osp.abspath(args.wheelhouse), osp.abspath(args.out)
    site = osp.join(out, 'site')
    with open(osp.join(wheelhouse, MANIFEST)) as f:
        manifest = json.load(f)
    env = private_env(site, args.device)
    steps = Steps(out, env)
    report = dict(
        device=args.device,
        driver=driver_version() if args.device == 'cuda' else None,
        wheelhouse=dict({k: manifest[k] for k in ('built', 'source', 'target', 'mmcv', 'total_mib')}, path=wheelhouse),
        result='not run',
        set='none',
        refused=[],
        requirements_unmet=[],
        errors=[],
        seconds=steps.times,
        tests=[],
        test_counts={},
    )
    bad = verify_sums(wheelhouse)
    bare = {k: v for k, v in env.items() if k != 'PYTHONPATH'}  # the node as it is, before the install
    status, text = steps.run('node', [sys.executable, '-m', 'tools.env.wheelhouse', 'facts'], env=bare)
    report['node'] = node = json.loads(text.strip().splitlines()[-1]) if status == 0 else dict(python='?', torch=None)
    if bad or node.get('torch') is None:
        report['errors'] += [f'the wheelhouse is damaged: {b}' for b in bad]
        if node.get('torch') is None:
            report['errors'].append(
                f"{sys.executable} has no torch ({node.get('error')}); set PYTHON to the node's torch python"
            )
        return finish(report, out, start)
    report['refused'] = abi_mismatches(manifest['target'], node, args.device)
    if args.device == 'cuda' and not node.get('gpus'):
        report['errors'].append(
            f'torch {node["torch"]} sees no GPU here (torch.cuda.is_available() is False): check the driver '
            '(nvidia-smi) and CUDA_VISIBLE_DEVICES, or run the CPU stand-ins with --device cpu'
        )
        return finish(report, out, start)
    if node['python'] != manifest['target']['python']:  # its compiled wheels (pycocotools, ...) cannot install
        report['errors'].append(
            f'the wheelhouse is for Python {manifest["target"]["python"]} and {sys.executable} is Python '
            f'{node["python"]}: set PYTHON to a Python {manifest["target"]["python"]} that has torch, or build a '
            f'wheelhouse with WH_PYTHON={node["python"]}'
        )
        return finish(report, out, start)

    status, text = install(steps, wheelhouse, manifest, site)
    if status != 0:
        report['errors'].append(f'the offline install failed (logs/install.log): {text.strip().splitlines()[-1]}')
        return finish(report, out, start)
    report['result'] = 'running'
    pip_wheel = next(osp.join(wheelhouse, w['file']) for w in manifest['wheels'] if w['name'] == 'pip')
    status, text = steps.run('checks', [sys.executable, '-c', UNMET, site, pip_wheel])
    report['requirements_unmet'] = json.loads(text.strip().splitlines()[-1]) if status == 0 else []
    check_mode = 'cuda' if args.device == 'cuda' or manifest['target']['archs'] else 'cpu'
    smoke: dict = {}
    for kind in ('full', 'reduced'):
        if report['refused']:
            kind = 'reduced'
            for path in glob.glob(osp.join(site, 'mmcv', '_ext*.so')):
                os.remove(path)  # mmcv without its extension, as mmcv-lite: `import mmcv.ops` fails cleanly
        status, text = steps.run('checks', [sys.executable, '-c', SMOKE, args.device, kind, check_mode, SUITE], cwd=out)
        if status != 0:
            report['errors'].append(
                'imports or the model build failed in the private install (logs/checks.log): '
                + text.strip().splitlines()[-1]
            )
            return finish(report, out, start)
        smoke = json.loads(text.strip().splitlines()[-1])
        if 'ext_error' not in smoke:
            break
        report['refused'].append(f'mmcv._ext does not load with this torch: {smoke["ext_error"]}')
    report['set'] = kind
    report['smoke'] = smoke
    outside = {m: f for m, f in smoke['files'].items() if not f.startswith(site)}
    if outside:
        report['errors'].append(f'imported from outside the private install: {outside}')
    if 'mmcv_check' in smoke:
        report['mmcv_check'] = smoke['mmcv_check']
    if 'mmcv_error' in smoke:
        report['errors'].append(f'mmcv build check failed: {smoke["mmcv_error"]}')

    junit = osp.join(out, 'pytest.xml')
    selection = selected_tests(report['set'], args.tests)
    if selection:
        command = [sys.executable, '-m', 'pytest', *selection, '-rA', '-p', 'no:cacheprovider', f'--junitxml={junit}']
        steps.run('tests', command)
    report['tests'] = parse_junit(junit)
    for test in report['tests']:
        report['test_counts'][test['outcome']] = report['test_counts'].get(test['outcome'], 0) + 1
    if not selection:
        report['errors'].append(f'none of --tests {" ".join(args.tests)} is in the reduced set (REDUCED_TESTS)')
    elif not report['tests']:
        report['errors'].append('pytest ran no test (logs/tests.log)')

    bench_out = osp.join(out, 'benchmark.md')
    command = [
        sys.executable,
        '-m',
        'benchmarks.cuda_benchmark',
        '--quick',
        '--device',
        args.device,
        '--out',
        bench_out,
    ]
    command += list(CPU_BENCHMARK if args.device == 'cpu' else ()) + list(
        REDUCED_BENCHMARK if report['refused'] else ()
    )
    status, text = steps.run('benchmark', command)
    if status == 0:
        with open(osp.splitext(bench_out)[0] + '.json') as f:
            report['benchmark'] = json.load(f)
        with open(bench_out) as f:
            report['benchmark_markdown'] = f.read()
    else:
        report['errors'].append(f'the benchmark failed (logs/benchmark.log): {text.strip().splitlines()[-1]}')
    return finish(report, out, start)


if __name__ == '__main__':
    sys.exit(main())
