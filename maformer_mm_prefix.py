"""Lets mmengine resolve `_base_ = ['maformer_mm::maformer/NAME.py']` in any process, before maformer_mm is imported.

mmengine resolves `pkg::` bases only for the packages in its table `mmengine.config.utils.MODULE2PACKAGE`, and it
reads a config's `_base_` before it runs the config's `custom_imports`. `import maformer_mm` adds the package to
the table (`maformer_mm.config.zoo.register_config_package`), but the host libraries' own tools (mmdet's
`tools/train.py`, ...) read the config before anything imports maformer_mm.

An installed maformer_mm therefore also installs `maformer_mm_prefix.pth` into site-packages. Python's `site`
module runs its import line at interpreter start. That line imports nothing but `sys`: it puts a small finder in
front of `sys.meta_path` that compares each imported name with `mmengine.config.utils` and answers None for every
other name (a class creation at start, one string comparison an import: nothing measurable, docs/host_tools.md).
When a process imports that module, the finder imports this module, which removes both finders, lets the usual
finders find `mmengine.config.utils`, runs it as they would and adds `'maformer_mm'` to its table. maformer_mm
itself is imported only when a config names it (mmengine looks the package up then, and the configs'
`custom_imports` import it), never by this module.

A folder that is not a site directory (`pip install --target DIR` used through `PYTHONPATH`) gets no `.pth`
processing, so there nothing registers the prefix before mmengine reads a config. `python -m maformer_mm_prefix
SCRIPT [ARGS...]` installs the finder and runs SCRIPT as `python SCRIPT ARGS...` would (see docs/get_started.md).
"""

import sys

__all__ = ['TARGET', 'PACKAGE', 'LOCATOR', 'HOOK', 'register', 'find_spec', 'install', 'uninstall', 'main']

TARGET = 'mmengine.config.utils'  # the module that holds MODULE2PACKAGE
PACKAGE = 'maformer_mm'
LOCATOR = 'maformer_mm.version'  # the table's value; the same as maformer_mm.config.zoo.LOCATOR (tested)
HOOK = 'maformer_mm_prefix_hook'  # the class name of the finder that the `.pth` line installs


def register(module) -> None:
    """Adds maformer_mm to `module.MODULE2PACKAGE` (`module` is mmengine.config.utils); keeps an entry already
    there."""
    module.MODULE2PACKAGE.setdefault(PACKAGE, LOCATOR)


class _RegisteringLoader:
    """mmengine.config.utils' own loader, wrapped: runs the module as that loader would, then registers."""

    def __init__(self, loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module keeps its own loader, for tracebacks, `inspect` and reloads.
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        register(module)


def find_spec(fullname: str, path=None, target=None):
    """The finders' answer: for `TARGET`, its spec with a loader that registers after running it (and the finders
    removed); None for any other name."""
    if fullname != TARGET:
        return None
    uninstall()
    for finder in sys.meta_path:
        finder_find_spec = getattr(finder, 'find_spec', None)
        spec = finder_find_spec(fullname, path, target) if finder_find_spec is not None else None
        if spec is not None:
            break
    else:
        return None
    if hasattr(spec.loader, 'exec_module'):
        spec.loader = _RegisteringLoader(spec.loader)
    return spec


class _Finder:
    """The meta path finder of `install()` (the `.pth` line installs its own, which calls `find_spec` here)."""

    find_spec = staticmethod(find_spec)


def _is_ours(finder) -> bool:
    return finder is _Finder or type(finder).__name__ == HOOK


def install() -> None:
    """Registers the prefix now if mmengine.config.utils is loaded, else when it is first imported. Idempotent."""
    module = sys.modules.get(TARGET)
    if module is not None and hasattr(module, 'MODULE2PACKAGE'):
        register(module)
    elif _Finder not in sys.meta_path:
        sys.meta_path.insert(0, _Finder)


def uninstall() -> None:
    """Removes the finders, this module's and the `.pth` line's (an entry they already made stays)."""
    sys.meta_path[:] = [finder for finder in sys.meta_path if not _is_ours(finder)]


def main(argv=None) -> None:
    """`python -m maformer_mm_prefix SCRIPT [ARGS...]`: runs SCRIPT as `python SCRIPT ARGS...` would, with the
    prefix registered (for installs whose `.pth` file Python does not read)."""
    import os
    import runpy

    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ('-h', '--help'):
        print(__doc__.split('\n\n')[0] + '\n\nusage: python -m maformer_mm_prefix SCRIPT [ARGS...]')
        raise SystemExit(0 if argv else 2)
    script = argv[0]
    if not os.path.isfile(script):
        raise SystemExit(f'maformer_mm_prefix: no such script: {script}')
    from maformer_mm_prefix import install as install_here  # by its name: the finder must not be `__main__`'s

    install_here()
    sys.argv = argv
    sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python SCRIPT` sets it
    runpy.run_path(script, run_name='__main__')


if __name__ == '__main__':
    main()
