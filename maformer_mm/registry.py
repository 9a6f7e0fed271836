"""Registries of the `maformer_mm` scope: what lets a config that inherits ours through `maformer_mm::` build.

mmengine marks every typed dict that a config takes from a `pkg::` base without a scope of its own with
`_scope_='pkg'`, and builds it in that scope's registries (`Registry.switch_scope_and_registry` imports
`pkg.registry` and searches the registry tree for the scope). Our configs are mmdet, mmseg and mmpretrain
configs: their schedulers, hooks and pipelines name the host library's types. So each registry here is a child
of mmengine's root registry of the same kind that looks a name up first in the host's registry (and its
parent, mmengine's root), the scope the run was in before mmengine switched to ours (mmdet, mmseg or
mmpretrain), then in itself: exactly what the name means in the host's own configs.
MAFormer itself is registered in mmengine's root MODELS, where every host finds it.
"""

from typing import Optional

from mmengine import registry as mmengine_registry
from mmengine.registry import DefaultScope, Registry

__all__ = ['SCOPE', 'HostRegistry', 'host_scope']

SCOPE = 'maformer_mm'


def host_scope() -> Optional[str]:
    """The newest default scope that is not ours: the run's (mmdet, mmseg, mmpretrain).

    mmengine 0.10's `DefaultScope.overwrite_default_scope`, which a build in our scope goes through, adds an
    instance for our scope and keeps the earlier ones in the class's instance table until the build ends.
    """
    for instance in reversed(list(DefaultScope._instance_dict.values())):
        if instance.scope_name != SCOPE:
            return instance.scope_name
    return None


class HostRegistry(Registry):
    """A registry of our scope that resolves names as the host library's registry of the same kind does."""

    def get(self, key: str) -> Optional[type]:
        host = host_scope()
        found = None
        if '.' not in key and host is not None:  # the host's own types shadow mmengine's (mmdet's LoadAnnotations)
            found = super().get(f'{host}.{key}')  # mmengine resolves `scope.name` in the registry tree
        return found if found is not None else super().get(key)


def _children() -> dict:
    """One `HostRegistry` per registry of mmengine's root (MODELS, TRANSFORMS, HOOKS, ...), named as there; importing
    the package registers what it defines (in mmengine's root registries)."""
    children = {}
    for name in mmengine_registry.__all__:
        root = getattr(mmengine_registry, name)
        if isinstance(root, Registry) and root.scope == 'mmengine':
            children[name] = HostRegistry(root.name, parent=root, scope=SCOPE, locations=[SCOPE])
    return children


globals().update(_children())
