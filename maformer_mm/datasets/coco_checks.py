"""What mmdet 3.3 and pycocotools will make of a COCO-format annotation file, found out before a run starts.

Exports of annotation tools (CVAT, Label Studio, Roboflow, FiftyOne) differ in small ways that mmdet either drops
without a word or fails on deep inside: a bare `KeyError: 'mask'` at the first iteration, pycocotools'
`Argument 'bb' has incorrect type` at the first validation, `Annotation ids ... are not unique!` without the id,
`train2017/train2017/x.jpg` not found. `check_coco_file` reads the file once and

- refuses, naming the file and the image, annotation or category ids: entries without a field mmdet or pycocotools
  reads, ids that are not numbers or strings (null, true, lists), repeated ids or category names, image files that
  are not there (with the remedy when the `file_name`s repeat the image folder), annotations without a mask for a
  config that trains or scores masks, polygons of fewer than 3 points;
- counts what mmdet's CocoDataset will leave out (annotations marked `ignore`, boxes outside their image or under
  1 px, categories that are not classes, annotations of no listed image; training images without an annotation of
  the classes or under `min_size`), for the log.

Class order: CocoDataset labels the classes in the order the file *lists* its categories, filtered by name
(`coco.get_cat_ids(cat_names=classes)` keeps the file's order whatever the order of `classes`), and CocoMetric maps
labels back to category ids by the same rule. `label_categories` is that order; `check_class_order` refuses a
`metainfo.classes` in another one, which would put the wrong name on every label.
"""

import json
import mmap
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..messages import shown

__all__ = [
    'MAX_CHECKED_BYTES',
    'check_coco_json',
    'read_coco_categories',
    'load_coco_json',
    'label_categories',
    'id_key',
    'id_sorted_names',
    'check_class_order',
    'CocoDrops',
    'check_coco_file',
    'coco_dataset_paths',
]

HEADER_ONLY_BYTES = 64 * 2**20  # larger files: only their header is checked for a JSON object by check_coco_json
MAX_CHECKED_BYTES = 256 * 2**20  # larger files are not parsed here for check_coco_file (mmdet parses them anyway)
_COCO_KEYS = ('images', 'annotations', 'categories')


