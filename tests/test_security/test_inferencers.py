"""The three OpenMMLab inferencers with checkpoints that carry the crafted config text: nothing runs, the weights
load when a config is given, and without one the saved config is used only when it is plain data.

Small models of our det, seg and cls configs (a 16-channel MAFormer), untrained, saved as mmengine does (weights
and `meta.dataset_meta`) plus the crafted text wherever mmengine parses a saved config.
"""

import json

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import maformer_mm  # noqa: F401
from tests.helpers import DEMO_DET_CONFIG, REPO, memoised_package_config_index
from tests.test_security.crafted import config_template, with_config_texts

TINY = dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4))
CLASSES = ('circle', 'square', 'triangle')


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    with memoised_package_config_index():
        yield


def _tiny(kind: str) -> Config:
    """Our demo configs (det, seg) and the classification example, with a 16-channel backbone."""
    path = {
        'det': DEMO_DET_CONFIG,
        'seg': REPO / 'configs' / 'upernet_maformer_t_demo.py',
        'cls': REPO / 'configs' / 'examples' / 'maformer_t_finetune_my_cls.py',
    }[kind]
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.arch = dict(TINY)
    cfg.model.backbone.init_cfg = None
    if kind == 'det':
        cfg.model.neck.in_channels = [16, 32, 64, 128]
    elif kind == 'seg':
        cfg.model.decode_head.in_channels = [16, 32, 64, 128]
        cfg.model.auxiliary_head.in_channels = 64
    else:
        cfg.model.head.in_channels = 128
    return cfg


def _build(cfg: Config):
    from mmengine.registry import MODELS, init_default_scope

    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """kind -> (config, weights, crafted checkpoint path, checkpoint with its own saved config), and the marker."""
    root = tmp_path_factory.mktemp('inferencers')
    marker = root / 'payload_ran'
    out = {}
    for kind in ('det', 'seg', 'cls'):
        cfg = _tiny(kind)
        weights = _build(cfg).state_dict()
        checkpoint = {'meta': {'epoch': 1, 'iter': 1, 'dataset_meta': {'classes': CLASSES}}, 'state_dict': weights}
        crafted = root / f'{kind}_crafted.pth'
        torch.save(with_config_texts(checkpoint, config_template(marker)), crafted)
        own = root / f'{kind}_own_config.pth'
        torch.save(with_config_texts(checkpoint, cfg.pretty_text), own)
        out[kind] = (cfg, weights, crafted, own)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / 'img.jpg')
    return out, marker, str(root / 'img.jpg')


def _equal_weights(model, weights) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in weights.items())


@pytest.mark.parametrize('kind', ['det', 'seg'])
def test_mmengine_inferencers_refuse_a_templated_saved_config_and_load_with_a_config(saved, kind):
    from mmdet.apis import DetInferencer
    from mmseg.apis import MMSegInferencer

    files, marker, image = saved
    cfg, weights, crafted, _ = files[kind]
    inferencer_type = DetInferencer if kind == 'det' else MMSegInferencer
    with pytest.raises(
        ValueError,
        match=rf'{crafted}: its saved config \(message_hub.runtime_info.cfg\) was not '
        r'used: line 1 holds template syntax.*Give the config file',
    ):
        inferencer_type(model=None, weights=str(crafted), device='cpu')  # no config: mmengine takes the saved one
    inferencer = inferencer_type(model=cfg, weights=str(crafted), device='cpu')
    assert _equal_weights(inferencer.model, weights)
    assert tuple(inferencer.model.dataset_meta['classes']) == CLASSES
    prediction = inferencer(image)['predictions']  # det: a list of one; seg: the label map itself
    if kind == 'det':
        prediction = prediction[0]
        assert set(prediction['labels']) <= {0, 1, 2} and len(prediction['labels']) == len(prediction['bboxes'])
    else:
        assert prediction.shape == (64, 64) and set(np.unique(prediction)) <= {0, 1, 2}
    assert not marker.exists()


def test_det_inferencer_builds_from_a_saved_config_that_is_data(saved, tmp_path):
    """mmengine's Runner saves `cfg.pretty_text`: plain data, read here without mmengine parsing it."""
    from mmdet.apis import DetInferencer

    files, marker, image = saved
    _, weights, _, own = files['det']
    inferencer = DetInferencer(weights=str(own), device='cpu', show_progress=False)
    assert _equal_weights(inferencer.model, weights)
    inferencer(image, out_dir=str(tmp_path), pred_score_thr=0.0, no_save_pred=False)
    pred = json.loads(next((tmp_path / 'preds').glob('*.json')).read_text())
    assert set(pred['labels']) <= {0, 1, 2} and len(pred['labels']) == len(pred['bboxes'])
    assert not marker.exists()


def test_image_classification_inferencer_loads_a_templated_checkpoint_without_running_it(saved):
    """mmpretrain's inferencer needs a config and never reads the saved one; its load goes through the loader."""
    from mmpretrain.apis import ImageClassificationInferencer

    files, marker, image = saved
    cfg, weights, crafted, _ = files['cls']
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=str(crafted), device='cpu')
    assert _equal_weights(inferencer.model, weights)
    result = inferencer(image)[0]
    assert result['pred_class'] in CLASSES and len(result['pred_scores']) == 3
    assert not marker.exists()
