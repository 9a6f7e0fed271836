"""Minimal reproduction, mmengine only: a config that is plain data runs any importable callable when a registry
builds it, because `Registry.get` imports dotted `type` names.

Report (ready to file at open-mmlab/mmengine):

    Title: Registry.get imports any dotted name from a config's `type`, so building a saved config runs code

    `Registry.get(key)` falls back to `get_object_from_string(key)` when `key` is not registered, which imports the
    module part of a dotted name and returns the attribute. `MODELS.build(dict(type='os.system', command='...'))`
    therefore calls `os.system`. The dict is plain data: a config text that passes any "literals only" check
    (`model = dict(type='os.system', command='touch /tmp/x')`) runs a shell command when built. mmengine builds
    such texts from files: `BaseInferencer(model=None, weights=CKPT)` (mmdet's DetInferencer, mmseg's
    MMSegInferencer) parses `message_hub['runtime_info']['cfg']` or `meta['cfg']` of the checkpoint and builds its
    model. The same fallback imports any module a `type` names, which walks around `custom_imports`.

    Expected: building from a config never imports or calls an unregistered name unless the caller asks for it
    (lazy-import configs rely on the fallback, so an opt-in flag, or a registry-only mode for configs from files);
    and `BaseInferencer` never builds a config that came from a checkpoint. Seen with mmengine 0.10.7.

    python benchmarks/repro/mmengine_registry_imports.py   # prints what ran; exits with 1 when the command ran
"""

import os
import sys
import tempfile

from mmengine.config import Config
from mmengine.registry import MODELS


def main() -> int:
    marker = os.path.join(tempfile.mkdtemp(), 'ran')
    text = f"model = dict(type='os.system', command='touch {marker}')\n"  # only literals
    cfg = Config.fromstring(text, file_format='.py')
    print(f'config: {cfg.model.to_dict()}')
    result = MODELS.build(cfg.model)
    ran = os.path.exists(marker)
    print(f'MODELS.build returned {result!r}; the command ran: {ran}')
    return 1 if ran else 0


if __name__ == '__main__':
    sys.exit(main())
