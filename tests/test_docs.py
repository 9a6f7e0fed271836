"""The README and docs/ tell the truth about the tree: every relative link resolves (anchors included), and
every config, tool and command-line option they name exists."""

import contextlib
import io
import itertools
import re
from functools import lru_cache
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

from tests.helpers import REPO

PAGES = sorted([REPO / 'README.md', *(REPO / 'docs').glob('*.md'), *(REPO / 'benchmarks').glob('*.md')])
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')
CODE_SPAN = re.compile(r'`([^`\n]+)`')
CODE_BLOCK = re.compile(r'^```[^\n]*\n(.*?)^```', re.S | re.M)
# Tool references: a script of tools/ or a console command, and the options after it on the same line or span.
TOOL_REF = re.compile(r'(?:(?<![\w/.-])tools/([\w/]+)\.(?:py|sh)|\b(maformer-[\w-]+))')
OPTION = re.compile(r'(?<![\w-])(--[a-z][\w-]*)')
# A file the docs name: a path in the tree, or a config by its bare name (`mask_rcnn_maformer_{t,s}[_3x].py`).
FILE_REF = re.compile(
    r'(?<![\w/.:-])((?:configs|maformer_mm|tools|benchmarks|tests|docs)/'
    r'[\w{},\[\]|/.-]*?\.(?:py|sh|md|yml|json|png)'
    r'|[\w{},\[\]|-]*maformer[\w{},\[\]|-]*\.py)(?![\w/])'
)
# Scripts whose options are train.py's / test.py's (launchers pass them on), console commands and their modules.
PASSES_ON = {'dist_train': 'train', 'slurm_train': 'train', 'dist_test': 'test'}
COMMANDS = {  # as installed (setup.py's console scripts): command -> module of maformer_mm.tools
    e.name: e.value.split(':')[1]
    for e in entry_points(group='console_scripts')
    if e.value.startswith('maformer_mm.tools.entry_points:')
}
SCRIPTS = {'deploy/export_onnx': 'export_onnx'}  # scripts named unlike their module
MODULES = set(COMMANDS.values()) | set(SCRIPTS.values()) | {'make_demo_data'}  # and the one tool with no command


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r'[`*_]|\[([^\]]*)\]\([^)]*\)', r'\1', heading.strip().lower())
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def _anchors(page: Path) -> Set[str]:
    text = CODE_BLOCK.sub('', page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r'^#+\s+(.*)$', text, re.M)}


def expand(pattern: str) -> List[str]:
    """The names a brace pattern stands for: `{a,b}` one of, `[x|y]` optionally one of."""
    parts: List[List[str]] = []
    for token in re.split(r'(\{[^}]*\}|\[[^\]]*\])', pattern):
        if token.startswith('{'):
            parts.append(token[1:-1].split(','))
        elif token.startswith('['):
            parts.append([''] + token[1:-1].split('|'))
        else:
            parts.append([token])
    return [''.join(p) for p in itertools.product(*parts)]


def _texts(page: Path) -> Iterator[Tuple[str, str]]:
    """(kind, text) of each code-block line and each code span outside blocks."""
    text = page.read_text()
    for block in CODE_BLOCK.findall(text):
        for line in block.splitlines():
            yield 'line', line.split('#', 1)[0] if not line.lstrip().startswith('#') else ''
    for span in CODE_SPAN.findall(CODE_BLOCK.sub('', text)):
        yield 'span', span


@lru_cache(maxsize=None)
def tool_options(module: str) -> Set[str]:
    """The options a tool's parser accepts, read from its --help."""
    tool = import_module(f'maformer_mm.tools.{module}')
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        tool.parse_args(['--help'])
    return set(OPTION.findall(out.getvalue()))


def _module(script: str = None, command: str = None) -> str:
    if command:
        return COMMANDS.get(command)
    return SCRIPTS.get(script) or PASSES_ON.get(script, script)


