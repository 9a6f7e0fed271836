"""Classification fine-tuning for one's own classes: the preflight check names both settings when only the
head's num_classes was changed (Mixup/CutMix targets come from data_preprocessor.num_classes, and the loss
then fails on (4, 3) scores against (4, 1000) targets), and the documented fine-tuning config passes it: its
Mixup/CutMix training step on an image-folder set gives a finite loss."""

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from PIL import Image

import maformer_mm  # noqa: F401
from maformer_mm.config.preflight import check_data
from tests.helpers import REPO, memoised_package_config_index

EXAMPLE = str(REPO / 'configs' / 'examples' / 'maformer_t_finetune_my_cls.py')
CLASSES = ('ball', 'box', 'wedge')


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    """mmengine re-reads mmdet's/mmseg's whole model index for every `mmdet::` base of every config it parses."""
    with memoised_package_config_index():
        yield


def test_head_only_change_is_caught_naming_both_settings(tmp_path):
    naive = tmp_path / 'naive.py'  # own data and head, data_preprocessor left at ImageNet's 1000 classes
    naive.write_text(
        f'_base_ = [{str(REPO / "configs" / "maformer_t_in1k.py")!r}]\n'
        'model = dict(head=dict(num_classes=3))\n'
        "train_dataloader = dict(dataset=dict(_delete_=True, type='CustomDataset', data_root='my_cls',\n"
        "                                     data_prefix='train', pipeline=[]))\n"
    )
    with pytest.raises(
        ValueError,
        match=r'data_preprocessor.num_classes is 1000 but model.head.num_classes is 3: '
        r'Mixup/CutMix .* set data_preprocessor.num_classes = 3',
    ):
        check_data(Config.fromfile(str(naive)), ('train',))
    cfg = Config.fromfile(str(naive))
    cfg.model.data_preprocessor = dict(type='ClsDataPreprocessor', num_classes=10)  # the model's own wins
    with pytest.raises(ValueError, match='model.data_preprocessor.num_classes is 10 but model.head.num_classes is 3'):
        check_data(cfg, ('train',))


def test_finetuning_config_trains_on_own_classes(tmp_path):
    from mmpretrain.registry import DATASETS, MODELS

    rng = np.random.default_rng(0)
    for i in range(4):
        folder = tmp_path / 'my_cls' / 'train' / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(folder / f'{i}.jpg')
    cfg = Config.fromfile(EXAMPLE)
    cfg.train_dataloader.dataset.data_root = str(tmp_path / 'my_cls')
    check_data(cfg, ('train',))
    init_default_scope('mmpretrain')
    cfg.train_dataloader.dataset.pipeline[1].scale = 64  # RandomResizedCrop to 64 instead of 224
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    assert dataset.metainfo['classes'] == CLASSES and len(dataset) == 4
    cfg.model.backbone.init_cfg = None
    cfg.model.data_preprocessor = dict(cfg.data_preprocessor, type='ClsDataPreprocessor')  # as the Runner does
    model = MODELS.build(cfg.model).train()
    data = model.data_preprocessor(pseudo_collate([dataset[i] for i in range(4)]), True)
    assert data['data_samples'][0].gt_score.shape == (3,)  # Mixup/CutMix one-hot targets over the 3 classes
    losses = model(**data, mode='loss')
    assert torch.isfinite(losses['loss'])
    losses['loss'].backward()
    assert model.head.fc.weight.grad.shape == (3, 512) and model.head.fc.weight.grad.abs().sum() > 0
