"""The query-head benchmarks compare like with like: in the training comparison the two backbones get the same head,
data, schedule and seed; the complexity table's published numbers are the installed metafiles'; the dense-cost
Swin-T DINO is mmdet's DINO with mmdet's Swin-T backbone. Nothing here is timed."""

import pytest

import maformer_mm  # noqa: F401
from benchmarks import dense_cost, query_heads_complexity, query_heads_training


def _without_backbone(model: dict, widths_key: str) -> dict:
    model = {k: v for k, v in model.items() if k != 'backbone'}
    part = dict(model[widths_key])
    part.pop('in_channels')
    return dict(model, **{widths_key: part})


@pytest.mark.parametrize(
    'task, builder, widths_key',
    [
        ('dino', query_heads_training.dino_config, 'neck'),
        ('mask2former', query_heads_training.mask2former_config, 'decode_head'),
    ],
)
def test_training_comparison_changes_only_the_backbone(tmp_path, task, builder, widths_key):
    ours, swin = (builder(b, str(tmp_path / 'data'), 300, str(tmp_path / b), 0) for b in ('MAFormer-T', 'Swin-T'))
    assert ours.model.backbone.type == 'MAFormer' and swin.model.backbone.type == 'SwinTransformer'
    assert ours.model.backbone.pretrain_img_size == query_heads_training.SIZE and ours.model.backbone.init_cfg is None
    assert _without_backbone(ours.model, widths_key) == _without_backbone(swin.model, widths_key)
    for key in ('train_dataloader', 'val_dataloader', 'optim_wrapper', 'param_scheduler', 'train_cfg', 'randomness'):
        assert ours[key] == swin[key], key
    assert ours.train_cfg.max_iters == 300 and ours.randomness.seed == 0
    head = ours.model.get('bbox_head') or ours.model.decode_head
    assert head.num_classes == len(query_heads_training.CLASSES)  # the generated sets' 3 classes
    assert ours.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 1.0  # no pretrained weights to protect


def test_published_numbers_come_from_the_installed_metafiles():
    published = query_heads_complexity.published
    assert published('mmdet::dino/dino-5scale_swin-l_8xb2-12e_coco.py') == {'box AP': 57.2}
    assert published('mmdet::dino/dino-5scale_swin-l_8xb2-36e_coco.py') == {'box AP': 58.4}
    assert published('mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py') == {'mIoU': 48.66}
    assert published('mmdet::mask2former/mask2former_swin-s-p4-w7-224_8xb2-lsj-50e_coco-panoptic.py')['PQ'] == 54.5
    assert published('configs/dino_4scale_maformer_t_12e.py') == {}


def test_dense_cost_swin_t_dino_is_mmdets_dino_with_its_swin_t():
    from mmdet.models.backbones import SwinTransformer

    from maformer_mm.config.zoo import load_config

    scope, hw, configs = dense_cost.TASKS['dino']
    assert (scope, hw) == ('mmdet', (800, 1333))
    model = dense_cost.build(configs['DINO-4scale Swin-T'], scope)
    assert isinstance(model.backbone, SwinTransformer) and len(model.backbone.stages[2].blocks) == 6
    assert [c.conv.in_channels for c in model.neck.convs] == [192, 384, 768]
    reference = load_config(configs['DINO-4scale Swin-T'])
    assert model.num_queries == reference.model.num_queries == 900 and model.num_feature_levels == 4
