"""Own COCO data as annotation tools export it (CVAT, Label Studio, Roboflow, FiftyOne): one quirk per generated set,
each with the outcome docs/own_data.md promises. Accepted sets pass the checks before a run, load through the
training pipeline, carry on every label the name of its annotation's category, and score 1.0 with perfect
predictions through the evaluator `--data-root` sets up; refused sets stop before anything is built, with the
project's message naming the file and the image, annotation or category id."""

import copy
import json
import logging
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

import maformer_mm  # noqa: F401
from maformer_mm.config.data_root import apply_coco_layout, read_coco_layout
from maformer_mm.config.preflight import check_data
from maformer_mm.config.zoo import load_config
from maformer_mm.datasets.synthetic import ShapesSet
from tests.helpers import REPO, assert_every_label_names_its_category, coco_perfect_score, memoised_package_config_index

CLASSES = ('ball', 'box', 'wedge')
SIZE = (64, 48)  # width, height: not square, so that a rotation shows


@pytest.fixture(scope='module')
def configs():
    with memoised_package_config_index():
        return {
            name: load_config(str(REPO / 'configs' / f'{name}.py'))
            for name in ('mask_rcnn_maformer_t', 'faster_rcnn_maformer_t')
        }


def _ann_file(root: Path, split: str) -> Path:
    return root / 'annotations' / f'instances_{split}2017.json'


@contextmanager
def _editing(root: Path, split: str):
    path = _ann_file(root, split)
    data = json.loads(path.read_text())
    yield data
    path.write_text(json.dumps(data))


def _both(root: Path):
    for split in ('train', 'val'):
        with _editing(root, split) as data:
            yield split, data


def _first_image(root: Path, split: str = 'train') -> Path:
    return root / f'{split}2017' / '000001.png'


# The quirks as exports have them. Each edits a clean generated set in place.
def _subfolders(root):
    with _editing(root, 'train') as data:
        (root / 'train2017' / 'batch_a').mkdir()
        for image in data['images']:
            shutil.move(str(root / 'train2017' / image['file_name']), str(root / 'train2017' / 'batch_a'))
            image['file_name'] = 'batch_a/' + image['file_name']


def _jpeg_and_png(root):
    with _editing(root, 'train') as data:
        Image.open(_first_image(root)).save(root / 'train2017' / '000001.jpg', quality=95)
        _first_image(root).unlink()
        data['images'][0]['file_name'] = '000001.jpg'


def _grayscale(root):
    Image.open(_first_image(root)).convert('L').save(_first_image(root))


def _rgba(root):
    image = Image.open(_first_image(root)).convert('RGBA')
    image.putalpha(128)
    image.save(_first_image(root))


def _exif_rotation(root):
    """Stored rotated, with EXIF orientation 6 (turn 90 degrees clockwise to show): the JSON's width and height and
    boxes are those of the picture as shown, as annotation tools draw them."""
    with _editing(root, 'train') as data:
        shown = Image.open(_first_image(root))
        exif = Image.Exif()
        exif[0x0112] = 6
        shown.transpose(Image.Transpose.ROTATE_90).save(root / 'train2017' / '000001.jpg', exif=exif, quality=95)
        _first_image(root).unlink()
        data['images'][0]['file_name'] = '000001.jpg'


def _string_image_ids(root):
    for _, data in _both(root):
        ids = {image['id']: f'frame_{image["id"]:04d}' for image in data['images']}
        for image in data['images']:
            image['id'] = ids[image['id']]
        for ann in data['annotations']:
            ann['image_id'] = ids[ann['image_id']]


def _huge_image_ids(root):
    for _, data in _both(root):
        for image in data['images']:
            image['id'] += 2**63
        for ann in data['annotations']:
            ann['image_id'] += 2**63


def _crowd_rle(compressed: bool):
    def edit(root):
        from pycocotools import mask as mask_utils

        for _, data in _both(root):
            image = data['images'][0]
            region = np.zeros((image['height'], image['width']), dtype=np.uint8)
            region[:6, :10] = 1  # a corner the generated shapes do not reach
            if compressed:
                rle = mask_utils.encode(np.asfortranarray(region))
                rle['counts'] = rle['counts'].decode()
            else:
                flat = region.flatten(order='F')
                edges = np.flatnonzero(np.diff(flat)) + 1
                rle = dict(counts=np.diff(np.r_[0, edges, flat.size]).tolist(), size=list(region.shape))
                if flat[0]:
                    rle['counts'].insert(0, 0)
            data['annotations'].append(
                dict(
                    id=1000,
                    image_id=image['id'],
                    category_id=data['categories'][0]['id'],
                    segmentation=rle,
                    area=60.0,
                    bbox=[0, 0, 10, 6],
                    iscrowd=1,
                )
            )

    return edit