def check_coco_json(path: str, what: str = 'annotation file') -> None:
    """Raises FileNotFoundError / ValueError naming `path` unless it is a COCO JSON object."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{what} not found: {path}')
    if os.path.getsize(path) > HEADER_ONLY_BYTES:
        with open(path, 'rb') as f:
            head = f.read(1024).lstrip()
        if not head.startswith(b'{'):
            raise ValueError(f'{what} {path} is not COCO JSON (it does not start with a JSON object)')
        return
    _parsed(path, what)


def _parsed(path: str, what: str) -> dict:
    stat = os.stat(path)
    return _parse(osp.abspath(path), stat.st_size, stat.st_mtime_ns, what)


@lru_cache(maxsize=4)
def _parse(path: str, size: int, mtime_ns: int, what: str) -> dict:
    """The file parsed and checked for COCO's three lists; cached on its size and time, so that the checks of a
    run parse each file once. Callers must not change what it returns."""
    try:
        with open(path, encoding='utf-8') as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f'{what} {path} is not valid JSON: {error}') from error
    missing = [k for k in _COCO_KEYS if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f'{what} {path} is not COCO JSON: it lacks the lists {missing}')
    return data


def load_coco_json(path: str, what: str = 'annotation file') -> Optional[dict]:
    """The COCO JSON object of `path` (do not modify it), or None when the file is larger than MAX_CHECKED_BYTES."""
    check_coco_json(path, what)
    if os.path.getsize(path) > MAX_CHECKED_BYTES:
        return None
    return _parsed(path, what)


def read_coco_categories(path: str, what: str = 'annotation file') -> List[dict]:
    """The `categories` list of a COCO JSON file, in the file's order. Files too large to parse whole here (COCO's
    train2017 file is 450 MB) are searched for the key instead, and only the list after it is decoded."""
    check_coco_json(path, what)
    if os.path.getsize(path) <= HEADER_ONLY_BYTES:
        categories = _parsed(path, what)['categories']
    else:
        with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            key = data.rfind(b'"categories"')
            start = data.find(b'[', key)
            if key < 0 or start < 0:
                raise ValueError(f'{what} {path} is not COCO JSON: it has no "categories" list')
            categories, span = None, 2**16
            while categories is None:
                try:
                    categories = json.JSONDecoder().raw_decode(data[start : start + span].decode('utf-8', 'replace'))[0]
                except json.JSONDecodeError as error:
                    if start + span >= len(data):
                        raise ValueError(f'{what} {path}: its "categories" list is not valid JSON: {error}') from None
                    span *= 16
    if not isinstance(categories, list) or not all(
        isinstance(c, dict) and 'id' in c and 'name' in c for c in categories
    ):
        raise ValueError(f'{what} {path}: "categories" must be a list of objects with "id" and "name"')
    return categories


def label_categories(categories: Sequence[dict], classes: Optional[Sequence[str]] = None) -> List[dict]:
    """The categories mmdet gives labels 0, 1, ..., in that order: those named in `classes` (all without it), in
    the order the file lists them, as CocoDataset and CocoMetric take them (`coco.get_cat_ids(cat_names=...)`)."""
    if classes is None:
        return list(categories)
    names = set(map(str, classes))
    return [c for c in categories if str(c['name']) in names]


def id_key(category_id: Any) -> Tuple[str, Any]:
    """A sort key of category ids, integers or strings."""
    return type(category_id).__name__, category_id


def id_sorted_names(ann_file: Optional[str], classes: Optional[Sequence[str]]) -> Optional[Tuple[str, ...]]:
    """The names of the file's categories among `classes`, sorted by category id: the order in which maformer_mm
    named classes before it followed mmdet's (see `maformer_mm.checkpoint.classes.in_id_order`); None when `ann_file`
    is not a local COCO JSON file."""
    if not classes or not ann_file or not str(ann_file).endswith('.json') or not osp.isfile(ann_file):
        return None
    categories = label_categories(read_coco_categories(ann_file), classes)
    return tuple(str(c['name']) for c in sorted(categories, key=lambda c: id_key(c['id'])))


def check_class_order(categories: Sequence[dict], classes: Sequence[str], path: str, what: str) -> None:
    """Raises ValueError when mmdet would number `classes` (a config's metainfo.classes, all of them categories of
    the file) otherwise than they are listed: label k would be called `classes[k]` but be another category."""
    listed = tuple(str(c['name']) for c in label_categories(categories, classes))
    wanted = tuple(map(str, classes))
    if listed == wanted or sorted(listed) != sorted(wanted):
        return
    k = next(i for i, (a, b) in enumerate(zip(listed, wanted)) if a != b)
    raise ValueError(
        f'{what} {path} lists the categories of the classes as {shown(listed, 10)}, and mmdet numbers the classes in '
        "that order (CocoDataset keeps the file's order of categories, whatever the order of metainfo.classes): "
        f'label {k} is category {listed[k]!r}, which the config would call {wanted[k]!r}. Write metainfo.classes '
        f'in the order of the file, {listed!r}, for every split (and give every split the same order)'
    )


@dataclass
class CocoDrops:
    """What mmdet's CocoDataset leaves out of a training file: annotation ids by reason, image ids by filter."""

    images: int
    annotations: int
    dropped_annotations: Dict[str, List[Any]] = field(default_factory=dict)
    dropped_images: Dict[str, List[Any]] = field(default_factory=dict)
    unannotated: List[Any] = field(default_factory=list)  # kept images with no annotation left: background only

    def summary(self, path: str, split: str) -> str:
        """One log line: how many images and annotations mmdet keeps, and why it leaves the others out."""
        kept_images = self.images - sum(len(v) for v in self.dropped_images.values())
        kept = self.annotations - sum(len(v) for v in self.dropped_annotations.values())
        parts = [
            f'{split} annotation file {path}: mmdet trains on {kept_images} of {self.images} images and {kept} of '
            f'{self.annotations} annotations'
        ]
        for reason, ids in (*self.dropped_images.items(), *self.dropped_annotations.items()):
            if ids:
                parts.append(f'{len(ids)} {reason} (ids {shown(ids, 5)})')
        if self.unannotated:
            parts.append(
                f'{len(self.unannotated)} kept images have no annotation left and train as background '
                f'(ids {shown(self.unannotated, 5)})'
            )
        return '; '.join(parts)

    @property
    def dropped(self) -> bool:
        return any(self.dropped_annotations.values()) or any(self.dropped_images.values())


