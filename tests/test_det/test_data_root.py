"""Own COCO-format data without config editing: `tools/train.py CFG --data-root DIR` and `tools/test.py CFG CKPT
--data-root DIR` on a generated set with its own class names, count and category ids listed out of id order (every
label named as mmdet numbers it: in the JSON's list order); the errors for a broken layout, splits that disagree
and a checkpoint trained with other classes, and checkpoints that named their classes in id order (accepted with a
warning); every head's num_classes in our configs and in mmdet's Cascade/RetinaNet/Faster R-CNN; and the
mmdet-standard ten-line config. (The quirks of annotation tools' exports: test_export_quirks.py.)"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import maformer_mm  # noqa: F401
from maformer_mm.checkpoint.classes import check_checkpoint_classes, check_checkpoint_fits
from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
from maformer_mm.config.classes import leaf_datasets
from maformer_mm.config.data_root import apply_coco_layout, read_coco_layout
from maformer_mm.config.preflight import check_data
from maformer_mm.config.zoo import load_config
from maformer_mm.datasets.synthetic import ShapesSet
from maformer_mm.tools import test as test_tool
from maformer_mm.tools import train as train_tool
from tests.helpers import (
    REPO,
    USER_ARCH,
    assert_every_label_names_its_category,
    backbone_override,
    coco_perfect_score,
    memoised_package_config_index,
    train_on_data_root_argv,
    widths,
)

DEMO_CONFIG = str(REPO / 'configs' / 'mask_rcnn_maformer_t_demo.py')
EXAMPLE_CONFIG = str(REPO / 'configs' / 'examples' / 'mask_rcnn_maformer_t_my_coco.py')
# Generated as classes 0..3; the JSON then gets these category ids, listed in generation order (not id order):
# mmdet labels them 0..3 in the list's order, NAMES.
NAMES = ('ball', 'box', 'wedge', 'ring')
IDS = {'ball': 7, 'box': 3, 'wedge': 11, 'ring': 5}
ID_ORDER = ('box', 'ring', 'ball', 'wedge')  # the names sorted by id: what checkpoints recorded before
# A user's config inheriting the demo detector with a small custom backbone, at 64 px (the Resize steps of the
# pipelines are list entries, so they are set here rather than from the command line).
SMALL_CONFIG = """
_base_ = [{base!r}]
model = dict({backbone}, neck=dict(in_channels={widths}))
train_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='PackDetInputs')]))
test_dataloader = dict(dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
"""


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    """mmengine re-reads mmdet's/mmseg's whole model index for every `mmdet::` base of every config it parses."""
    with memoised_package_config_index():
        yield


def write_coco2017(root: Path, names=NAMES, ids=IDS, num_train: int = 4, num_val: int = 2) -> Path:
    """A generated set in COCO 2017's layout whose category ids are not 1..N and not listed in id order."""
    ShapesSet(num_train, num_val, (64, 64), classes=names).write_coco(str(root), year='2017')
    for split in ('train', 'val'):
        path = root / 'annotations' / f'instances_{split}2017.json'
        data = json.loads(path.read_text())
        old_to_new = {c['id']: ids[c['name']] for c in data['categories']}
        data['categories'] = [dict(c, id=ids[c['name']]) for c in data['categories']]
        for ann in data['annotations']:
            ann['category_id'] = old_to_new[ann['category_id']]
        path.write_text(json.dumps(data))
    return root


def _log_text(work_dir: Path) -> str:
    return '\n'.join(p.read_text() for p in work_dir.glob('*/*.log'))


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One epoch (one iteration of two images) of a small detector on a 4-class set through --data-root."""
    root = tmp_path_factory.mktemp('data_root')
    data = write_coco2017(root / 'data', num_train=2)
    config = root / 'small.py'
    config.write_text(
        SMALL_CONFIG.format(base=DEMO_CONFIG, backbone=backbone_override(img=64), widths=widths(USER_ARCH))
    )
    work_dir = root / 'work'
    train_tool.main(train_on_data_root_argv(config, data, work_dir))
    return root, data, config, work_dir


def test_train_labels_the_classes_in_the_jsons_list_order_and_records_their_ids(trained):
    _, data, _, work_dir = trained
    log = _log_text(work_dir)
    assert (
        f'--data-root {data}: 4 classes from {data}/annotations/instances_train2017.json and '
        f"{data}/annotations/instances_val2017.json, labelled in the order the JSON lists them (mmdet's): 0 ball "
        '(id 7), 1 box (id 3), 2 wedge (id 11), 3 ring (id 5)'
    ) in log
    assert 'set model.roi_head.bbox_head.num_classes, model.roi_head.mask_head.num_classes to 4' in log
    assert f'train annotation file {data}/annotations/instances_train2017.json: mmdet trains on 2 of 2 images' in log
    ckpt = load_mmengine_checkpoint(work_dir / 'epoch_1.pth', 'cpu')
    assert tuple(ckpt['meta']['dataset_meta']['classes']) == NAMES
    assert tuple(ckpt['meta']['dataset_meta']['category_ids']) == (7, 3, 11, 5)
    assert ckpt['state_dict']['roi_head.bbox_head.fc_cls.weight'].shape[0] == 5  # 4 classes + background
    assert ckpt['state_dict']['roi_head.mask_head.conv_logits.weight'].shape[0] == 4


def test_every_label_of_the_built_datasets_names_its_annotations_category(small_set):
    """Categories listed as ids 7, 3, 11, 5: each instance mmdet builds is named (label -> metainfo.classes) as the
    JSON's category of its annotation, and perfect predictions score 1.0 through the evaluator --data-root sets."""
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope

    cfg = load_config(DEMO_CONFIG)
    apply_coco_layout(cfg, read_coco_layout(str(small_set)))
    init_default_scope('mmdet')
    for split in ('train', 'val'):
        dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
        ann_file = small_set / 'annotations' / f'instances_{split}2017.json'
        annotations = json.loads(ann_file.read_text())['annotations']
        assert assert_every_label_names_its_category(dataset, ann_file) == len(annotations)
    metrics = coco_perfect_score(cfg, 'val', ('bbox', 'segm'))
    assert metrics['coco/bbox_mAP'] == metrics['coco/segm_mAP'] == 1.0


def test_test_tool_evaluates_and_names_the_classes(trained, monkeypatch):
    """Per-class metrics named by the set's classes. mmengine is made to believe it picked CUDA: with
    --device cpu the run must still place the model on the CPU (on this machine a CUDA move would fail)."""
    import mmengine.device.utils as mmengine_device

    root, data, config, work_dir = trained
    monkeypatch.setattr(mmengine_device, 'DEVICE', 'cuda')
    metrics = test_tool.main(
        [
            str(config),
            str(work_dir / 'epoch_1.pth'),
            '--data-root',
            str(data),
            '--device',
            'cpu',
            '--work-dir',
            str(root / 'test_work'),
        ]
    )
    assert mmengine_device.DEVICE == 'cuda'  # restored after the run
    for key in ('coco/bbox_mAP', 'coco/segm_mAP'):
        assert 0 <= metrics[key] <= 1
    for name in NAMES:  # (mmdet's CocoMetric keeps the last task's per-class AP under this name)
        value = metrics[f'coco/{name}_precision']
        assert math.isnan(value) or 0 <= value <= 1, (name, value)
    log = _log_text(root / 'test_work')
    assert '--data-root' in log and all(f'coco/{name}_precision: ' in log for name in NAMES)


def test_checkpoint_trained_with_other_classes_is_refused(trained, tmp_path):
    """Before anything is built: the classes in the checkpoint's meta data (as tools/train.py saved them,
    here without the weights to keep the test quick) against the classes of the data root."""
    _, _, _, work_dir = trained
    meta = load_mmengine_checkpoint(work_dir / 'epoch_1.pth', 'cpu')['meta']
    ckpt = tmp_path / 'trained_on_4.pth'
    torch.save({'meta': {'dataset_meta': meta['dataset_meta']}, 'state_dict': {}}, ckpt)
    other = write_coco2017(
        tmp_path / 'other', names=('ball', 'box', 'wedge'), ids=dict(ball=1, box=2, wedge=3), num_train=1, num_val=1
    )
    with pytest.raises(
        ValueError,
        match=r'trained_on_4.pth was trained with other classes: 4 \(ball, box, wedge, '
        rf'ring\); --data-root {other} has 3 \(ball, box, wedge\)',
    ):
        test_tool.main(
            [DEMO_CONFIG, str(ckpt), '--data-root', str(other), '--device', 'cpu', '--work-dir', str(tmp_path / 'w')]
        )


def in_id_order(checkpoint: Path, out: Path) -> Path:
    """The checkpoint as maformer_mm's --data-root wrote it before it followed mmdet's order: the class names sorted
    by category id, no category ids."""
    ckpt = load_mmengine_checkpoint(checkpoint, 'cpu')
    ckpt['meta']['dataset_meta']['classes'] = ID_ORDER
    del ckpt['meta']['dataset_meta']['category_ids']
    torch.save(ckpt, out)
    return out


def test_a_checkpoint_naming_its_classes_in_id_order_is_tested_with_its_names_reattached(trained, tmp_path):
    root, data, config, work_dir = trained
    old = in_id_order(work_dir / 'epoch_1.pth', tmp_path / 'old.pth')
    argv = [str(config), str(old), '--data-root', str(data), '--device', 'cpu', '--work-dir', str(tmp_path / 'w')]
    metrics = test_tool.main(argv)
    assert 0 <= metrics['coco/bbox_mAP'] <= 1
    assert (
        f'checkpoint {old} names its 4 classes in category-id order (box, ring, ball, wedge), as '
        "maformer_mm's --data-root recorded them before it followed mmdet's order; mmdet trained its labels in the "
        f'order the JSON lists the categories, so they are named here as --data-root {data} lists them: ball, box, '
        'wedge, ring (label k is the k-th)'
    ) in _log_text(tmp_path / 'w')
    # the same names in an order that is neither: refused
    ckpt = tmp_path / 'permuted.pth'
    torch.save({'meta': {'dataset_meta': {'classes': ('ring', 'wedge', 'box', 'ball')}}, 'state_dict': {}}, ckpt)
    with pytest.raises(ValueError, match='trained with other classes: .*The same names in another order'):
        test_tool.main([str(config), str(ckpt), *argv[2:]])


def test_checkpoint_without_classes_is_checked_by_tensor_shapes():
    model = torch.nn.Sequential(torch.nn.Linear(8, 3))
    other = {'state_dict': {'module.0.weight': torch.zeros(5, 8), '0.bias': torch.zeros(5)}}
    with pytest.raises(
        ValueError,
        match=r'other_head.pth does not fit the model built for the 3 classes of the data: '
        r'0.weight is \(5, 8\) in the checkpoint, \(3, 8\) here; 0.bias is \(5,\)',
    ):
        check_checkpoint_fits(model, other, 'other_head.pth', ('a', 'b', 'c'), 'the data')
    same = {'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': ('a', 'b', 'c')}}}
    check_checkpoint_fits(model, same, 'same.pth', ('a', 'b', 'c'), 'the data')
    check_checkpoint_classes(same, 'same.pth', ('a', 'b', 'c'), 'the data')


