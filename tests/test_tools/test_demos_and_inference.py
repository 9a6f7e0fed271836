"""`make demo` and `make demo-seg` through their entry points at the smallest size that still trains; what they
leave behind feeds tools/test.py --out DIR (segmentation PNGs), tools/infer.py (batches, JSON predictions,
classification) and OpenMMLab's own inferencers (DetInferencer, MMSegInferencer, ImageClassificationInferencer)
run on our configs in a fresh process, where only the configs' custom_imports can register MAFormer."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import maformer_mm  # noqa: F401
from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
from maformer_mm.tools import demo, demo_seg, infer
from tests.helpers import REPO, memoised_package_config_index, run_tool

CLS_CONFIG = REPO / 'configs' / 'examples' / 'maformer_t_finetune_my_cls.py'
CLS_CLASSES = ('ball', 'box', 'wedge')
# One training iteration: 2 images (det, batch 2), 1 iteration (seg); 2 validation images of 64 px.
SMALLEST = ['--num-train', '2', '--num-val', '2', '--image-size', '64', '--num-vis', '2', '--device', 'cpu']


@pytest.fixture(scope='module', autouse=True)
def _package_config_index_read_once():
    """mmengine re-reads mmdet's/mmseg's whole model index for every `mmdet::` base of every config it parses."""
    with memoised_package_config_index():
        yield


@pytest.fixture(scope='module')
def det_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('det_demo')
    result = demo.main(
        ['--work-dir', str(root / 'work'), '--data-root', str(root / 'data'), '--epochs', '1', *SMALLEST]
    )
    return root, result


@pytest.fixture(scope='module')
def seg_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp('seg_demo')
    result = demo_seg.main(
        ['--work-dir', str(root / 'work'), '--data-root', str(root / 'data'), '--iters', '1', *SMALLEST]
    )
    return root, result


def _checkpoint_classes(path: str) -> tuple:
    return tuple(load_mmengine_checkpoint(path, 'cpu')['meta']['dataset_meta']['classes'])


def test_det_demo_trains_evaluates_draws_and_saves_json(det_demo):
    root, result = det_demo
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'coco/segm_mAP_50'):
        assert 0 <= result.metrics[key] <= 1, key
    assert Path(result.checkpoint) == root / 'work' / 'epoch_1.pth'
    assert _checkpoint_classes(result.checkpoint) == ('circle', 'square', 'triangle')
    assert [Path(p).name for p in result.vis] == ['000001.png', '000002.png']
    assert Image.open(result.vis[0]).size == (64, 64)
    assert [Path(p).name for p in result.preds] == ['000001.json', '000002.json']
    pred = json.loads(Path(result.preds[0]).read_text())  # mmdet's format
    assert len(pred['labels']) == len(pred['scores']) == len(pred['bboxes']) == len(pred['masks']) > 0
    assert set(pred['labels']) <= {0, 1, 2} and all(0 <= s <= 1 for s in pred['scores'])
    assert all(len(b) == 4 and b[0] <= b[2] and b[1] <= b[3] for b in pred['bboxes'])
    assert pred['masks'][0]['size'] == [64, 64] and isinstance(pred['masks'][0]['counts'], str)  # COCO RLE
    assert json.loads((root / 'data' / 'demo_data.json').read_text())['size'] == [64, 64]


def test_the_demo_gives_the_same_numbers_with_the_same_seed(det_demo, tmp_path):
    """A second run of the same demo (seed 0, the default; deterministic kernels on the CPU): the same weights and
    the same metrics, bit for bit; and the process's deterministic mode is as it was."""
    import torch

    root, first = det_demo
    before = torch.are_deterministic_algorithms_enabled()
    second = demo.main(
        ['--work-dir', str(tmp_path / 'work'), '--data-root', str(root / 'data'), '--epochs', '1', *SMALLEST]
    )
    assert torch.are_deterministic_algorithms_enabled() == before
    assert second.metrics == first.metrics
    weights = [load_mmengine_checkpoint(r.checkpoint, 'cpu')['state_dict'] for r in (first, second)]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(v, weights[1][k]) for k, v in weights[0].items())


def test_infer_takes_the_config_by_name(det_demo, tmp_path):
    """`maformer-infer IMAGE mask_rcnn_maformer_t_demo CKPT`: the shipped config by its name (issue 28)."""
    root, result = det_demo
    image = str(root / 'data' / 'val' / '000001.png')
    written = infer.main([image, 'mask_rcnn_maformer_t_demo', result.checkpoint, '--out-dir', str(tmp_path)])
    assert [Path(p).name for p in written.vis] == ['000001.png'] and len(written.preds) == 1


