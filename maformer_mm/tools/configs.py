"""Lists the configs maformer_mm ships, with what the model index says of each, or prints a config's file.

    maformer-configs                          # every config: task, dataset, schedule, params, FLOPs
    maformer-configs mask_rcnn                # those whose name contains `mask_rcnn`
    maformer-configs --path mask_rcnn_maformer_t   # its file, e.g. for mmdet's own tools/train.py

The tools take a config by file or by name (`maformer-train mask_rcnn_maformer_t`), and a config of yours
inherits one with `_base_ = ['maformer_mm::maformer/mask_rcnn_maformer_t.py']` (docs/get_started.md says
where that works).
"""

import argparse
from typing import List, Optional, Sequence

from maformer_mm.config.zoo import config_dir, list_configs, model_index, resolve_config

__all__ = ['parse_args', 'main']


def _row(name: str, entry: Optional[dict]) -> List[str]:
    if entry is None:
        return [name, '', '', '', '', '']
    meta = entry.get('Metadata', {})
    task = ', '.join(r['Task'] for r in entry.get('Results', [])) or meta.get('Task', '')
    return [
        name,
        task,
        meta.get('Training Data', ''),
        str(meta.get('Schedule', '')),
        str(meta.get('Parameters', '')),
        str(meta.get('FLOPs', '')),
    ]


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('pattern', nargs='?', help='list only configs whose name contains this')
    parser.add_argument('--path', metavar='NAME', help='print the file of the config NAME and nothing else')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    """Prints the listing (or the path); returns the names listed (or the path)."""
    args = parse_args(argv)
    if args.path:
        path = resolve_config(args.path)
        print(path)
        return [path]
    names = list_configs(args.pattern)
    index = model_index()
    rows = [['config', 'task', 'data', 'schedule', 'params', 'FLOPs']] + [_row(n, index.get(n)) for n in names]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print('  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f'\n{len(names)} configs in {config_dir()}')
    return names


if __name__ == '__main__':
    main()