@pytest.fixture
def small_set(tmp_path):
    return write_coco2017(tmp_path / 'set', num_train=1, num_val=1)


@pytest.mark.parametrize('missing', ['annotations/instances_val2017.json', 'train2017'])
def test_missing_piece_of_the_layout_is_named(small_set, missing):
    path = small_set / missing
    shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.raises(
        FileNotFoundError,
        match=rf'--data-root {small_set}: .* not found: {path} \(expected the '
        r'COCO 2017 layout',
    ):
        read_coco_layout(str(small_set))


def test_splits_with_other_categories_are_named(small_set):
    val = small_set / 'annotations' / 'instances_val2017.json'
    data = json.loads(val.read_text())
    data['categories'] = [c for c in data['categories'] if c['name'] != 'ring'] + [dict(id=20, name='cone')]
    val.write_text(json.dumps(data))
    with pytest.raises(
        ValueError,
        match=r"the splits' categories differ: .*instances_train2017.json has 4 "
        r'\(ball, box, wedge, ring\), .*instances_val2017.json has 4 '
        r"\(ball, box, wedge, cone\); only in the first: \['ring'\]; "
        r"only in the second: \['cone'\]",
    ):
        read_coco_layout(str(small_set))
    assert read_coco_layout(str(small_set), ['test']).classes == ('ball', 'box', 'wedge', 'cone')  # val only


