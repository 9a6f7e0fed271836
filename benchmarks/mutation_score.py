"""Mutation score of MAFormer's maths: mutmut over `maformer_mm/layers/` and the backbone's forward.

    .venv/bin/pip install -r requirements-mutation.txt      # once: mutmut, pinned
    .venv/bin/python benchmarks/mutation_score.py           # about an hour on 2 cores; not part of `make test`

mutmut rewrites the files it mutates, so this never runs in the checkout: it copies the repository's files
(tracked, and untracked ones git does not ignore; or commit `--rev`) to `--workdir`, writes mutmut's settings
there (setup.cfg), and runs `mutmut run` at low priority (nice 15) on every function of
`maformer_mm/layers/*.py` and on `MAFormer.forward` and `MAFormerStage.forward`, against the fast layer and
model tests (tests/test_layers and tests/test_models without torch.compile and the slowest MAFormer-T runs).
Each mutant runs only the tests that reach the function it changes, fastest first, until one fails. Then it
reads mutmut's results and writes a Markdown report: per file, how many mutants were killed, survived or timed
out, the score (killed and timed out over all that ran), and the diff of every survivor.
"""

import argparse
import json
import os
import os.path as osp
import shutil
import subprocess
import sys
from collections import Counter
from typing import Dict, Optional, Sequence, Tuple

HERE = osp.dirname(osp.abspath(__file__))
ROOT = osp.dirname(HERE)
PIN = osp.join(ROOT, 'requirements-mutation.txt')

# What is mutated: every function of the layer files; of the backbone file, only the forward functions.
FILES = ['maformer_mm/layers/*.py', 'maformer_mm/models/backbones/maformer.py']
BACKBONE = 'maformer_mm.models.backbones.maformer.'
MUTANTS = [
    'maformer_mm.layers.*',
    BACKBONE + 'xǁMAFormerǁforward__mutmut_*',
    BACKBONE + 'xǁMAFormerStageǁforward__mutmut_*',
]
# The tests each mutant may run (mutmut picks, per function, those that reach it, fastest first): the layer and
# model tests, without torch.compile (it recompiles mutmut's trampolines) and the three slowest model tests
# (MAFormer-T against the reference, MAFormer-T at 224), whose checks the tiny-model tests repeat.
TESTS = [
    'tests/test_layers',
    'tests/test_models',
    '--ignore=tests/test_models/test_compile.py',
    '--deselect=tests/test_models/test_reference_model.py::test_maformer_t',
    '--deselect=tests/test_models/test_maformer.py::test_tiny_variant_at_224_gives_strides_4_to_32',
]

SETUP_CFG = """[mutmut]
source_paths = maformer_mm/
only_mutate =
{only_mutate}
pytest_add_cli_args_test_selection =
{tests}
pytest_add_cli_args =
    -p
    no:cacheprovider
"""


def check_mutmut() -> str:
    """The installed mutmut's version; stops with the install command when it is not the pinned one."""
    with open(PIN) as f:
        pinned = next(line.split('==')[1].strip() for line in f if line.startswith('mutmut=='))
    try:
        from importlib.metadata import version

        installed = version('mutmut')
    except Exception:
        installed = None
    if installed != pinned:
        sys.exit(f'mutmut {pinned} is needed (found {installed}): {sys.executable} -m pip install -r {PIN}')
    return installed


