"""The label maps of a segmentation data set against its classes, before a run starts.

A label value beyond the classes reaches the loss as a class index and fails there (`IndexError: Target 6 is out
of bounds`), naming neither the file nor the value. `check_label_maps` reads the label PNGs (all of them up to
`MAX_SCANNED`, an even sample of that many beyond) and names the files and values instead.
"""

import os
import os.path as osp
from typing import List, Optional

import numpy as np

from ..messages import shown

__all__ = ['MAX_SCANNED', 'label_map_files', 'check_label_maps']

MAX_SCANNED = 1000


def label_map_files(folder: str, suffix: str) -> List[str]:
    """The files under `folder` (recursively, as mmseg lists them) whose names end with `suffix`, sorted."""
    found = []
    for parent, _, names in os.walk(folder):
        found.extend(osp.join(parent, n) for n in names if n.endswith(suffix))
    return sorted(found)


def check_label_maps(
    folder: str,
    suffix: str,
    num_classes: int,
    reduce_zero_label: bool,
    ignore_index: int = 255,
    split: str = 'train',
) -> Optional[str]:
    """Raises ValueError naming the label maps under `folder` that hold values beyond `num_classes` (with
    `reduce_zero_label`, 0 is ignored and class k is value k + 1); returns a note when only a sample was read,
    else None."""
    from PIL import Image

    files = label_map_files(folder, suffix)
    if len(files) > MAX_SCANNED:
        scanned = [files[i] for i in np.linspace(0, len(files) - 1, MAX_SCANNED).astype(int)]
    else:
        scanned = files
    valid_max = num_classes if reduce_zero_label else num_classes - 1
    bad = {}
    for path in scanned:
        with Image.open(path) as image:
            labels, mode = np.asarray(image), image.mode
        if labels.ndim != 2:
            raise ValueError(
                f'{split} label map {path} has {labels.shape[-1]} channels ({mode}): a label map holds one class '
                'value per pixel (a grayscale or palette PNG)'
            )
        values = np.unique(labels)
        beyond = [int(v) for v in values if v > valid_max and v != ignore_index]
        if beyond:
            bad[path] = beyond
    if bad:
        values = sorted({v for found in bad.values() for v in found})
        first, found = next(iter(bad.items()))
        meaning = (
            f'with reduce_zero_label, 0 is ignored and values 1..{num_classes} are the {num_classes} classes'
            if reduce_zero_label
            else f'values 0..{num_classes - 1} are the {num_classes} classes'
        )
        raise ValueError(
            f'{split} label maps under {folder} hold values beyond the classes: {shown(values, 10)} in {len(bad)} of '
            f'the {len(scanned)} files read (e.g. {first}: {shown(found, 10)}); {meaning}, and {ignore_index} is '
            'ignored. The loss would fail on them (`IndexError: Target ... is out of bounds`): fix those label maps, '
            'or the classes (and every num_classes) to cover them'
        )
    if len(scanned) < len(files):
        return (
            f'{split} label maps under {folder}: {len(scanned)} of {len(files)} files read for values beyond the '
            'classes'
        )
    return None
