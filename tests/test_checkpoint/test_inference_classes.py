"""A checkpoint trained with `--data-root` on 4 classes, given with a config for COCO's 80 (the config says 80:
`--data-root` set the count at training time only), infers with its own 4 classes through tools/infer.py and
DetInferencer, each detection named and given its category id; `--data-root` with other classes, and a checkpoint
that records no classes and does not fit, are refused naming both sides; a checkpoint that named its classes in
category-id order gets its names re-attached. Never a head of another shape loaded with a warning, and no spurious
warnings."""

import json
import logging
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

import maformer_mm  # noqa: F401
from maformer_mm.apis.inference import list_images
from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
from maformer_mm.tools import infer as infer_tool
from maformer_mm.tools import train as train_tool
from tests.helpers import REPO, memoised_package_config_index, run_tool, train_on_data_root_argv
from tests.test_det.test_data_root import IDS, NAMES, in_id_order, write_coco2017

# A child of the COCO config (80 classes, no metainfo) with a small backbone and narrow heads, at 64 px.
CHILD_CONFIG = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(arch=dict(_delete_=True, embed_dims=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8)),
                  pretrain_img_size=64, init_cfg=None),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=32),
    rpn_head=dict(in_channels=32, feat_channels=32),
    roi_head=dict(bbox_roi_extractor=dict(out_channels=32), bbox_head=dict(in_channels=32, fc_out_channels=64),
                  mask_roi_extractor=dict(out_channels=32), mask_head=dict(in_channels=32, conv_out_channels=32)),
    train_cfg=dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=32))))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True), dict(type='PackDetInputs')]))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=[
    dict(type='LoadImageFromFile'), dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))]))
"""


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    with memoised_package_config_index():
        yield


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """One iteration of two images through tools/train.py --data-root on a 4-class set."""
    root = tmp_path_factory.mktemp('own_classes')
    data = write_coco2017(root / 'data', num_train=2)
    config = root / 'child.py'
    config.write_text(CHILD_CONFIG.format(base=str(REPO / 'configs' / 'mask_rcnn_maformer_t.py')))
    train_tool.main(train_on_data_root_argv(config, data, root / 'work'))
    assert Config.fromfile(str(config)).model.roi_head.bbox_head.num_classes == 80
    return root, data, config, root / 'work' / 'epoch_1.pth'


def _labels(out_dir: Path) -> set:
    """The labels of every prediction file, each checked to carry the name and category id of its class."""
    labels = set()
    for path in (out_dir / 'preds').glob('*.json'):
        pred = json.loads(path.read_text())
        assert pred['label_names'] == [NAMES[k] for k in pred['labels']]
        assert pred['category_ids'] == [IDS[NAMES[k]] for k in pred['labels']]
        labels.update(pred['labels'])
    assert labels, f'no detections in {out_dir}'
    return labels


def test_tools_infer_builds_the_heads_the_checkpoint_was_trained_for(trained, tmp_path):
    """As a user runs it: the output names the change and carries neither mmengine's "function" registry
    fallback nor the visualiser's missing save_dir."""
    root, data, config, checkpoint = trained
    proc = run_tool(
        [
            REPO / 'tools' / 'infer.py',
            data / 'val2017',
            config,
            checkpoint,
            '--out-dir',
            tmp_path,
            '--device',
            'cpu',
            '--pred-score-thr',
            '0',
        ],
        cwd=root,
    )
    output = proc.stdout + proc.stderr
    assert (
        f"{checkpoint} was trained for 4 classes (ball, box, wedge, ring; its meta.dataset_meta), the config's "
        'heads for others (model.roi_head.bbox_head.num_classes = 80, model.roi_head.mask_head.num_classes = '
        '80): set model.roi_head.bbox_head.num_classes, model.roi_head.mask_head.num_classes to 4'
    ) in output
    assert f'wrote 2 images to {tmp_path}/vis and 2 predictions' in output
    assert 'registry tree' not in output and 'save_dir' not in output and 'size mismatch' not in output
    labels = _labels(tmp_path)
    assert labels and labels <= {0, 1, 2, 3}


def test_det_inferencer_gets_the_checkpoints_classes_and_all_its_weights(trained):
    from mmdet.apis import DetInferencer

    root, data, config, checkpoint = trained
    inferencer = DetInferencer(model=str(config), weights=str(checkpoint), device='cpu', show_progress=False)
    state = load_mmengine_checkpoint(checkpoint)['state_dict']
    own = inferencer.model.state_dict()
    assert own['roi_head.bbox_head.fc_cls.weight'].shape[0] == 5  # 4 classes and the background
    assert own['roi_head.mask_head.conv_logits.bias'].shape == (4,)
    assert all(torch.equal(own[k], v) for k, v in state.items())  # every tensor loaded, none left at init
    assert tuple(inferencer.model.dataset_meta['classes']) == NAMES
    predictions = inferencer(list_images(str(data / 'val2017')), pred_score_thr=0.0)['predictions']
    assert len(predictions) == 2 and all(set(p['labels']) <= {0, 1, 2, 3} for p in predictions)
    assert any(p['labels'] for p in predictions)