def references(page: Path) -> Dict[str, Set[Tuple[str, str]]]:
    """(module, option) pairs, file patterns, tool scripts and commands named on the page."""
    found: Dict[str, Set] = {
        'options': set(),
        'files': set(),
        'scripts': set(),
        'commands': set(),
        'loose_options': set(),
    }
    for _, text in _texts(page):
        found['files'].update(FILE_REF.findall(text))
        refs = list(TOOL_REF.finditer(text))
        for ref in refs:
            script, command = ref.groups()
            (found['scripts'] if script else found['commands']).add(script or command)
        if refs:
            module = _module(*refs[0].groups())
            found['options'].update((module, o) for o in OPTION.findall(text[refs[0].end() :]) if module)
        else:
            found['loose_options'].update(OPTION.findall(text))
    return found


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r'[a-z]+:', target):  # http(s), mailto
            continue
        path, _, anchor = target.partition('#')
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f'{target}: no such file')
        elif anchor and file.suffix == '.md' and anchor not in _anchors(file):
            broken.append(f'{target}: no heading with that anchor in {file.name}')
    assert not broken, f'{page.name}: ' + '; '.join(broken)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_named_configs_tools_and_options_exist(page):
    found = references(page)
    missing = []
    for pattern in found['files']:
        folders = [REPO] if '/' in pattern else [REPO / 'configs', REPO / 'configs' / '_base_']  # a bare name: a config
        missing += [
            f'file {n}' + (f' (from {pattern})' if n != pattern else '')
            for n in expand(pattern)
            if not any((folder / n).exists() for folder in folders)
        ]
    missing += [f'script tools/{s}' for s in found['scripts'] if not any((REPO / 'tools').glob(f'{s}.*'))]
    missing += [f'command {c}' for c in found['commands'] if c not in COMMANDS]
    for module, option in found['options']:
        if module in MODULES and option not in tool_options(module):
            missing.append(f'option {option} of {module}')
    every_option = set().union(*(tool_options(m) for m in MODULES))
    missing += [f'option {o} (of no tool)' for o in found['loose_options'] - every_option - NOT_OURS]
    assert not missing, f'{page.name} names what does not exist: ' + ', '.join(sorted(missing))


# Options the docs name that belong to other programs (pip, torchrun, pytest, the benchmarks, make).
NOT_OURS = {
    '--no-build-isolation',
    '--no-deps',
    '--no-cache-dir',
    '--nproc_per_node',
    '--nproc-per-node',
    '--target',
    '--threads',
    '--cp-size',
    '--check',
    '--runs',
    '--repo',
    '--label',
    '--parallel',
    '--release',
    '--tasks',
    '--repeats',
    '--groups',
    '--iters',
    '--quick',
    '--no-index',
    '--strip-debug',
    '--tests',
    '--count',
    '--config',  # mim download's
    '--task',  # mmdet's benchmark.py
}


def test_the_expander_and_the_checks_catch_what_is_wrong(tmp_path):
    """The checks above can fail: a pattern, a missing config, a bad option and a broken link are all found."""
    assert COMMANDS['maformer-train'] == 'train' and len(COMMANDS) >= 10  # the installed console commands
    assert expand('mask_rcnn_maformer_{t,s}[_3x|_win].py') == [
        'mask_rcnn_maformer_t.py',
        'mask_rcnn_maformer_t_3x.py',
        'mask_rcnn_maformer_t_win.py',
        'mask_rcnn_maformer_s.py',
        'mask_rcnn_maformer_s_3x.py',
        'mask_rcnn_maformer_s_win.py',
    ]
    page = tmp_path / 'page.md'
    page.write_text(
        '# Title\n\n[x](nowhere.md) [y](#title) [z](#missing)\n\n'
        '```bash\npython tools/train.py configs/mask_rcnn_maformer_q.py --no-such-option\n```\n'
    )
    found = references(page)
    assert found['files'] == {'configs/mask_rcnn_maformer_q.py', 'tools/train.py'}
    assert ('train', '--no-such-option') in found['options'] and '--no-such-option' not in tool_options('train')
    assert '--work-dir' in tool_options('train') and '--data-root' in tool_options('test')
    with pytest.raises(AssertionError, match='nowhere.md: no such file.*#missing: no heading'):
        test_relative_links_resolve(page)
