"""The demo data writer: ADE20K layout, label values, and the per-class hue bands of `--class-hues`."""

import colorsys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from maformer_mm.datasets.synthetic import CLASS_HUES


@pytest.fixture(scope='module')
def make_demo_data():
    from tools import make_demo_data

    return make_demo_data


def _median_hues(root: Path, split: str) -> dict:
    """Median hue of the pixels of each label value over a split's images (values 1..3 only)."""
    hues = {1: [], 2: [], 3: []}
    for label_path in sorted((root / 'annotations' / split).glob('*.png')):
        label = np.asarray(Image.open(label_path))
        image = np.asarray(Image.open(root / 'images' / split / (label_path.stem + '.jpg'))).astype(float) / 255
        for value in hues:
            for r, g, b in image[label == value][::7]:
                hues[value].append(colorsys.rgb_to_hsv(r, g, b)[0])
    return {value: np.array(h) for value, h in hues.items()}


def test_ade_layout_and_class_hues(make_demo_data, tmp_path):
    make_demo_data.main(
        ['ade', '--out', str(tmp_path), '--train', '12', '--val', '2', '--size', '48', '40', '--class-hues']
    )
    for split, count in (('training', 12), ('validation', 2)):
        labels = sorted((tmp_path / 'annotations' / split).glob('*.png'))
        assert len(labels) == len(list((tmp_path / 'images' / split).glob('*.jpg'))) == count
        first = Image.open(labels[0])
        assert first.mode == 'L' and first.size == (48, 40)
    values = set().union(*(np.unique(np.asarray(Image.open(p))) for p in (tmp_path / 'annotations').rglob('*.png')))
    assert values == {0, 1, 2, 3}
    for value, hues in _median_hues(tmp_path, 'training').items():
        centre = CLASS_HUES[value - 1]
        distance = np.minimum(abs(hues - centre), 1 - abs(hues - centre))  # hue is circular
        assert len(hues) and np.median(distance) < 0.08, make_demo_data.CLASSES[value - 1]


def test_random_colours_do_not_follow_the_class(make_demo_data, tmp_path):
    make_demo_data.main(['ade', '--out', str(tmp_path), '--train', '24', '--val', '1', '--size', '48', '48'])
    hues = _median_hues(tmp_path, 'training')
    spread = [np.percentile(h, 90) - np.percentile(h, 10) for h in hues.values()]
    assert min(spread) > 0.3
