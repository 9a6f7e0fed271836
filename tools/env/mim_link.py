"""Lets mim find the editable install that `make env` makes: `python tools/env/mim_link.py` after `pip install -e .`.

mim (0.3.9) finds an installed package at `<distribution location>/<package>` and reads its model index and tools
there (`mim search`, `download`, `run`, `train`, `test`). A wheel puts the package in site-packages; an editable
install (PEP 660) leaves there only its metadata, a `.pth` file and an import hook, so mim finds nothing. This
links `site-packages/maformer_mm` to the checkout's package folder: the installed package is the checkout's
files, as the hook makes it for imports, so an edit is seen without reinstalling. The link is added to the
distribution's RECORD, so `pip uninstall maformer_mm` removes it (and a later wheel install does not write through
it into the checkout). A folder in its place that is not such a link is an error, never replaced.
"""

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

__all__ = ['link', 'main']

PACKAGE = 'maformer_mm'


def link(source: Path, site: Optional[Path] = None) -> Path:
    """Links `<site>/maformer_mm` to `source` (the checkout's package folder) and records it; returns the link.

    Raises:
        FileNotFoundError: maformer_mm is not installed in `site` (or `source` has no package).
        FileExistsError: `<site>/maformer_mm` exists and is not a link to `source`.
    """
    source = source.resolve()
    if not (source / '__init__.py').is_file():
        raise FileNotFoundError(f'{source} is not the maformer_mm package folder (no __init__.py)')
    dist = importlib.metadata.distribution(PACKAGE)
    site = Path(site or dist.locate_file('')).resolve()
    record = next((p for p in (dist.files or []) if p.name == 'RECORD'), None)
    if record is None or Path(dist.locate_file(record)).resolve().parent.parent != site:
        raise FileNotFoundError(f'maformer_mm is not installed in {site} (pip install -e . first)')
    target = site / PACKAGE
    if target.is_symlink() and target.resolve() == source:
        pass
    elif target.is_symlink() or target.exists():
        raise FileExistsError(f'{target} exists and is not a link to {source}: remove it, or install a wheel instead')
    else:
        os.symlink(source, target, target_is_directory=True)
    record_path = Path(dist.locate_file(record))
    lines = record_path.read_text().splitlines()
    if f'{PACKAGE},,' not in lines:
        record_path.write_text('\n'.join([*lines, f'{PACKAGE},,']) + '\n')
    return target


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[2] / PACKAGE
    parser.add_argument('--source', type=Path, default=default, help=f'the package folder (default: {default})')
    args = parser.parse_args(argv)
    try:
        target = link(args.source)
    except (FileNotFoundError, FileExistsError) as err:
        sys.exit(f'mim_link: {err}')
    print(f'{target} -> {os.readlink(target)}')


if __name__ == '__main__':
    main()