def _valid_id(value: Any) -> bool:
    """Integers (any size: pycocotools and mmdet 3.3 score ids beyond 2**63 as any other) and strings work as ids;
    numbers with a fraction do too, but null, true/false, lists and objects do not."""
    return isinstance(value, (int, float, str)) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ref(entry: dict, index: int) -> Any:
    """An entry's id, or its position in the list where it has no usable id."""
    value = entry.get('id')
    return value if _valid_id(value) else f'#{index} of the list'


def _repeated(entries: Sequence[dict]) -> Dict[Any, int]:
    counts = Counter(e['id'] for e in entries if _valid_id(e.get('id')))
    return {value: n for value, n in counts.items() if n > 1}


def _fields(entries: Sequence[Any], kind: str, required: Sequence[str], problems: List[str]) -> None:
    """Entries that are not objects, lack a required field or carry an id that is not a number or a string."""
    not_objects = [i for i, e in enumerate(entries) if not isinstance(e, dict)]
    if not_objects:
        problems.append(f'{kind} entries that are not JSON objects: positions {shown(not_objects, 5)}')
    for key in required:
        lacking = [_ref(e, i) for i, e in enumerate(entries) if isinstance(e, dict) and key not in e]
        if lacking:
            problems.append(f'{kind}s without {key!r}: {shown(lacking, 5)}')
    for key in [k for k in ('id', 'image_id', 'category_id') if k in required]:
        bad = [
            f'{_ref(e, i)} ({key} {e[key]!r})'
            for i, e in enumerate(entries)
            if isinstance(e, dict) and key in e and not _valid_id(e[key])
        ]
        if bad:
            problems.append(f'{kind}s whose {key} is not a number or a string: {shown(bad, 5)}')


def _missing_images(images: Sequence[dict], image_dir: str) -> List[str]:
    """Image files that are not under `image_dir`, with the remedy where the `file_name`s repeat its folder."""
    named = [im for im in images if isinstance(im.get('file_name'), str)]
    missing = [im for im in named if not osp.isfile(osp.join(image_dir, im['file_name']))]
    if not missing:
        return []
    folder = osp.basename(osp.normpath(image_dir))
    repeated = [
        im
        for im in missing
        if im['file_name'].replace('\\', '/').startswith(folder + '/')
        and osp.isfile(osp.join(osp.dirname(osp.normpath(image_dir)), im['file_name']))
    ]
    problems = []
    if repeated:
        first = repeated[0]
        problems.append(
            f"{len(repeated)} file_names start with the image folder '{folder}/' (e.g. image {first['id']}: "
            f'{first["file_name"]!r}), which mmdet joins to {image_dir} again '
            f'({osp.join(image_dir, first["file_name"])}): write them relative to {image_dir} '
            f'({first["file_name"].replace(chr(92), "/")[len(folder) + 1 :]!r}), as COCO does'
        )
    named_again = {id(im) for im in repeated}
    others = [im for im in missing if id(im) not in named_again]
    if others:
        problems.append(
            f'{len(others)} of {len(images)} image files are not in {image_dir}: image ids '
            f'{shown([im.get("id") for im in others], 5)} (e.g. {osp.join(image_dir, others[0]["file_name"])})'
        )
    return problems


def _segmentation_problem(segmentation: Any) -> Optional[str]:
    """Why mmdet or pycocotools cannot use a segmentation, or None: polygons are lists of at least 3 (x, y) points,
    run-length encodings objects with `counts` and `size`."""
    if isinstance(segmentation, dict):
        return None if 'counts' in segmentation and 'size' in segmentation else 'RLE without counts or size'
    if not isinstance(segmentation, list):
        return f'a {type(segmentation).__name__}, neither polygons nor RLE'
    if segmentation and not all(isinstance(p, list) for p in segmentation):
        return 'a flat list of numbers, not a list of polygons'
    for polygon in segmentation:
        if not all(_number(v) for v in polygon):
            return 'a polygon with values that are not numbers'
        if len(polygon) < 6 or len(polygon) % 2:
            return 'degenerate'
    return None


