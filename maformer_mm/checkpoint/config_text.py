"""Config texts saved inside checkpoints: never parsed by mmengine, never built into a model.

A checkpoint carries config texts that mmengine would turn into objects:
- `Runner.resume` parses `meta['config']` (mmcv 1.x checkpoints) with `Config.fromstring` to read `gpu_ids`;
- an inferencer given weights but no config parses `message_hub['runtime_info']['cfg']` or `meta['cfg']` and builds
  the model it describes; mmengine's `Registry.get` imports any dotted `type` name, so a text that is plain data
  (`model = dict(type='os.system', command=...)`) still runs what it names.

So no saved text reaches mmengine: `defuse_config_texts` removes the inferencers' texts from what mmengine's loaders
return, and replaces `meta['config']` by `gpu_ids = [...]` written here when the text states one (read by
`saved_gpu_ids`, which evaluates nothing), or removes it. Whatever a text holds, the load goes on without it. The
checkpoint file is never changed; `load_mmengine_checkpoint` returns the texts as saved, as strings.
"""

import ast
from typing import Any, List, Optional, Tuple

__all__ = ['CONFIG_TEXTS', 'RESUME_CONFIG', 'INFERENCER_CONFIGS', 'value_at', 'saved_gpu_ids', 'defuse_config_texts']

# Where checkpoints keep config texts that mmengine parses.
RESUME_CONFIG = ('meta', 'config')
INFERENCER_CONFIGS = (('message_hub', 'runtime_info', 'cfg'), ('meta', 'cfg'))  # in the order mmengine reads them
CONFIG_TEXTS = (RESUME_CONFIG, *INFERENCER_CONFIGS)
_MAX_GPUS = 4096
_MAX_TEXT = 1 << 20  # characters: mmcv 1.x texts are a few kB


def value_at(checkpoint: Any, keys: Tuple[str, ...]) -> Any:
    """The value under the nested `keys` of a checkpoint (None where there is none)."""
    for key in keys:
        checkpoint = checkpoint.get(key) if isinstance(checkpoint, dict) else None
    return checkpoint


def _small_int(node: ast.AST) -> Optional[int]:
    if isinstance(node, ast.Constant) and type(node.value) is int and 0 <= node.value <= _MAX_GPUS:
        return node.value
    return None


def _gpu_ids(node: ast.AST) -> Optional[List[int]]:
    """`[0, 1]`, `(0, 1)` or `range(a[, b[, step]])` of small non-negative ints; None for anything else."""
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_small_int(e) for e in node.elts]
        return values if len(values) <= _MAX_GPUS and None not in values else None
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == 'range'
        and not node.keywords
        and 1 <= len(node.args) <= 3
    ):
        args = [_small_int(a) for a in node.args]
        if None in args or (len(args) == 3 and args[2] == 0):
            return None
        values = range(*args)
        return list(values) if len(values) <= _MAX_GPUS else None
    return None


def saved_gpu_ids(text: Any) -> Optional[List[int]]:
    """The `gpu_ids = ...` a saved mmcv 1.x config text states at its top level; None when it states none or the
    text is anything else. Nothing in the text is evaluated: only a literal list, tuple or `range` of small ints is
    read, and every other text (invalid, huge, nested too deeply) gives None."""
    if type(text) is not str or len(text) > _MAX_TEXT:
        return None
    try:
        tree = ast.parse(text)
    except Exception:  # SyntaxError, ValueError (null bytes), RecursionError, MemoryError: not a text we read
        return None
    for statement in tree.body:
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name)
            and statement.targets[0].id == 'gpu_ids'
        ):
            return _gpu_ids(statement.value)
    return None


def defuse_config_texts(checkpoint: Any) -> Any:
    """Removes the config texts mmengine would parse from `checkpoint`, in place; `meta['config']` becomes
    `gpu_ids = [...]` when the text states such ids (mmengine's resume compares their count with the world size)."""
    for keys in CONFIG_TEXTS:
        parent = value_at(checkpoint, keys[:-1])
        if not isinstance(parent, dict) or keys[-1] not in parent:
            continue
        gpu_ids = saved_gpu_ids(parent[keys[-1]]) if keys == RESUME_CONFIG else None
        if gpu_ids is None:
            del parent[keys[-1]]
        else:
            parent[keys[-1]] = f'gpu_ids = {gpu_ids!r}\n'
    return checkpoint