def test_demo_keeps_a_set_made_with_other_settings(det_demo):
    root, _ = det_demo
    before = sorted(p.name for p in (root / 'data' / 'train').iterdir())
    with pytest.raises(ValueError, match=r"data holds a demo set generated with .*'train': 2.*, not .*'train': 8"):
        demo.main(
            [
                '--work-dir',
                str(root / 'work2'),
                '--data-root',
                str(root / 'data'),
                '--num-train',
                '8',
                '--num-val',
                '2',
                '--image-size',
                '64',
                '--device',
                'cpu',
            ]
        )
    assert sorted(p.name for p in (root / 'data' / 'train').iterdir()) == before


def test_seg_demo_trains_evaluates_draws_and_writes_label_maps(seg_demo):
    """Its tools/test.py step runs with --out DIR, which writes one PNG per test image as mmseg's tool does:
    named after the image, at its size, holding label values shifted back by one (reduce_zero_label)."""
    root, result = seg_demo
    for key in ('aAcc', 'mIoU', 'mAcc'):
        assert 0 <= result.metrics[key] <= 100, key
    assert Path(result.checkpoint) == root / 'work' / 'iter_1.pth'
    assert _checkpoint_classes(result.checkpoint) == ('circle', 'square', 'triangle')
    assert len(result.vis) == 2 and Image.open(result.vis[0]).size == (64, 64)
    images = sorted((root / 'data' / 'images' / 'validation').glob('*.jpg'))
    # tools/infer.py's label maps: named and valued as tools/test.py --out writes them (class k is k + 1)
    assert [Path(p).stem for p in result.preds] == [p.stem for p in images]
    assert set(np.unique(np.asarray(Image.open(result.preds[0])))) <= {1, 2, 3}
    pngs = sorted((root / 'work' / 'label_maps').glob('*.png'))
    assert [p.stem for p in pngs] == [p.stem for p in images]
    labels = np.asarray(Image.open(pngs[0]))
    assert labels.shape == (64, 64) and set(np.unique(labels)) <= {1, 2, 3}