def _unicode_and_spaced_names(root):
    for _, data in _both(root):
        for category, name in zip(data['categories'], ('boîte rouge', '球 ball', 'wedge #2')):
            category['name'] = name


def _category_without_annotations(root):
    for _, data in _both(root):
        data['categories'].append(dict(id=9, name='cone'))


def _image_without_annotations(root):
    with _editing(root, 'train') as data:
        shutil.copy(_first_image(root), root / 'train2017' / 'empty.png')
        data['images'].append(dict(id=77, file_name='empty.png', width=SIZE[0], height=SIZE[1]))


def _zero_width_box(root):
    """A second box drawn on an object with no width (an image left with no annotation would train as background)."""
    with _editing(root, 'train') as data:
        data['annotations'].append(dict(data['annotations'][0], id=999, bbox=[5.0, 5.0, 0.0, 9.0]))


def _small_image(root):
    """An image under mmdet's min_size (32 px in its COCO bases), with an annotation."""
    with _editing(root, 'train') as data:
        Image.open(_first_image(root)).crop((0, 0, 20, 20)).save(root / 'train2017' / 'small.png')
        data['images'].append(dict(id=78, file_name='small.png', width=20, height=20))
        data['annotations'].append(dict(data['annotations'][0], id=998, image_id=78, bbox=[2.0, 2.0, 10.0, 10.0]))


def _annotation_of_no_image(root):
    with _editing(root, 'train') as data:
        data['annotations'].append(dict(data['annotations'][0], id=997, image_id=12345))


def _missing_image_file(root):
    _first_image(root).unlink()


def _annotation_without_area(root):
    with _editing(root, 'val') as data:
        del data['annotations'][1]['area']


def _out_of_id_order(root):
    """The issue's case: categories listed as ids 99, 42, 7."""
    for _, data in _both(root):
        ids = dict(zip([c['id'] for c in data['categories']], (99, 42, 7)))
        for category in data['categories']:
            category['id'] = ids[category['id']]
        for ann in data['annotations']:
            ann['category_id'] = ids[ann['category_id']]


def _val_other_ids(root):
    with _editing(root, 'val') as data:
        for category in data['categories']:
            category['id'] += 100
        for ann in data['annotations']:
            ann['category_id'] += 100


def _box_only(root):
    """CVAT writes `"segmentation": []`, Roboflow no segmentation at all."""
    for split, data in _both(root):
        for ann in data['annotations']:
            if split == 'train':
                ann['segmentation'] = []
            else:
                del ann['segmentation']


def _two_point_polygon(root):
    with _editing(root, 'val') as data:
        data['annotations'][0]['segmentation'] = [[10.0, 10.0, 20.0, 20.0]]


def _repeated_annotation_ids(root):
    with _editing(root, 'train') as data:
        data['annotations'][1]['id'] = data['annotations'][0]['id']


def _repeated_image_ids(root):
    with _editing(root, 'train') as data:
        data['images'][1]['id'] = data['images'][0]['id']


def _null_image_id(root):
    with _editing(root, 'train') as data:
        data['images'][2]['id'] = None


def _file_names_with_the_folder(root):
    with _editing(root, 'train') as data:
        for image in data['images']:
            image['file_name'] = 'train2017/' + image['file_name']


def _val_missing_a_class(root):
    with _editing(root, 'val') as data:
        data['categories'] = data['categories'][:2]
        data['annotations'] = [a for a in data['annotations'] if a['category_id'] in (1, 2)]


def _val_adding_a_class(root):
    with _editing(root, 'val') as data:
        data['categories'].append(dict(id=4, name='cone'))


def _val_permuted(root):
    """The same (id, name) pairs as train's, listed in another order."""
    with _editing(root, 'val') as data:
        data['categories'] = data['categories'][::-1]


def _other_layout(root):
    shutil.move(str(_ann_file(root, 'train')), str(root / 'annotations' / 'train.json'))