def test_data_root_names_the_classes_and_other_classes_are_refused(trained, tmp_path):
    root, data, config, checkpoint = trained
    images = str(data / 'val2017')
    infer_tool.infer(images, str(config), str(checkpoint), str(tmp_path / 'same'), 0.0, 'cpu', data_root=str(data))
    assert _labels(tmp_path / 'same') <= {0, 1, 2, 3}
    other = write_coco2017(
        tmp_path / 'other', names=('ball', 'box', 'wedge'), ids=dict(ball=1, box=2, wedge=3), num_train=1, num_val=1
    )
    with pytest.raises(
        ValueError,
        match=rf'{checkpoint} was trained with other classes: 4 \(ball, box, wedge, ring\); '
        rf'--data-root {other} has 3 \(ball, box, wedge\)',
    ):
        infer_tool.infer(
            images, str(config), str(checkpoint), str(tmp_path / 'other_out'), device='cpu', data_root=str(other)
        )


def test_a_checkpoint_without_classes_that_does_not_fit_is_refused_naming_both(trained, tmp_path):
    """No meta.dataset_meta: nothing says which classes the 4-class heads are for, so the 80-class config's model
    is not loaded with the heads left random; `--data-root` names them."""
    from mmdet.apis import DetInferencer

    root, data, config, checkpoint = trained
    bare = tmp_path / 'weights_only.pth'
    torch.save({'state_dict': load_mmengine_checkpoint(checkpoint)['state_dict']}, bare)
    with pytest.raises(
        ValueError,
        match=rf'checkpoint {bare} does not fit the model built for {config}: '
        r'roi_head.bbox_head.fc_cls.weight is \(5, 64\) in the checkpoint, '
        r'\(81, 64\) here.*The checkpoint records no classes \(no '
        r'meta.dataset_meta\); the config has model.roi_head.bbox_head.num_classes '
        r'= 80.* and 80 classes \(person, '
        r'bicycle.*nothing was loaded',
    ):
        DetInferencer(model=str(config), weights=str(bare), device='cpu')
    infer_tool.infer(
        str(data / 'val2017'), str(config), str(bare), str(tmp_path / 'out'), 0.0, 'cpu', data_root=str(data)
    )
    assert _labels(tmp_path / 'out') <= {0, 1, 2, 3}


def test_a_checkpoint_naming_its_classes_in_id_order_gets_them_reattached_from_the_data(trained, tmp_path):
    """Recorded in category-id order by an older maformer_mm while mmdet trained the labels in the JSON's list order:
    with --data-root the predictions are named in the list order (and the pictures too), with a warning saying so.
    A training run's work dir stands for its last checkpoint."""
    root, data, config, checkpoint = trained
    from mmengine.logging import MMLogger

    old = in_id_order(checkpoint, tmp_path / 'old.pth')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        infer_tool.infer(
            str(data / 'val2017'), str(config), str(old), str(tmp_path / 'out'), 0.0, 'cpu', data_root=str(data)
        )
    finally:
        logger.removeHandler(handler)
    labels = _labels(tmp_path / 'out')  # named ball, box, wedge, ring: the list order
    assert labels and labels <= {0, 1, 2, 3}
    assert any(
        f'named here as --data-root {data} lists them: ball, box, wedge, ring' in r.getMessage() for r in records
    )
    images = str(data / 'val2017')
    written = infer_tool.infer(images, str(config), str(root / 'work'), str(tmp_path / 'dir'), 0.0, 'cpu')
    assert len(written.preds) == 2 and _labels(tmp_path / 'dir') == labels
    # without --data-root, from a config that names the data (the mmdet way): the same names
    own = tmp_path / 'own_data.py'
    own.write_text(
        f'_base_ = [{str(config)!r}]\ntest_dataloader = dict(dataset=dict(data_root={str(data)!r}, '
        "ann_file='annotations/instances_val2017.json', data_prefix=dict(img='val2017/'), "
        f'metainfo=dict(classes={NAMES!r})))\n'
    )
    infer_tool.infer(images, str(own), str(old), str(tmp_path / 'config'), 0.0, 'cpu')
    assert _labels(tmp_path / 'config') == labels
    # mmdet's DetInferencer used directly with that config renames them too (maformer_mm's `_init_model`)
    from mmdet.apis import DetInferencer

    before = load_mmengine_checkpoint(old)['meta']['dataset_meta']['classes']
    inferencer = DetInferencer(model=str(own), weights=str(old), device='cpu', show_progress=False)
    assert tuple(inferencer.model.dataset_meta['classes']) == tuple(NAMES) != tuple(before)