def copy_repository(workdir: str, rev: Optional[str]) -> None:
    """Puts the files of commit `rev` (or, without one, the checkout's tracked files and the untracked ones git
    does not ignore) in a fresh `workdir`."""
    if osp.realpath(workdir).startswith(osp.realpath(ROOT) + os.sep):
        sys.exit(f'--workdir must lie outside the repository ({ROOT}): mutmut rewrites the files it mutates')
    if osp.exists(workdir):
        shutil.rmtree(workdir)
    os.makedirs(workdir)
    if rev:
        archive = subprocess.run(['git', 'archive', rev], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(['tar', '-x', '-C', workdir], input=archive, check=True)
    else:
        files = (
            subprocess.run(
                ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
                cwd=ROOT,
                capture_output=True,
                check=True,
            )
            .stdout.decode()
            .split('\0')
        )
        for name in filter(None, files):
            src = osp.join(ROOT, name)
            if osp.isfile(src):
                os.makedirs(osp.dirname(osp.join(workdir, name)), exist_ok=True)
                shutil.copy2(src, osp.join(workdir, name))
    lines = lambda items: '\n'.join(f'    {i}' for i in items)  # noqa: E731
    with open(osp.join(workdir, 'setup.cfg'), 'w') as f:
        f.write(SETUP_CFG.format(only_mutate=lines(FILES), tests=lines(TESTS)))


def run_mutmut(workdir: str, max_children: int) -> None:
    """`mutmut run` on the selected mutants, at low priority, in `workdir`."""
    # mutmut imports its mutated copy (workdir/mutants) ahead of everything; the checkout's maformer_mm, installed
    # in editable mode, would come only after the copy's own path
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [workdir, os.environ.get('PYTHONPATH')])))
    # mutmut forks a test process per mutant; torch's OpenMP pool does not survive a fork (the child spins
    # and is reported as a timeout), so every process keeps to one thread
    env.update(OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    subprocess.run(
        ['nice', '-n', '15', sys.executable, '-m', 'mutmut', 'run', '--max-children', str(max_children), *MUTANTS],
        cwd=workdir,
        env=env,
        check=True,
    )


def read_results(workdir: str) -> Dict[str, Dict[str, str]]:
    """{source file: {mutant name: status}} of the selected mutants, from mutmut's result files."""
    from fnmatch import fnmatch

    cwd = os.getcwd()
    os.chdir(workdir)  # mutmut reads its settings from the working directory when imported
    try:
        from mutmut.__main__ import status_by_exit_code
    finally:
        os.chdir(cwd)
    results: Dict[str, Dict[str, str]] = {}
    root = osp.join(workdir, 'mutants')
    for folder, _, names in os.walk(root):
        for name in names:
            if not name.endswith('.py.meta'):
                continue
            with open(osp.join(folder, name)) as f:
                codes = json.load(f)['exit_code_by_key']
            source = osp.relpath(osp.join(folder, name[: -len('.meta')]), root)
            chosen = {k: status_by_exit_code[v] for k, v in codes.items() if any(fnmatch(k, p) for p in MUTANTS)}
            if chosen:
                results[source] = chosen
    return results


def show(workdir: str, mutant: str) -> str:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [workdir, os.environ.get('PYTHONPATH')])))
    return subprocess.run(
        [sys.executable, '-m', 'mutmut', 'show', mutant], cwd=workdir, env=env, capture_output=True, text=True
    ).stdout.strip()


def score(counts: Counter) -> Tuple[int, float]:
    """(mutants that ran, share killed): a timeout counts as killed (the mutant made the tests hang)."""
    ran = counts['killed'] + counts['timeout'] + counts['survived'] + counts['suspicious'] + counts['segfault']
    return ran, (counts['killed'] + counts['timeout']) / ran if ran else 0.0


def report(results: Dict[str, Dict[str, str]], workdir: str, version: str) -> str:
    lines = [
        '# Mutation score',
        '',
        f"mutmut {version} over `maformer_mm/layers/*.py` and the backbone's forward "
        '(`MAFormer.forward`, `MAFormerStage.forward`), against the fast layer and model tests '
        f'({" ".join(TESTS)}). Written by `benchmarks/mutation_score.py`.',
        '',
        '| file | mutants | killed | timed out | survived | no test reaches it | other | score |',
        '|---|---|---|---|---|---|---|---|',
    ]
    total: Counter = Counter()
    layers: Counter = Counter()
    for source in sorted(results):
        counts = Counter(results[source].values())
        total.update(counts)
        if source.startswith('maformer_mm/layers/'):
            layers.update(counts)
        lines.append(_row(source, counts))
    lines += [_row('**layers/**', layers), _row('**all**', total), '', '## Survivors', '']
    for source in sorted(results):
        for mutant, status in sorted(results[source].items()):
            if status not in ('killed', 'timeout'):
                lines += [f'### {mutant} ({status})', '', '```diff', show(workdir, mutant), '```', '']
    return '\n'.join(lines) + '\n'


def _row(name: str, counts: Counter) -> str:
    ran, share = score(counts)
    other = sum(counts.values()) - ran - counts['no tests']
    return (
        f'| {name} | {sum(counts.values())} | {counts["killed"]} | {counts["timeout"]} | {counts["survived"]} | '
        f'{counts["no tests"]} | {other} | {100 * share:.1f}% |'
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--workdir', default='/tmp/maformer_mutation', help='scratch copy (outside the repository)')
    parser.add_argument('--rev', help='test this commit (e.g. HEAD) instead of the checkout as it is')
    parser.add_argument('--max-children', type=int, default=2, help='mutants tested at once')
    parser.add_argument('--out', default=osp.join(HERE, 'mutation_score.md'))
    parser.add_argument(
        '--keep',
        action='store_true',
        help="reuse --workdir as an earlier run left it (mutmut's test statistics included)",
    )
    parser.add_argument('--report-only', action='store_true', help='rewrite the report from an earlier run')
    args = parser.parse_args(argv)
    version = check_mutmut()
    if not args.report_only:
        if not args.keep:
            copy_repository(args.workdir, args.rev)
        run_mutmut(args.workdir, args.max_children)
    text = report(read_results(args.workdir), args.workdir, version)
    with open(args.out, 'w') as f:
        f.write(text)
    print(text)


if __name__ == '__main__':
    main()
