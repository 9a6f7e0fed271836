"""The window-mode dense configs: same model as their global parent except stage-3 attention, which
uses 14x14 windows in all blocks but a few evenly spaced global ones (the last block among them)."""

from pathlib import Path

import pytest
from mmengine.config import Config

from maformer_mm.models import MAFormer

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
WINDOW_CONFIGS = sorted(CONFIG_DIR.glob('*_win*.py'))


def test_every_dense_config_has_a_window_variant():
    names = {p.stem for p in WINDOW_CONFIGS}
    assert names == {f'mask_rcnn_maformer_{s}_win' for s in 'tsb'} | {
        f'upernet_maformer_{s}_win_512x512_160k_ade20k' for s in 'tsb'
    }


@pytest.mark.parametrize('path', WINDOW_CONFIGS, ids=lambda p: p.stem)
def test_window_config_differs_from_its_parent_only_in_stage3_windows(path):
    cfg = Config.fromfile(str(path))
    parent = Config.fromfile(str(path.with_name(path.name.replace('_win', ''))))
    backbone = dict(cfg.model.backbone)
    assert backbone.pop('vit_window_size') == 14 and parent.model.backbone.vit_window_size == 0
    global_blocks = backbone.pop('vit_global_blocks')
    assert backbone == {k: v for k, v in parent.model.backbone.items() if k != 'vit_window_size'}
    assert {k: v for k, v in cfg.model.items() if k != 'backbone'} == {
        k: v for k, v in parent.model.items() if k != 'backbone'
    }
    depth = MAFormer.arch_zoo[backbone['arch']]['depths'][2]
    assert global_blocks[-1] == depth - 1 and len(global_blocks) in (3, 4)
    model = MAFormer(**{k: v for k, v in cfg.model.backbone.items() if k not in ('type', 'init_cfg')})
    windows = [block.window_size for block in model.stages[2].blocks]
    assert [j for j, w in enumerate(windows) if w == 0] == list(global_blocks)
    assert set(windows) == {0, 14}
    assert all(block.window_size == 0 for block in model.stages[3].blocks)