def _scalars(work_dir: Path):
    """(training (step, loss) points, validation records) of the run's LocalVisBackend log."""
    records = [
        json.loads(line)
        for path in sorted(work_dir.glob('*/vis_data/scalars.json'))
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    return ([(r['step'], r['loss']) for r in records if 'loss' in r], [r for r in records if 'loss' not in r])


@pytest.mark.parametrize('which, metric', [('det', 'coco/bbox_mAP'), ('seg', 'mIoU')])
def test_demos_draw_every_validation_image_large_with_its_ground_truth(which, metric, det_demo, seg_demo):
    root, result = det_demo if which == 'det' else seg_demo
    pattern = 'val/*.png' if which == 'det' else 'images/validation/*.jpg'
    images = sorted((root / 'data').glob(pattern))
    assert [Path(p).stem for p in result.pictures] == [p.stem for p in images]
    for path in result.pictures:
        width, height = Image.open(path).size
        # two 64 px panels enlarged 8x side by side, a title row above and a legend row below
        assert width == 2 * 512 and height > 512, (width, height)
        picture = np.asarray(Image.open(path).convert('RGB'))
        assert picture[:, :512].std() > 0 and picture[:, 512:].std() > 0  # both panels drawn


def test_seg_pictures_draw_the_prediction_only_where_the_ground_truth_has_a_class(seg_demo):
    """Label 0 is ignored in training and scoring, so the model's class there is noise: on those pixels both
    panels show the same darkened image; elsewhere the prediction is drawn."""
    root, result = seg_demo
    for path in result.pictures:
        picture = np.asarray(Image.open(path).convert('RGB')).astype(int)
        label = np.asarray(Image.open(root / 'data' / 'annotations' / 'validation' / (Path(path).stem + '.png')))
        unlabelled = np.kron(label == 0, np.ones((8, 8), dtype=bool))  # enlarged 8x as the panels
        top = max(28, min(48, 512 // 12))  # the title row
        truth, prediction = picture[top : top + 512, :512], picture[top : top + 512, 512:]
        same = (np.abs(truth - prediction).max(axis=-1) <= 2)[unlabelled].mean()
        assert unlabelled.any() and same > 0.9, same  # class names drawn on the panels may cover a few pixels


@pytest.mark.parametrize('which, metric', [('det', 'coco/bbox_mAP'), ('seg', 'mIoU')])
def test_demos_draw_the_training_curve_of_their_logged_points(which, metric, det_demo, seg_demo):
    from maformer_mm.visualization.curves import read_curve

    root, result = det_demo if which == 'det' else seg_demo
    assert result.curve == str(root / 'work' / 'curve.png')
    width, height = Image.open(result.curve).size
    assert (width, height) == (800, 450)
    losses, validations = _scalars(root / 'work')
    curve = read_curve(str(root / 'work'))
    assert curve.loss == [(step, pytest.approx(loss)) for step, loss in losses] and len(losses) == 1
    assert curve.metric_name == metric and len(curve.metric) == 1
    assert curve.metric[0][1] == pytest.approx(validations[0][metric])
    assert curve.metric[0][0] == losses[-1][0]  # placed at the last iteration of the validated epoch


@pytest.fixture(scope='module')
def cls_checkpoint(tmp_path_factory):
    """Weights (untrained) of the classification fine-tuning example, with the classes in the meta data."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    cfg = Config.fromfile(str(CLS_CONFIG))
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    path = tmp_path_factory.mktemp('cls') / 'cls.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {'dataset_meta': {'classes': CLS_CLASSES}}}, path)
    return path


def _images(folder: Path, count: int, size=(72, 56)) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f'img{i}.jpg')
    return folder


INFERENCERS = """
import functools, json, sys
import mmengine.config.utils as config_utils
# as tests.helpers.memoised_package_config_index
config_utils.load = functools.lru_cache(maxsize=None)(config_utils.load)
assert 'maformer_mm' not in sys.modules
det_config, det_ckpt, seg_config, seg_ckpt, cls_config, cls_ckpt, images, out = sys.argv[1:]
from mmdet.apis import DetInferencer
det = DetInferencer(model=det_config, weights=det_ckpt, device='cpu', show_progress=False)
d = det(images, batch_size=2, out_dir=out + '/det', pred_score_thr=0.0)['predictions']
from mmseg.apis import MMSegInferencer
seg = MMSegInferencer(model=seg_config, weights=seg_ckpt, device='cpu')
s = seg(images, batch_size=2, out_dir=out + '/seg')['predictions']
from mmpretrain.apis import ImageClassificationInferencer
cls = ImageClassificationInferencer(model=cls_config, pretrained=cls_ckpt, device='cpu')
c = cls(images, batch_size=2)
print(json.dumps(dict(
    registered='maformer_mm' in sys.modules, det=[dict(labels=p['labels'], n=len(p['bboxes'])) for p in d],
    det_classes=list(det.model.dataset_meta['classes']), seg=[list(p.shape) for p in s],
    seg_values=sorted({int(v) for p in s for v in set(p.flatten().tolist())}),
    cls=[dict(label=int(p['pred_label']), name=p['pred_class'], scores=len(p['pred_scores'])) for p in c])))
"""


def test_openmmlab_inferencers_run_our_configs(det_demo, seg_demo, cls_checkpoint, tmp_path):
    images = _images(tmp_path / 'images', 3)
    script = tmp_path / 'inferencers.py'
    script.write_text(INFERENCERS)
    proc = run_tool(
        [
            script,
            demo.CONFIG,
            det_demo[1].checkpoint,
            demo_seg.CONFIG,
            seg_demo[1].checkpoint,
            CLS_CONFIG,
            cls_checkpoint,
            images,
            tmp_path / 'out',
        ],
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result['registered']  # by the configs' custom_imports alone
    assert result['det_classes'] == ['circle', 'square', 'triangle'] and len(result['det']) == 3
    assert all(set(p['labels']) <= {0, 1, 2} for p in result['det'])
    assert result['seg'] == [[56, 72]] * 3 and set(result['seg_values']) <= {0, 1, 2}
    assert len(result['cls']) == 3
    assert all(0 <= p['label'] < 3 and p['name'] == CLS_CLASSES[p['label']] and p['scores'] == 3 for p in result['cls'])
    assert len(list((tmp_path / 'out' / 'det' / 'vis').glob('*.jpg'))) == 3


def test_infer_tool_on_a_classification_config(cls_checkpoint, tmp_path):
    images = _images(tmp_path / 'images', 3)
    written = infer.main(
        [
            str(images),
            str(CLS_CONFIG),
            str(cls_checkpoint),
            '--out-dir',
            str(tmp_path / 'out'),
            '--batch-size',
            '2',
            '--device',
            'cpu',
        ]
    )
    assert [Path(p).name for p in written.preds] == ['img0.json', 'img1.json', 'img2.json']
    assert len(written.vis) == 3
    pred = json.loads(Path(written.preds[0]).read_text())
    assert pred['pred_class'] == CLS_CLASSES[pred['pred_label']]
    assert len(pred['pred_scores']) == 3 and math.isclose(sum(pred['pred_scores']), 1, rel_tol=1e-4)
    assert math.isclose(pred['pred_score'], max(pred['pred_scores']), rel_tol=1e-6)


def test_infer_tool_arguments(capsys):
    args = infer.parse_args(['x.jpg', 'c.py', 'w.pth', '--score-thr', '0.5', '--batch-size', '4'])
    assert args.pred_score_thr == 0.5 and args.batch_size == 4  # --score-thr: alias of --pred-score-thr
    assert args.device == torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    for bad, message in (
        (['--batch-size', '0'], '--batch-size must be at least 1, got 0'),
        (['--pred-score-thr', '1.5'], r'--pred-score-thr must be within \[0, 1\], got 1.5'),
        (['--device', 'gpu0'], "--device 'gpu0' is not a device"),
    ):
        with pytest.raises(SystemExit):
            infer.parse_args(['x.jpg', 'c.py', 'w.pth', *bad])
        assert re.search(message, capsys.readouterr().err), message
