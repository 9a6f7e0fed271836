"""Small synthetic data sets in the layouts the real ones use, for the demos and tests: `ShapesSet`, and
`tools/make_demo_data.py` on the command line.

Images hold 1-3 non-overlapping filled shapes (circle, square, triangle) of random colour, size and
position on a noisy background; `class_hues` gives each class its own hue band instead. COCO:
`{train,val}/*.png` + `annotations/instances_{train,val}.json` with polygon masks; `year='2017'` names them as
COCO 2017 does (`{train,val}2017/`, `instances_{train,val}2017.json`), the layout `--data-root` reads.
ADE20K: `images/{training,validation}/*.jpg` + `annotations/.../*.png` where 0 is background (removed by
reduce_zero_label) and 1..N are the shape classes. Up to five classes (class k is drawn as the k-th of circle,
square, triangle, pentagon, hexagon).
"""

import colorsys
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

__all__ = ['CLASSES', 'SHAPES', 'CLASS_HUES', 'draw_scene', 'ShapesSet']

CLASSES = ('circle', 'square', 'triangle')
SHAPES = ('circle', 'square', 'triangle', 'pentagon', 'hexagon')  # what class k looks like
# With `class_hues`, class k's fill takes a hue within +-0.06 of CLASS_HUES[k] (red, blue, green, ...).
CLASS_HUES = (0.0, 0.6, 0.33, 0.15, 0.8)
Polygon = List[Tuple[float, float]]


def _shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> Polygon:
    corners = {'circle': 24, 'square': 4, 'triangle': 3, 'pentagon': 5, 'hexagon': 6}[kind]
    start = angle + (math.pi / 4 if kind == 'square' else 0.0)
    return [
        (cx + r * math.cos(start + 2 * math.pi * k / corners), cy + r * math.sin(start + 2 * math.pi * k / corners))
        for k in range(corners)
    ]


def _fill(rng: np.random.Generator, label: int, class_hues: bool) -> Tuple[int, ...]:
    if not class_hues:
        return tuple(int(c) for c in rng.integers(0, 256, 3))
    hue = (CLASS_HUES[label] + rng.uniform(-0.06, 0.06)) % 1.0
    rgb = colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.55, 1.0))
    return tuple(int(255 * c) for c in rgb)


def draw_scene(
    rng: np.random.Generator, size: Tuple[int, int], class_hues: bool = False, num_classes: int = len(CLASSES)
) -> Tuple[Image.Image, List[Tuple[int, Polygon]]]:
    """One image and its objects as (class index, polygon) pairs; shapes do not overlap. Fill colours
    are random, or with `class_hues` drawn from a hue band per class (a cue learnable in minutes)."""
    w, h = size
    background = rng.integers(90, 170, 3)
    pixels = np.clip(background + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    placed: List[Tuple[float, float, float]] = []
    objects = []
    for _ in range(int(rng.integers(1, 4))):
        for _attempt in range(20):
            r = float(rng.uniform(0.09, 0.2) * min(w, h))
            cx, cy = float(rng.uniform(r, w - r)), float(rng.uniform(r, h - r))
            if all(math.hypot(cx - x, cy - y) > r + s + 2 for x, y, s in placed):
                break
        else:
            continue
        placed.append((cx, cy, r))
        label = int(rng.integers(num_classes))
        polygon = _shape_polygon(SHAPES[label], cx, cy, r, float(rng.uniform(0, math.pi)))
        draw.polygon(polygon, fill=_fill(rng, label, class_hues))
        objects.append((label, polygon))
    return image, objects


def _polygon_area(polygon: Polygon) -> float:
    xs, ys = np.array(polygon).T
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


@dataclass(frozen=True)
class ShapesSet:
    """A generated shapes set: how many images of which size, with which seed, colours and class names; written in
    COCO's layout (`write_coco`) or ADE20K's (`write_ade`). The same settings draw the same images in both.

    Args:
        num_train: Training images.
        num_val: Validation images.
        size: Image (width, height).
        seed: Seed of the drawing.
        class_hues: Each class filled from its own hue band instead of random colours.
        classes: Names of the classes, 1 to 5 (class k is drawn as `SHAPES[k]`).
    """

    num_train: int = 64
    num_val: int = 16
    size: Tuple[int, int] = (192, 192)
    seed: int = 0
    class_hues: bool = False
    classes: Sequence[str] = CLASSES

    def __post_init__(self) -> None:
        if not 1 <= len(self.classes) <= len(SHAPES) or len(set(self.classes)) != len(self.classes):
            raise ValueError(f'classes must be 1 to {len(SHAPES)} distinct names, got {list(self.classes)}')

    def scenes(self, splits: Tuple[str, str]) -> Iterator[Tuple[str, int, Image.Image, List[Tuple[int, Polygon]]]]:
        """(split, index from 1, image, objects) of the training then the validation images, named `splits`."""
        rng = np.random.default_rng(self.seed)
        for split, count in zip(splits, (self.num_train, self.num_val)):
            for index in range(1, count + 1):
                yield (split, index, *draw_scene(rng, self.size, self.class_hues, len(self.classes)))

    def write_coco(self, out: str, year: str = '') -> None:
        """Writes a COCO-format instance segmentation set under `out` (`year='2017'`: COCO 2017's names)."""
        root = Path(out)
        (root / 'annotations').mkdir(parents=True, exist_ok=True)
        width, height = self.size
        splits = ('train', 'val')
        images: Dict[str, list] = {split: [] for split in splits}
        annotations: Dict[str, list] = {split: [] for split in splits}
        for split in splits:
            (root / f'{split}{year}').mkdir(exist_ok=True)
        for split, image_id, image, objects in self.scenes(splits):
            name = f'{image_id:06d}.png'
            image.save(root / f'{split}{year}' / name)
            images[split].append(dict(id=image_id, file_name=name, width=width, height=height))
            for label, polygon in objects:
                xs, ys = np.array(polygon).T
                x0, y0 = max(float(xs.min()), 0.0), max(float(ys.min()), 0.0)
                bbox = [x0, y0, min(float(xs.max()), width) - x0, min(float(ys.max()), height) - y0]
                annotations[split].append(
                    dict(
                        id=len(annotations[split]) + 1,
                        image_id=image_id,
                        category_id=label + 1,
                        segmentation=[[round(v, 2) for xy in polygon for v in xy]],
                        area=_polygon_area(polygon),
                        bbox=bbox,
                        iscrowd=0,
                    )
                )
        categories = [dict(id=i + 1, name=name) for i, name in enumerate(self.classes)]
        for split in splits:
            content = dict(images=images[split], annotations=annotations[split], categories=categories)
            with open(root / 'annotations' / f'instances_{split}{year}.json', 'w') as f:
                json.dump(content, f)

    def write_ade(self, out: str) -> None:
        """Writes an ADE20K-layout semantic segmentation set under `out` (label 0 = background, k + 1 = class k)."""
        root = Path(out)
        for split in ('training', 'validation'):
            (root / 'images' / split).mkdir(parents=True, exist_ok=True)
            (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for split, index, image, objects in self.scenes(('training', 'validation')):
            label = Image.new('L', self.size, 0)
            draw = ImageDraw.Draw(label)
            for cls, polygon in objects:
                draw.polygon(polygon, fill=cls + 1)
            name = f'ADE_{split[:5]}_{index:08d}'
            image.save(root / 'images' / split / f'{name}.jpg', quality=95)
            label.save(root / 'annotations' / split / f'{name}.png')