def test_data_root_is_refused_for_other_tasks(small_set):
    config = str(REPO / 'configs' / 'upernet_maformer_t_demo.py')
    with pytest.raises(
        ValueError,
        match=r'--data-root reads COCO-format detection data; .*upernet_maformer_t_demo.py '
        'is an mmseg config',
    ):
        train_tool.build_config(train_tool.parse_args([config, '--data-root', str(small_set)]))


def _num_classes_values(model: dict) -> list:
    found = []

    def visit(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == 'num_classes':
                    found.append(value)
                elif key != 'rpn_head':
                    visit(value)
        elif isinstance(node, (list, tuple)):
            for item in node:
                visit(item)

    visit(model)
    return found


# One config of each of our detector families (Mask R-CNN, Cascade Mask R-CNN with its list of box heads, Faster
# R-CNN, RetinaNet), the demo config, and mmdet's own Cascade (so the list case is covered whatever ships here).
@pytest.mark.parametrize(
    'config',
    [
        *sorted(str(p) for p in (REPO / 'configs').glob('*_maformer_t.py')),
        str(REPO / 'configs' / 'mask_rcnn_maformer_t_demo.py'),
        'mmdet::cascade_rcnn/cascade-mask-rcnn_r50_fpn_1x_coco.py',
    ],
    ids=lambda c: Path(c).stem,
)
def test_data_root_sets_every_head_and_dataset(small_set, config):
    cfg = load_config(config)
    layout = read_coco_layout(str(small_set))
    apply_coco_layout(cfg, layout)
    values = _num_classes_values(cfg.model)
    assert values and all(v == 4 for v in values)
    assert len(layout.num_classes_fields) == len(values)
    if 'cascade' in config:
        assert len(cfg.model.roi_head.bbox_head) == 3 and all(h.num_classes == 4 for h in cfg.model.roi_head.bbox_head)
    for split, folder in (('train', 'train2017/'), ('val', 'val2017/'), ('test', 'val2017/')):
        for dataset in leaf_datasets(cfg[f'{split}_dataloader'].dataset):
            assert dataset.data_root == str(small_set) and dataset.data_prefix.img == folder
            assert tuple(dataset.metainfo['classes']) == NAMES and len(dataset.metainfo['palette']) == 4
            assert tuple(dataset.metainfo['category_ids']) == (7, 3, 11, 5)
    assert cfg.test_evaluator.ann_file == str(small_set / 'annotations' / 'instances_val2017.json')
    check_data(cfg, ('train', 'val', 'test'))  # consistent: preflight agrees


def test_mmdet_standard_config_matches_data_root(tmp_path):
    """The documented ten-line config (inherits ours, sets metainfo and num_classes) passes preflight on data
    with those class names, builds, and configures the heads as --data-root does; a wrong name is caught."""
    from mmdet.registry import DATASETS, MODELS

    data = write_coco2017(
        tmp_path / 'my_coco', names=('ball', 'box', 'wedge'), ids=dict(ball=1, box=2, wedge=3), num_train=2, num_val=1
    )
    cfg = Config.fromfile(EXAMPLE_CONFIG)
    options = {f'{s}_dataloader.dataset.data_root': str(data) for s in ('train', 'val', 'test')}
    cfg.merge_from_dict(dict(options, **{'model.backbone.init_cfg': None}))
    check_data(cfg, ('train', 'val', 'test'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['classes'] == ('ball', 'box', 'wedge') and len(dataset) == 2
    labels = {int(i['bbox_label']) for k in range(len(dataset)) for i in dataset.get_data_info(k)['instances']}
    assert labels and labels <= {0, 1, 2}
    model = MODELS.build(cfg.model)
    assert model.roi_head.bbox_head.fc_cls.out_features == 4 and model.roi_head.mask_head.num_classes == 3
    by_root = Config.fromfile(str(REPO / 'configs' / 'mask_rcnn_maformer_t.py'))
    apply_coco_layout(by_root, read_coco_layout(str(data)))
    assert by_root.model.roi_head.bbox_head == cfg.model.roi_head.bbox_head
    assert by_root.model.roi_head.mask_head == cfg.model.roi_head.mask_head

    cfg.train_dataloader.dataset.metainfo = dict(classes=('box', 'ball', 'wedge'))
    with pytest.raises(
        ValueError,
        match=r'train annotation file .*instances_train2017.json lists the categories of the classes as ball, box, '
        r"wedge, and mmdet numbers the classes in that order .*: label 0 is category 'ball', which the config would "
        r"call 'box'. Write metainfo.classes in the order of the file, \('ball', 'box', 'wedge'\)",
    ):
        check_data(cfg, ('train',))
    cfg.train_dataloader.dataset.metainfo = dict(classes=('ball', 'box', 'cone'))
    with pytest.raises(
        ValueError,
        match=r'train annotation file .*instances_train2017.json has no category named '
        r"cone \(the config's metainfo.classes, 3 in all\); its categories are "
        r'ball, box, wedge',
    ):
        check_data(cfg, ('train',))