def _has_mask(annotation: dict) -> bool:
    """Box-only exports write no segmentation, `[]`, `[[]]` or `{}`."""
    segmentation = annotation.get('segmentation')
    return bool(segmentation) and segmentation != [[]]


def check_coco_file(
    path: str,
    split: str,
    image_dir: Optional[str] = None,
    classes: Optional[Sequence[str]] = None,
    masks_needed_by: Optional[str] = None,
    mask_remedy: str = '',
    filter_cfg: Optional[dict] = None,
) -> Optional[CocoDrops]:
    """Checks a COCO annotation file for what mmdet and pycocotools need (see the module's docstring).

    Args:
        path: the annotation file.
        split: 'train', 'val' or 'test', for the messages.
        image_dir: the local folder its `file_name`s are relative to; None skips the image files.
        classes: the config's classes (all categories without them).
        masks_needed_by: what in the config needs masks (e.g. "LoadAnnotations(with_mask=True)"), or None.
        mask_remedy: what to do about box-only data, appended to that refusal.
        filter_cfg: the training dataset's `filter_cfg` (`filter_empty_gt`, `min_size`); None for a dataset in test
            mode, which mmdet does not filter.

    Returns:
        What mmdet's CocoDataset will leave out (None when the file was too large to check here).

    Raises:
        ValueError naming the file and the ids of every problem found.
    """
    what = f'{split} annotation file'
    data = load_coco_json(path, what)
    if data is None:
        return None
    images, annotations, categories = data['images'], data['annotations'], data['categories']
    problems: List[str] = []
    _fields(images, 'image', ('id', 'file_name', 'width', 'height'), problems)
    _fields(annotations, 'annotation', ('id', 'image_id', 'category_id', 'bbox', 'area'), problems)
    _fields(categories, 'category', ('id', 'name'), problems)
    if problems:  # the checks below read these fields
        raise ValueError(f'{what} {path} cannot be read as mmdet reads it:\n  - ' + '\n  - '.join(problems))
    for kind, entries, effect in (
        ('image', images, 'pycocotools keeps the last image of each id and loses the others with their annotations'),
        ('annotation', annotations, 'mmdet refuses repeated annotation ids'),
        ('category', categories, 'pycocotools keeps the last category of each id'),
    ):
        repeated = _repeated(entries)
        if repeated:
            listed = [f'{value} ({n} {kind}s)' for value, n in repeated.items()]
            problems.append(f'repeated {kind} ids: {shown(listed, 5)}; {effect}. Give each {kind} its own id')
    names = Counter(str(c['name']) for c in categories)
    for name in [n for n, count in names.items() if count > 1]:
        ids = [c['id'] for c in categories if str(c['name']) == name]
        problems.append(
            f'categories named alike: {name!r} (ids {shown(ids)}); mmdet maps class names to categories, so each '
            'name must be unique'
        )
    if image_dir is not None and osp.isdir(image_dir):
        problems.extend(_missing_images(images, image_dir))

    image_size = {im['id']: (im['width'], im['height']) for im in images if _valid_id(im['id'])}
    category_ids = {c['id'] for c in categories}
    class_ids = {c['id'] for c in label_categories(categories, classes)}
    bad_boxes, bad_areas, masks_missing, bad_segments = [], [], [], {}
    drops: Dict[str, List[Any]] = {
        'annotations of no listed image': [],
        "annotations marked 'ignore'": [],
        'boxes outside their image': [],
        'boxes under 1 px or of zero area': [],
        'annotations of a category that is not a class': [],
        'annotations of an unknown category id': [],
    }
    kept_per_image: Counter = Counter()
    for index, ann in enumerate(annotations):
        ref = _ref(ann, index)
        box = ann['bbox']
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            bad_boxes.append(ref)
            continue
        if not _number(ann['area']):
            bad_areas.append(ref)
            continue
        known_image = ann['image_id'] in image_size
        if known_image and ann['category_id'] in class_ids:  # what mmdet loads or pycocotools scores
            problem = _segmentation_problem(ann['segmentation']) if _has_mask(ann) else None
            if problem:
                bad_segments.setdefault(problem, []).append(ref)
            elif masks_needed_by and not _has_mask(ann):
                masks_missing.append(ref)
        if not known_image:
            drops['annotations of no listed image'].append(ref)
            continue
        width, height = image_size[ann['image_id']]
        x, y, w, h = box
        if ann.get('ignore', False):
            drops["annotations marked 'ignore'"].append(ref)
        elif ann['area'] <= 0 or w < 1 or h < 1:
            drops['boxes under 1 px or of zero area'].append(ref)
        elif max(0, min(x + w, width) - max(x, 0)) * max(0, min(y + h, height) - max(y, 0)) == 0:
            drops['boxes outside their image'].append(ref)
        elif ann['category_id'] not in category_ids:
            drops['annotations of an unknown category id'].append(ref)
        elif ann['category_id'] not in class_ids:
            drops['annotations of a category that is not a class'].append(ref)
        else:
            kept_per_image[ann['image_id']] += 1
    if bad_boxes:
        problems.append(f'annotations whose bbox is not 4 numbers (x, y, width, height): {shown(bad_boxes, 5)}')
    if bad_areas:
        problems.append(f'annotations whose area is not a number: {shown(bad_areas, 5)}')
    for problem, ids in bad_segments.items():
        if problem == 'degenerate':
            problems.append(
                f'polygons of fewer than 3 points (or an odd number of coordinates) in annotations {shown(ids, 5)} '
                f"({len(ids)} in all): pycocotools cannot score them (`Argument 'bb' has incorrect type`) and mmdet "
                'ignores such objects in training; remove those polygons (or their annotations) from the file'
            )
        else:
            problems.append(f'segmentations that are {problem}: annotations {shown(ids, 5)} ({len(ids)} in all)')
    if masks_missing:
        problems.append(
            f'{len(masks_missing)} of {len(annotations)} annotations have no mask (no "segmentation", or an empty '
            f'one), but the config needs masks ({masks_needed_by}): annotations {shown(masks_missing, 5)}'
            + (f'. {mask_remedy}' if mask_remedy else '')
        )
    if problems:
        raise ValueError(f'{what} {path} cannot be used as it is:\n  - ' + '\n  - '.join(problems))
    return _image_drops(images, annotations, class_ids, filter_cfg, drops, kept_per_image)


