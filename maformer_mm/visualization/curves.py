"""The training curve of a work dir: the loss, and the validation metric, against iterations (`tools/plot_curve.py`
draws it; the demos too).

It reads what mmengine's LocalVisBackend logs (`WORK_DIR/<run>/vis_data/scalars.json`, one JSON record per line;
the configs' default runtime keeps that backend). Runs of the same work dir (a resumed run) are joined in time
order, a later run's records replacing an earlier one's from the iteration where it resumed. Validation records
of epoch-based runs carry the epoch; they are placed at that epoch's last iteration.
"""

import glob
import json
import os.path as osp
from typing import Dict, List, NamedTuple, Optional, Tuple

__all__ = ['DEFAULT_METRICS', 'Curve', 'read_curve', 'plot_curve']

# The validation metric drawn when none is named: the first of these that the log holds.
DEFAULT_METRICS = ('coco/bbox_mAP', 'coco/segm_mAP', 'mIoU', 'accuracy/top1', 'coco/PQ', 'pq')


class Curve(NamedTuple):
    """What is drawn: (iteration, value) points of the loss and of the validation metric."""

    loss: List[Tuple[int, float]]
    metric_name: Optional[str]
    metric: List[Tuple[int, float]]


def _records(path: str) -> List[dict]:
    records = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f'{path}, line {number}, is not a JSON record: {error}') from None
    return records


def read_curve(work_dir: str, metric: Optional[str] = None) -> Curve:
    """The points of the work dir's logged runs.

    Raises:
        FileNotFoundError: the work dir holds no `*/vis_data/scalars.json`.
        ValueError: the log holds no training loss, or not the metric asked for.
    """
    paths = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))  # run folders are timestamps
    if not paths:
        raise FileNotFoundError(
            f"{work_dir}: no */vis_data/scalars.json (mmengine's LocalVisBackend log); "
            'is it the work dir of a training run?'
        )
    loss: Dict[int, float] = {}
    values: Dict[int, float] = {}
    names: List[str] = []
    for path in paths:
        records = _records(path)
        train = [r for r in records if 'loss' in r and 'step' in r]
        if train:  # a resumed run replaces what an earlier run logged from its first iteration on
            first = min(r['step'] for r in train)
            loss = {k: v for k, v in loss.items() if k < first}
            values = {k: v for k, v in values.items() if k < first}
        last_iter_of_epoch = {}
        for record in train:
            loss[record['step']] = float(record['loss'])
            if 'epoch' in record:
                last_iter_of_epoch[record['epoch']] = max(last_iter_of_epoch.get(record['epoch'], 0), record['step'])
        for record in records:
            if 'loss' in record or 'step' not in record:
                continue
            names += [k for k in record if k not in names and isinstance(record[k], (int, float)) and k != 'step']
            name = metric or next((m for m in DEFAULT_METRICS if m in record), None)
            if name in record:
                step = record['step']
                # epoch-based runs log validation by epoch: put it at the epoch's last iteration
                step = last_iter_of_epoch.get(step, step) if last_iter_of_epoch else step
                values[step] = float(record[name])
                metric = name
    if not loss:
        raise ValueError(f'{work_dir}: the log holds no training loss')
    if metric is not None and not values and names:
        raise ValueError(f'{work_dir}: the log has no validation metric {metric!r}; it has {", ".join(names)}')
    return Curve(sorted(loss.items()), metric, sorted(values.items()))


def plot_curve(curve: Curve, out: str, title: str = '') -> str:
    """Writes the curve as a PNG (loss on the left axis, the metric on the right one); returns `out`."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    figure, loss_axis = plt.subplots(figsize=(8, 4.5), dpi=100)
    steps, losses = zip(*curve.loss)
    loss_axis.plot(steps, losses, color='tab:blue', marker='.' if len(steps) < 50 else None, label='loss')
    loss_axis.set_xlabel('iteration')
    loss_axis.set_ylabel('training loss', color='tab:blue')
    loss_axis.grid(alpha=0.3)
    handles = loss_axis.get_lines()
    if curve.metric:
        metric_axis = loss_axis.twinx()
        m_steps, m_values = zip(*curve.metric)
        metric_axis.plot(m_steps, m_values, color='tab:orange', marker='o', label=f'validation {curve.metric_name}')
        metric_axis.set_ylabel(f'validation {curve.metric_name}', color='tab:orange')
        handles = handles + metric_axis.get_lines()
    loss_axis.legend(handles, [h.get_label() for h in handles], loc='upper center')
    loss_axis.set_title(title)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out
