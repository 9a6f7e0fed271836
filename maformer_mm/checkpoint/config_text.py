"""Config texts saved inside checkpoints, read as data: mmengine never parses text that comes from a file.

mmengine parses two texts a checkpoint carries with `Config.fromstring`, which runs them as Python after rewriting
them (`{{ ... }}` templates, `$VAR` defaults, `_base_` variables, `custom_imports`):
- `Runner.resume` parses `meta['config']` (mmcv 1.x checkpoints) to read `gpu_ids`;
- an inferencer given weights but no config parses `message_hub['runtime_info']['cfg']` or `meta['cfg']`.

A rewritten text is not the text one checked, so no check of the text itself can be trusted. Here a text is
evaluated as data by this module alone (`read_config_text`): assignments of literals, `dict(...)` and `range(...)`,
nothing else, and no template syntax anywhere. `defuse_config_texts` replaces each text in a loaded checkpoint by a
text this module writes from those values (`config_as_text`, nothing but reprs of plain data), or removes it; what
mmengine then parses was written here. The checkpoint file is never changed.
"""

import ast
import math
import re
import sys
from typing import Any, Dict, List, Optional, Tuple

__all__ = [
    'ConfigTextError',
    'CONFIG_TEXTS',
    'INFERENCER_CONFIGS',
    'value_at',
    'read_config_text',
    'config_as_text',
    'unimported_modules',
    'defuse_config_texts',
]

# Where checkpoints keep config texts that mmengine parses.
RESUME_CONFIG = ('meta', 'config')
INFERENCER_CONFIGS = (('message_hub', 'runtime_info', 'cfg'), ('meta', 'cfg'))  # in the order mmengine reads them
CONFIG_TEXTS = (RESUME_CONFIG, *INFERENCER_CONFIGS)
_TEMPLATE = re.compile(r'\{\{')  # every substitution mmengine makes before it parses a text starts with `{{`
_RANGE_LIMIT = 4096  # mmcv 1.x saved `gpu_ids = range(0, 8)`


class ConfigTextError(ValueError):
    """A config text that is not plain data (the message says what was found, where)."""


def _number(value: Any) -> bool:
    return type(value) in (int, float, complex) and (type(value) is int or math.isfinite(abs(value)))


class _Literal:
    """Evaluates the literal nodes of one text; anything that would compute raises ConfigTextError."""

    def __init__(self, text: str) -> None:
        self.text = text

    def fail(self, node: ast.AST, what: str) -> ConfigTextError:
        shown = ast.get_source_segment(self.text, node) or type(node).__name__
        shown = shown if len(shown) <= 60 else shown[:57] + '...'
        return ConfigTextError(f'line {getattr(node, "lineno", "?")} {what}: {shown}')

    def value(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if node.value is None or type(node.value) in (bool, str, bytes) or _number(node.value):
                return node.value
            raise self.fail(node, 'holds a constant that is not plain data')
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            operand = self.value(node.operand)
            if _number(operand):
                return -operand if isinstance(node.op, ast.USub) else operand
        elif isinstance(node, ast.List):
            return [self.value(e) for e in node.elts]
        elif isinstance(node, ast.Tuple):
            return tuple(self.value(e) for e in node.elts)
        elif isinstance(node, ast.Set):
            return {self.value(e) for e in node.elts}
        elif isinstance(node, ast.Dict) and all(k is not None for k in node.keys):
            return {self.value(k): self.value(v) for k, v in zip(node.keys, node.values)}
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ('dict', 'range')
            and all(k.arg is not None for k in node.keywords)
        ):
            args = [self.value(a) for a in node.args]
            kwargs = {k.arg: self.value(k.value) for k in node.keywords}
            if node.func.id == 'dict' and len(args) <= 1 and all(type(a) is dict for a in args):
                return dict(*args, **kwargs)  # dict(a=1), dict({'a.b': 1}): how Config.pretty_text writes dicts
            if node.func.id == 'range' and not kwargs and 1 <= len(args) <= 3 and all(type(a) is int for a in args):
                values = range(*args)
                if len(values) <= _RANGE_LIMIT:
                    return list(values)
        raise self.fail(node, 'computes a value instead of stating it')


