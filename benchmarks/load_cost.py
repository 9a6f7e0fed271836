"""What reading a checkpoint as data costs, against `torch.load(weights_only=True)` of the same file, in one process.

A real checkpoint: one iteration of `tools/train.py` on Mask R-CNN MAFormer-T (configs/mask_rcnn_maformer_t_demo.py,
generated data), which writes weights, AdamW state, the message hub and the scheduler state. Two files:

- `weights`: its `meta` and `state_dict` only, which torch's weights-only load reads as it is;
- `training`: the whole file. torch's weights-only load refuses its message hub (HistoryBuffer, numpy), so its
  side of the comparison admits those names for that one call (`torch.serialization.safe_globals`, the way torch's
  documentation suggests, here on a file this script wrote); maformer_mm's loader needs nothing of the kind.

Each file is read by both in turns, `--repeats` times after a warm-up; the medians and their ratio are reported.

    .venv/bin/python -m benchmarks.load_cost [--repeats 15] [--out benchmarks/load_cost.json]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

REPO = Path(__file__).resolve().parents[1]


def _train_once(folder: Path) -> Path:
    """One iteration of tools/train.py on the demo config; returns the checkpoint it saved."""
    data = folder / 'data'
    subprocess.run(
        [sys.executable, REPO / 'tools' / 'make_demo_data.py', 'coco', '--out', data, '--train', '2', '--val', '1'],
        check=True,
        capture_output=True,
    )
    options = [
        f'train_dataloader.dataset.data_root={data}/',
        f'val_dataloader.dataset.data_root={data}/',
        f'val_evaluator.ann_file={data}/annotations/instances_val.json',
        'train_dataloader.batch_size=2',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=2',
        'default_hooks.checkpoint.interval=1',
        'model.backbone.init_cfg=None',
    ]
    work = folder / 'work'
    subprocess.run(
        [sys.executable, REPO / 'tools' / 'train.py', REPO / 'configs' / 'mask_rcnn_maformer_t_demo.py', '--work-dir',
         work, '--device', 'cpu', '--cfg-options', *options],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return work / 'epoch_1.pth'


def _timed(load: Callable[[], Any], results: List[float]) -> None:
    start = time.perf_counter()
    load()
    results.append((time.perf_counter() - start) * 1000)


def _numpy_globals() -> list:
    core = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    dtypes = {type(np.dtype(d)) for d in ('f8', 'i8', 'f4')}
    return [core._reconstruct, core.scalar, np.ndarray, np.dtype, *dtypes, HistoryBuffer, getattr]


def measure(checkpoint: Path, repeats: int) -> Dict[str, Any]:
    from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint

    loaded = load_mmengine_checkpoint(checkpoint)
    weights = checkpoint.with_name('weights_only.pth')
    torch.save({'meta': loaded['meta'], 'state_dict': loaded['state_dict']}, weights)
    rows = {}
    for name, path in (('weights', weights), ('training', checkpoint)):

        def torch_load(path: Path = path, name: str = name) -> Any:
            if name == 'weights':
                return torch.load(path, map_location='cpu', weights_only=True)
            with torch.serialization.safe_globals(_numpy_globals()):
                return torch.load(path, map_location='cpu', weights_only=True)

        def ours(path: Path = path) -> Any:
            return load_mmengine_checkpoint(path, map_location='cpu')

        times: Dict[str, List[float]] = {'torch': [], 'maformer_mm': []}
        torch_load(), ours()  # warm-up
        for _ in range(repeats):
            _timed(torch_load, times['torch'])
            _timed(ours, times['maformer_mm'])
        medians = {k: statistics.median(v) for k, v in times.items()}
        rows[name] = dict(
            mib=round(path.stat().st_size / 2**20, 1),
            torch_ms=round(medians['torch'], 1),
            maformer_mm_ms=round(medians['maformer_mm'], 1),
            ratio=round(medians['maformer_mm'] / medians['torch'], 3),
        )
    return rows


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=15)
    parser.add_argument('--checkpoint', type=Path, help='a tools/train.py checkpoint to use instead of training one')
    parser.add_argument('--out', type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix='maformer_mm_load_cost_') as folder:
        checkpoint = args.checkpoint or _train_once(Path(folder))
        rows = measure(checkpoint, args.repeats)
    result = dict(rows=rows, repeats=args.repeats, torch=torch.__version__, threads=torch.get_num_threads())
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + '\n')
    return result


if __name__ == '__main__':
    main()
