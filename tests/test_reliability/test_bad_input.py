"""Bad input gets a clear error naming the culprit; NaN losses stop training before a checkpoint."""

import json
from types import SimpleNamespace

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint  # reads mmengine checkpoints as data
from maformer_mm.config.preflight import check_coco_json, check_data
from maformer_mm.engine import BF16OptimWrapper, InvalidLossHook
from maformer_mm.layers import GLD, CrossAttention
from maformer_mm.models import MAFormer
from tests.helpers import MIN_ARCH, REPO, make_det_workspace, run_tool


@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp('bad')
    return root, make_det_workspace(root)


def _train_dataset(config):
    from mmdet.registry import DATASETS

    cfg = Config.fromfile(str(config))
    init_default_scope('mmdet')
    return DATASETS.build(cfg.train_dataloader.dataset)


def test_missing_image_file_is_named(workspace):
    root, config = workspace
    dataset = _train_dataset(config)
    path = root / 'data' / 'train' / '000001.png'
    data = path.read_bytes()
    path.unlink()
    try:
        with pytest.raises(FileNotFoundError, match='000001.png'):
            dataset[0]
    finally:
        path.write_bytes(data)


def test_corrupt_image_file_is_named(workspace):
    root, config = workspace
    dataset = _train_dataset(config)
    path = root / 'data' / 'train' / '000002.png'
    data = path.read_bytes()
    path.write_bytes(b'not an image at all')
    try:
        with pytest.raises(Exception, match='failed to load image: .*000002.png'):
            dataset[1]
    finally:
        path.write_bytes(data)


def test_annotation_file_missing_or_not_coco(tmp_path, workspace):
    with pytest.raises(FileNotFoundError, match='annotation file not found: .*missing.json'):
        check_coco_json(str(tmp_path / 'missing.json'))
    broken = tmp_path / 'broken.json'
    broken.write_text('{"images": [')
    with pytest.raises(ValueError, match='broken.json is not valid JSON'):
        check_coco_json(str(broken))
    listing = tmp_path / 'list.json'
    listing.write_text(json.dumps([{'file_name': 'a.jpg'}]))
    with pytest.raises(ValueError, match=r"list.json is not COCO JSON: it lacks the lists \['images'"):
        check_coco_json(str(listing))
    # and through the training tool, before anything runs
    root, config = workspace
    proc = run_tool(
        [
            REPO / 'tools' / 'train.py',
            config,
            '--work-dir',
            tmp_path / 'w',
            '--cfg-options',
            f'train_dataloader.dataset.ann_file={listing}',
        ],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0 and 'list.json is not COCO JSON' in proc.stderr


def test_num_classes_that_disagree_with_the_dataset(workspace):
    _, config = workspace
    cfg = Config.fromfile(str(config))
    check_data(cfg)  # consistent as shipped
    cfg.model.roi_head.bbox_head.num_classes = 80
    with pytest.raises(
        ValueError,
        match=r'model.roi_head.bbox_head.num_classes is 80 but the train dataset '
        r'\(CocoDataset\) has 3 classes \(circle, square, triangle\)',
    ):
        check_data(cfg)


@pytest.mark.parametrize(
    'hw, sizes', [((1, 1), [(1, 1)] * 4), ((2, 3), [(1, 1)] * 4), ((31, 5), [(8, 2), (4, 1), (2, 1), (1, 1)])]
)
def test_images_smaller_than_the_network_stride_work(hw, sizes):
    model = MAFormer(arch=MIN_ARCH, pretrain_img_size=64).eval()
    outs = model(torch.rand(1, 3, *hw))
    assert [tuple(o.shape) for o in outs] == [(1, 16 * 2**i, *size) for i, size in enumerate(sizes)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_invalid_loss_hook_stops_with_a_clear_message(tmp_path):
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_3.pth'))
    runner = SimpleNamespace(iter=41, work_dir=str(tmp_path))
    hook = InvalidLossHook()
    hook.after_train_iter(runner, 0, outputs={'loss': torch.tensor(1.5)})  # finite: nothing happens
    outputs = {
        'loss': torch.tensor(float('nan')),
        'loss_cls': torch.tensor(float('nan')),
        'loss_bbox': torch.tensor(0.3),
    }
    with pytest.raises(
        FloatingPointError,
        match=r'loss is nan at iteration 42 \(non-finite terms: loss_cls\).*'
        r'Last good checkpoint: .*epoch_3.pth',
    ):
        hook.after_train_iter(runner, 0, outputs=outputs)


def test_nan_loss_stops_training_without_writing_a_checkpoint(workspace, tmp_path):
    root, config = workspace
    good = tmp_path / 'good'
    run_tool([REPO / 'tools' / 'train.py', config, '--work-dir', good], cwd=tmp_path)
    checkpoint = load_mmengine_checkpoint(good / 'epoch_1.pth', map_location='cpu')
    checkpoint['state_dict']['backbone.patch_embed.projection.weight'][0, 0, 0, 0] = float('nan')
    poisoned = tmp_path / 'poisoned.pth'
    torch.save({'state_dict': checkpoint['state_dict']}, poisoned)
    work_dir = tmp_path / 'nan'
    proc = run_tool(
        [REPO / 'tools' / 'train.py', config, '--work-dir', work_dir, '--cfg-options', f'load_from={poisoned}'],
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert 'FloatingPointError: loss is nan at iteration 1' in proc.stderr
    assert not list(work_dir.glob('*.pth'))


def test_bf16_amp_training_keeps_gld_and_fusion_finite(workspace):
    """A few bf16 autocast training steps of the demo detector on CPU: no NaN in GLD or fusion outputs."""
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs

    _, config = workspace
    cfg = Config.fromfile(str(config))
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    seen = []

    def check(module, inputs, output):
        seen.append(output.dtype)
        assert torch.isfinite(output.float()).all(), type(module).__name__

    for module in model.backbone.modules():
        if isinstance(module, (GLD, CrossAttention)):
            module.register_forward_hook(check)
    optim = BF16OptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-4), scope='backbone')
    torch.manual_seed(0)
    for _ in range(3):
        data = demo_mm_inputs(2, [[3, 96, 96], [3, 80, 112]], num_items=[2, 1], num_classes=3, with_mask=True)
        losses = model.train_step(data, optim)
        assert torch.isfinite(sum(v for k, v in losses.items() if k.startswith('loss')))
    assert torch.bfloat16 in seen


def test_amp_flag_picks_bf16_on_cpu(workspace, tmp_path):
    root, config = workspace
    proc = run_tool(
        [REPO / 'tools' / 'train.py', config, '--work-dir', tmp_path / 'amp', '--amp', '--device', 'cpu'], cwd=tmp_path
    )  # --device cpu: on a GPU machine the default device is cuda (fp16 AMP)
    assert "type='BF16OptimWrapper'" in proc.stdout + proc.stderr
    assert (tmp_path / 'amp' / 'epoch_1.pth').is_file()