ACCEPTED = {
    'clean': (None, 'mask_rcnn_maformer_t'),
    'sub-folders in file_name': (_subfolders, 'mask_rcnn_maformer_t'),
    'PNG and JPEG mixed': (_jpeg_and_png, 'mask_rcnn_maformer_t'),
    'grayscale image': (_grayscale, 'mask_rcnn_maformer_t'),
    'RGBA image': (_rgba, 'mask_rcnn_maformer_t'),
    'EXIF rotation': (_exif_rotation, 'mask_rcnn_maformer_t'),
    'string image ids': (_string_image_ids, 'mask_rcnn_maformer_t'),
    'image ids beyond 2**63': (_huge_image_ids, 'mask_rcnn_maformer_t'),
    'crowd RLE, list counts': (_crowd_rle(False), 'mask_rcnn_maformer_t'),
    'crowd RLE, string counts': (_crowd_rle(True), 'mask_rcnn_maformer_t'),
    'non-ASCII and spaced class names': (_unicode_and_spaced_names, 'mask_rcnn_maformer_t'),
    'a category without annotations': (_category_without_annotations, 'mask_rcnn_maformer_t'),
    'categories listed out of id order': (_out_of_id_order, 'mask_rcnn_maformer_t'),
    'val: same names and order, other ids': (_val_other_ids, 'mask_rcnn_maformer_t'),
    'box-only export, box-only config': (_box_only, 'faster_rcnn_maformer_t'),
    'an image without annotations (dropped, counted)': (_image_without_annotations, 'mask_rcnn_maformer_t'),
    'a zero-width box (dropped, counted)': (_zero_width_box, 'mask_rcnn_maformer_t'),
    'an image under min_size (dropped, counted)': (_small_image, 'mask_rcnn_maformer_t'),
    'an annotation of no listed image (dropped, counted)': (_annotation_of_no_image, 'mask_rcnn_maformer_t'),
}


def _data(tmp_path: Path, edit) -> Path:
    root = tmp_path / 'my_coco'
    ShapesSet(num_train=3, num_val=2, size=SIZE, classes=CLASSES).write_coco(str(root), year='2017')
    if edit is not None:
        edit(root)
    return root


def _configured(configs, name: str, root: Path) -> Config:
    """The config as `--data-root` sets it, at 64 px."""
    cfg = copy.deepcopy(configs[name])
    apply_coco_layout(cfg, read_coco_layout(str(root)))
    cfg.train_dataloader.dataset.pipeline[2].scale = (64, 64)
    return cfg


@pytest.mark.parametrize('quirk', list(ACCEPTED), ids=list(ACCEPTED))
def test_accepted_exports_load_name_every_label_and_score_perfect_predictions_1(configs, tmp_path, quirk):
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    edit, config = ACCEPTED[quirk]
    root = _data(tmp_path, edit)
    cfg = _configured(configs, config, root)
    ((note, level),) = check_data(cfg, ('train', 'val'))
    init_default_scope('mmdet')
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert assert_every_label_names_its_category(dataset, _ann_file(root, 'train')) > 0
    for index in range(len(dataset)):  # the training pipeline: images decoded, masks rasterised, resized
        sample = dataset[index]
        assert sample['inputs'].shape[0] == 3 and max(sample['inputs'].shape[1:]) == 64
        assert sample['data_samples'].ori_shape == (SIZE[1], SIZE[0])  # as the JSON says (EXIF applied)
    masks = config.startswith('mask')
    metrics = coco_perfect_score(cfg, 'val', ('bbox', 'segm') if masks else ('bbox',))
    assert metrics['coco/bbox_mAP'] == 1.0 and (not masks or metrics['coco/segm_mAP'] == 1.0), metrics

    train = json.loads(_ann_file(root, 'train').read_text())
    images, anns = len(train['images']), len(train['annotations'])
    head = f'train annotation file {_ann_file(root, "train")}: mmdet trains on '
    if quirk.startswith('an image without'):
        assert note == (
            f'{head}{images - 1} of {images} images and {anns} of {anns} annotations; 1 images without an annotation '
            'of the classes (filter_empty_gt) (ids 77)'
        )
    elif quirk.startswith('a zero-width'):
        assert note == (
            f'{head}{images} of {images} images and {anns - 1} of {anns} annotations; 1 boxes under 1 px or of zero '
            'area (ids 999)'
        )
    elif quirk.startswith('an image under'):
        assert note == (
            f'{head}{images - 1} of {images} images and {anns} of {anns} annotations; 1 images under min_size 32 px '
            '(ids 78)'
        )
    elif quirk.startswith('an annotation of no'):
        assert note == (
            f'{head}{images} of {images} images and {anns - 1} of {anns} annotations; 1 annotations of no listed '
            'image (ids 997)'
        )
    else:
        assert note == f'{head}{images} of {images} images and {anns} of {anns} annotations' and level == logging.INFO
    assert level == (logging.WARNING if 'dropped' in quirk else logging.INFO)


