"""The documented ten-line config for one's own segmentation data in mmseg's custom layout (classes, palette,
reduce_zero_label): preflight passes, the data set reads the labels as documented, and a training step of the
model it builds (N-class heads) gives a finite loss and gradients."""

import shutil

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.model import revert_sync_batchnorm
from mmengine.registry import init_default_scope

import maformer_mm  # noqa: F401
from maformer_mm.config.preflight import check_data
from maformer_mm.datasets.synthetic import ShapesSet
from tests.helpers import REPO, memoised_package_config_index

EXAMPLE = str(REPO / 'configs' / 'examples' / 'upernet_maformer_t_my_seg.py')
CLASSES = ('ball', 'box', 'wedge')


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    """mmengine re-reads mmdet's/mmseg's whole model index for every `mmdet::` base of every config it parses."""
    with memoised_package_config_index():
        yield


def _my_seg(root):
    """A generated set moved into mmseg's custom layout: img_dir/{train,val}, ann_dir/{train,val}."""
    ShapesSet(2, 1, (64, 64), classes=CLASSES).write_ade(str(root / 'gen'))
    for split, ade in (('train', 'training'), ('val', 'validation')):
        for kind, folder in (('img_dir', 'images'), ('ann_dir', 'annotations')):
            (root / 'my_seg' / kind).mkdir(parents=True, exist_ok=True)
            shutil.move(str(root / 'gen' / folder / ade), str(root / 'my_seg' / kind / split))
    return root / 'my_seg'


def test_custom_segmentation_config_reads_its_classes_and_trains(tmp_path):
    from mmseg.registry import DATASETS, MODELS

    data = _my_seg(tmp_path)
    cfg = Config.fromfile(EXAMPLE)
    cfg.merge_from_dict({f'{split}_dataloader.dataset.data_root': str(data) for split in ('train', 'val', 'test')})
    check_data(cfg, ('train', 'val', 'test'))
    init_default_scope('mmseg')
    # 64 px crops instead of 512: the real pipeline's resize and crop steps, reduced
    cfg.train_dataloader.dataset.pipeline[2].scale = (64, 64)
    cfg.train_dataloader.dataset.pipeline[3].crop_size = (64, 64)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['classes'] == CLASSES and len(dataset.metainfo['palette']) == 3
    assert dataset.reduce_zero_label and len(dataset) == 2
    batch = pseudo_collate([dataset[0], dataset[1]])
    labels = set().union(*(np.unique(s.gt_sem_seg.data.numpy()) for s in batch['data_samples']))
    assert labels <= {0, 1, 2, 255} and 255 in labels and len(labels) > 1  # PNG 0 (background) ignored, k+1 -> k

    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor.size = (64, 64)
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    assert model.decode_head.conv_seg.out_channels == model.auxiliary_head.conv_seg.out_channels == 3
    model.train()
    losses = model(**model.data_preprocessor(batch, True), mode='loss')
    loss = sum(v for k, v in losses.items() if k.endswith('loss_ce'))
    assert torch.isfinite(loss)
    loss.backward()
    assert model.decode_head.conv_seg.weight.grad.abs().sum() > 0


def test_a_label_value_beyond_the_classes_is_named_before_the_run(tmp_path):
    """Instead of `IndexError: Target 6 is out of bounds` inside the loss: the file and the value. With
    reduce_zero_label, PNG values 1..3 are the 3 classes and 0 and 255 are ignored."""
    from PIL import Image

    data = _my_seg(tmp_path)
    cfg = Config.fromfile(EXAMPLE)
    cfg.merge_from_dict({f'{split}_dataloader.dataset.data_root': str(data) for split in ('train', 'val', 'test')})
    label_map = sorted((data / 'ann_dir' / 'train').glob('*.png'))[1]
    labels = np.array(Image.open(label_map))
    labels[:2, :2], labels[-1, -1] = 255, 3  # ignored, and the last class: accepted
    Image.fromarray(labels).save(label_map)
    check_data(cfg, ('train', 'val'))
    labels[0, 0] = 7
    Image.fromarray(labels).save(label_map)
    with pytest.raises(
        ValueError,
        match=rf'train label maps under {data}/ann_dir/train hold values beyond the classes: 7 in 1 of the 2 files '
        rf'read \(e.g. {label_map}: 7\); with reduce_zero_label, 0 is ignored and values 1..3 are the 3 classes, and '
        '255 is ignored',
    ):
        check_data(cfg, ('train', 'val'))