def read_config_text(text: Any) -> Dict[str, Any]:
    """The values a saved config text assigns, evaluated as data here (never by mmengine).

    Accepted: a text without template syntax (`{{`) whose statements each assign one name a literal (numbers,
    strings, None, booleans, lists, tuples, sets, dicts, `dict(...)`, `range(...)` of up to 4096 integers). Whatever
    mmengine would do more with a text is refused: `_base_` (reads other files), statements other than
    assignments, calls, names, attributes, templates.

    Raises:
        ConfigTextError: the text is not plain data (the message says what was found, on which line).
    """
    if type(text) is not str:
        raise ConfigTextError(f'it is not a text but {type(text).__name__}')
    template = _TEMPLATE.search(text)
    if template:
        line = text.count('\n', 0, template.start()) + 1
        raise ConfigTextError(
            f'line {line} holds template syntax ({template.group()}), which mmengine substitutes '
            'before it parses the text'
        )
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        raise ConfigTextError(
            f'it is not valid Python ({type(error).__name__}: {getattr(error, "msg", error)})'
        ) from None
    literal = _Literal(text)
    values: Dict[str, Any] = {}
    for statement in tree.body:
        if not (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
        ):
            raise literal.fail(statement, f'is {type(statement).__name__.lower()} code, not an assignment of data')
        name = statement.targets[0].id
        if name == '_base_':
            raise literal.fail(statement, 'names base config files to read (_base_)')
        try:
            values[name] = literal.value(statement.value)
        except RecursionError:
            raise ConfigTextError(f'line {statement.lineno} ({name} = ...) is nested too deeply') from None
    if _TEMPLATE.search(config_as_text(values)):  # a string that escapes or concatenation made into `{{`
        raise ConfigTextError('a string holds template syntax ({{) once evaluated')
    return values


def config_as_text(values: Dict[str, Any]) -> str:
    """A config text that assigns `values` (from `read_config_text`): reprs of plain data, one line each."""
    return ''.join(f'{name} = {value!r}\n' for name, value in values.items())


def unimported_modules(values: Dict[str, Any]) -> List[str]:
    """The modules that the config's `custom_imports` would make mmengine import and that are not imported yet."""
    imports = values.get('custom_imports')
    modules = imports.get('imports', []) if isinstance(imports, dict) else imports
    modules = [modules] if isinstance(modules, str) else list(modules or [])
    return [str(m) for m in modules if not (isinstance(m, str) and m in sys.modules)]


def value_at(checkpoint: Any, keys: Tuple[str, ...]) -> Any:
    """The value under the nested `keys` of a checkpoint (None where there is none)."""
    for key in keys:
        checkpoint = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    return checkpoint


def _node(checkpoint: Any, keys: Tuple[str, ...]) -> Tuple[Optional[dict], Any]:
    """The dict that holds the last key of `keys`, and the value there (None, None where there is none)."""
    parent = value_at(checkpoint, keys[:-1])
    if isinstance(parent, dict) and keys[-1] in parent:
        return parent, parent[keys[-1]]
    return None, None


def defuse_config_texts(checkpoint: Any) -> Any:
    """Replaces the config texts that mmengine would parse by texts written here from their values, in place.

    `meta['config']` (read by `Runner.resume` for `gpu_ids` only) becomes `gpu_ids = [...]`, or goes when the text
    states none; the inferencers' texts
    become `config_as_text` of their values when they are plain data whose `custom_imports` name imported modules
    only. A text that is not plain data is removed: it is never parsed, and the load does not fail because of it.
    """
    for keys in CONFIG_TEXTS:
        parent, text = _node(checkpoint, keys)
        if parent is None:
            continue
        try:
            values = read_config_text(text)
        except ConfigTextError:
            values = None
        if values is not None and keys == RESUME_CONFIG:
            gpu_ids = values.get('gpu_ids')
            keep = isinstance(gpu_ids, (list, tuple)) and all(type(i) is int for i in gpu_ids)
            values = {'gpu_ids': list(gpu_ids)} if keep else None
        elif values is not None and unimported_modules(values):
            values = None
        if values is None:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = config_as_text(values)
    return checkpoint