REFUSED = {
    'box-only export, Mask R-CNN': (
        _box_only,
        ValueError,
        r'train annotation file {train} cannot be used as it is:\n  - (\d+) of \1 annotations have no mask \(no '
        r'"segmentation", or an empty one\), but the config needs masks \(LoadAnnotations\(with_mask=True\) in its '
        r'pipeline\): annotations 1, 2, 3.*\. For box-only data, train a box-only config instead, such as '
        r'configs/faster_rcnn_maformer_t.py',
    ),
    'a 2-point polygon in val': (
        _two_point_polygon,
        ValueError,
        r'val annotation file {val} cannot be used as it is:\n  - polygons of fewer than 3 points \(or an odd number '
        r'of coordinates\) in annotations 1 \(1 in all\)',
    ),
    'repeated annotation ids': (
        _repeated_annotation_ids,
        ValueError,
        r'train annotation file {train} cannot be used as it is:\n  - repeated annotation ids: 1 \(2 annotations\)',
    ),
    'repeated image ids': (
        _repeated_image_ids,
        ValueError,
        r'train annotation file {train} cannot be used as it is:\n  - repeated image ids: 1 \(2 images\)',
    ),
    'a null image id': (
        _null_image_id,
        ValueError,
        r'train annotation file {train} cannot be read as mmdet reads it:\n  - images whose id is not a number or '
        r'a string: #2 of the list \(id None\)',
    ),
    'file_names that repeat the image folder': (
        _file_names_with_the_folder,
        ValueError,
        r"3 file_names start with the image folder 'train2017/' \(e.g. image 1: 'train2017/000001.png'\), which "
        r'mmdet joins to {root}/train2017/ again \({root}/train2017/train2017/000001.png\): write them relative to '
        r"{root}/train2017/ \('000001.png'\)",
    ),
    'a missing image file': (
        _missing_image_file,
        ValueError,
        r'1 of 3 image files are not in {root}/train2017/: image ids 1 \(e.g. {root}/train2017/000001.png\)',
    ),
    'an annotation without area': (
        _annotation_without_area,
        ValueError,
        r"val annotation file {val} cannot be read as mmdet reads it:\n  - annotations without 'area': 2",
    ),
    'val missing a class': (
        _val_missing_a_class,
        ValueError,
        r"the splits' categories differ: {train} has 3 \(ball, box, wedge\), {val} has 2 \(ball, box\); only in the "
        r"first: \['wedge'\]",
    ),
    'val adding a class': (
        _val_adding_a_class,
        ValueError,
        r"the splits' categories differ: .*only in the second: \['cone'\]",
    ),
    'val listing the same categories in another order': (
        _val_permuted,
        ValueError,
        r"{val} lists the categories of {train} in another order: \(3, 'wedge'\), \(2, 'box'\), \(1, 'ball'\) "
        r"against \(1, 'ball'\), \(2, 'box'\), \(3, 'wedge'\) \(id, name\)",
    ),
    'another layout': (
        _other_layout,
        FileNotFoundError,
        r'annotation file not found: {train} \(expected the COCO 2017 layout',
    ),
}


@pytest.mark.parametrize('quirk', list(REFUSED), ids=list(REFUSED))
def test_refused_exports_stop_before_a_run_naming_the_file_and_the_id(configs, tmp_path, quirk):
    edit, error, message = REFUSED[quirk]
    root = _data(tmp_path, edit)
    pattern = message.format(root=root, train=_ann_file(root, 'train'), val=_ann_file(root, 'val'))
    with pytest.raises(error, match=pattern):
        check_data(_configured(configs, 'mask_rcnn_maformer_t', root), ('train', 'val'))


def test_a_permuted_val_list_would_score_a_perfect_model_wrongly(configs, tmp_path):
    """What the refusal prevents: mmdet numbers val's classes in val's list order, so a model's label k (train's
    k-th category) is scored as val's k-th. Built without the check, perfect predictions score 1/3 (of the three
    classes listed backwards, only the middle one keeps its label), against 1.0 with train's file."""
    root = _data(tmp_path, _val_permuted)
    cfg = _configured(configs, 'mask_rcnn_maformer_t', _data(tmp_path / 'clean', None))
    assert coco_perfect_score(cfg, 'val')['coco/bbox_mAP'] == 1.0
    cfg.val_evaluator.ann_file = str(_ann_file(root, 'val'))
    assert coco_perfect_score(cfg, 'val')['coco/bbox_mAP'] == 0.333