def _image_drops(
    images: Sequence[dict],
    annotations: Sequence[dict],
    class_ids: set,
    filter_cfg: Optional[dict],
    drops: Dict[str, List[Any]],
    kept_per_image: Counter,
) -> CocoDrops:
    """CocoDataset.filter_data's choice for a training file: images with no annotation (of any kind) of a class
    category with `filter_empty_gt`, then images whose shorter side is under `min_size`."""
    result = CocoDrops(images=len(images), annotations=len(annotations), dropped_annotations=drops)
    filter_cfg = filter_cfg or {}
    with_class = {a['image_id'] for a in annotations if a['category_id'] in class_ids}
    empty: List[Any] = []
    small: List[Any] = []
    kept: List[Any] = []
    min_size = filter_cfg.get('min_size', 0)
    for image in images:
        if filter_cfg.get('filter_empty_gt', False) and image['id'] not in with_class:
            empty.append(image['id'])
        elif min(image['width'], image['height']) < min_size:
            small.append(image['id'])
        else:
            kept.append(image['id'])
    result.dropped_images = {
        'images without an annotation of the classes (filter_empty_gt)': empty,
        f'images under min_size {min_size} px': small,
    }
    result.unannotated = [i for i in kept if not kept_per_image[i]]
    return result


def coco_dataset_paths(dataset: dict) -> Tuple[Optional[str], Optional[str]]:
    """(annotation file, image folder) of a CocoDataset config, joined to its data root; the folder is None when
    it is not a local folder (a storage backend)."""
    root = dataset.get('data_root') or ''
    ann_file = dataset.get('ann_file')
    ann_path = osp.join(root, ann_file) if ann_file else None
    prefix = dataset.get('data_prefix') or {}
    prefix = prefix.get('img', '') if isinstance(prefix, dict) else ''
    folder = osp.join(root, prefix) if root or prefix else ''
    local = not dataset.get('backend_args') and '://' not in folder
    return ann_path, (folder or '.') if local else None
