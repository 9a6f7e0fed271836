"""The three OpenMMLab inferencers with checkpoints that carry crafted config texts: nothing runs, the weights
load when a config is given (a file, a Config or one of our configs by name), and without one the inferencer
refuses, saying what to pass; a saved config is never built.

Small models of our det, seg and cls configs (a 16-channel MAFormer), untrained, saved as mmengine does (weights
and `meta.dataset_meta`) plus a crafted text wherever mmengine reads a saved config.
"""

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import maformer_mm  # noqa: F401
from tests.helpers import DEMO_DET_CONFIG, REPO, memoised_package_config_index
from tests.test_security.crafted import config_template, system_config, with_config_texts

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
    """kind -> (config, weights, {where: crafted checkpoint}), and the marker: for each place mmengine's inferencers
    read a saved config (message_hub.runtime_info.cfg first, then meta.cfg), a checkpoint with the os.system config
    there, and one with the template everywhere."""
    root = tmp_path_factory.mktemp('inferencers')
    marker = root / 'payload_ran'
    out = {}
    for kind in ('det', 'seg', 'cls'):
        cfg = _tiny(kind)
        weights = _build(cfg).state_dict()
        meta = {'epoch': 1, 'iter': 1, 'dataset_meta': {'classes': CLASSES}}
        crafted = {
            'meta': {'meta': dict(meta, cfg=system_config(marker)), 'state_dict': weights},
            'message_hub': {
                'meta': meta,
                'state_dict': weights,
                'message_hub': {'runtime_info': {'cfg': system_config(marker)}},
            },
            'template': with_config_texts({'meta': meta, 'state_dict': weights}, config_template(marker)),
        }
        paths = {}
        for where, checkpoint in crafted.items():
            paths[where] = root / f'{kind}_{where}.pth'
            torch.save(checkpoint, paths[where])
        out[kind] = (cfg, weights, paths)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(root / 'img.jpg')
    return out, marker, str(root / 'img.jpg')


def _equal_weights(model, weights) -> bool:
    own = model.state_dict()
    return all(torch.equal(own[k], v) for k, v in weights.items())


@pytest.mark.parametrize('where', ['meta', 'message_hub', 'template'])
@pytest.mark.parametrize('kind', ['det', 'seg'])
def test_mmengine_inferencers_never_build_a_saved_config(saved, kind, where):
    """Without a config mmengine would build the saved one (and run os.system): refused, naming what to pass. With
    the config, the same file loads its weights and predicts; nothing ran."""
    from mmdet.apis import DetInferencer
    from mmseg.apis import MMSegInferencer

    files, marker, image = saved
    cfg, weights, crafted = files[kind]
    inferencer_type = DetInferencer if kind == 'det' else MMSegInferencer
    with pytest.raises(
        ValueError,
        match=rf'{crafted[where]} was given without a config. maformer_mm never builds the config a checkpoint '
        r"carries.*Pass the config it was trained with.*model='mask_rcnn_maformer_t'",
    ):
        inferencer_type(model=None, weights=str(crafted[where]), device='cpu')
    assert not marker.exists()
    inferencer = inferencer_type(model=cfg, weights=str(crafted[where]), device='cpu')
    assert _equal_weights(inferencer.model, weights)
    assert tuple(inferencer.model.dataset_meta['classes']) == CLASSES
    prediction = inferencer(image)['predictions']  # det: a list of one; seg: the label map itself
    if kind == 'det':
        prediction = prediction[0]
        assert set(prediction['labels']) <= {0, 1, 2} and len(prediction['labels']) == len(prediction['bboxes'])
    else:
        assert prediction.shape == (64, 64) and set(np.unique(prediction)) <= {0, 1, 2}
    assert not marker.exists()


def test_det_inferencer_takes_one_of_our_configs_by_name(tmp_path):
    """`DetInferencer(model='mask_rcnn_maformer_t_demo', weights=CKPT)`: the shipped config, chosen by name, with
    the checkpoint's weights; a name that is neither ours nor mmdet's is mmdet's own error."""
    from mmdet.apis import DetInferencer

    cfg = Config.fromfile(str(DEMO_DET_CONFIG))
    weights = _build(cfg).state_dict()
    path = tmp_path / 'demo.pth'
    torch.save(
        {
            'meta': {'dataset_meta': {'classes': cfg.train_dataloader.dataset.metainfo['classes']}},
            'state_dict': weights,
        },
        path,
    )
    inferencer = DetInferencer(model='mask_rcnn_maformer_t_demo', weights=str(path), device='cpu', show_progress=False)
    assert _equal_weights(inferencer.model, weights)
    with pytest.raises(ValueError, match='Cannot find model: no_such_model'):
        DetInferencer(model='no_such_model', weights=str(path), device='cpu')


def test_image_classification_inferencer_loads_a_templated_checkpoint_without_running_it(saved):
    """mmpretrain's inferencer needs a config and never reads the saved one; its load goes through the loader."""
    from mmpretrain.apis import ImageClassificationInferencer

    files, marker, image = saved
    cfg, weights, crafted = files['cls']
    inferencer = ImageClassificationInferencer(model=cfg, pretrained=str(crafted['template']), device='cpu')
    assert _equal_weights(inferencer.model, weights)
    result = inferencer(image)[0]
    assert result['pred_class'] in CLASSES and len(result['pred_scores']) == 3
    assert not marker.exists()
