"""Every checkpoint the host libraries write loads: a corpus made by their own training, hooks and metrics.

mmdet's, mmseg's and mmpretrain's own tools/train.py each train a tiny MAFormer model of ours on generated data with
mmengine's CheckpointHook and `save_best` (mmdet: CocoMetric, `coco/bbox_mAP`, and mmdet's EMA hook; mmseg:
IoUMetric, `mIoU`, whose best score is a numpy float32; mmpretrain: Accuracy, `auto`, and its EMA hook), then resume
from their own checkpoint with the config that wrote it. Each file loads through `load_from` (tools/test.py),
`init_cfg` and tools/infer.py. Beside them: the state of every parameter scheduler the hosts register, an AMP loss
scaler's state (as AmpOptimWrapper saves it; it needs a GPU to run) and every numpy scalar type a metric can return.
"""

import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

import maformer_mm  # noqa: F401
from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
from maformer_mm.models import MAFormer
from tests.helpers import REPO, make_det_workspace, run_tool
from tests.test_cls.test_cls_pretrain import CROP_64, user_cls_config, write_image_folders
from tests.test_seg.test_seg_tools import user_seg_config

HOSTS = {
    'mmdet': dict(
        best='coco/bbox_mAP',
        extra="custom_hooks = [dict(type='EMAHook', ema_type='ExpMomentumEMA', momentum=0.0002, priority=49)]\n"
        'train_cfg = dict(max_epochs={epochs}, val_interval=1)\n',
    ),
    'mmseg': dict(best='mIoU', extra='train_cfg = dict(max_iters={iters}, val_interval=2)\n'),
    'mmpretrain': dict(best='auto', extra='train_cfg = dict(max_epochs={epochs}, val_interval=1)\n'),
}


def _stock_train(host: str, argv: list, monkeypatch) -> None:
    """The host's own tools/train.py, in this process, as a user runs it."""
    module = __import__(host)
    stock = Path(module.__file__).parent / '.mim' / 'tools' / 'train.py'
    with monkeypatch.context() as patched:
        patched.setattr('sys.argv', [str(stock), *map(str, argv)])
        runpy.run_path(str(stock), run_name='__main__')


def _workspace(host: str, root: Path) -> Path:
    """A user config of ours for `host` on generated data (the one the host's tests use)."""
    if host == 'mmdet':
        return make_det_workspace(root, num_train=2, num_val=2)
    if host == 'mmseg':
        run_tool([REPO / 'tools' / 'make_demo_data.py', 'ade', '--out', root / 'data', '--train', 2, '--val', 2,
                  '--size', 64, 64], cwd=REPO)  # fmt: skip
        config = root / 'user_config.py'
        config.write_text(
            user_seg_config(str(REPO / 'configs' / 'upernet_maformer_t_demo.py'), str(root / 'data') + '/')
        )
        return config
    write_image_folders(root / 'data', dict(train=4, val=4))
    config = root / 'user_config.py'
    config.write_text(user_cls_config(str(root / 'data')))
    return config


def _corpus_config(host: str, base: Path, step: int) -> Path:
    """`base` with mmengine's own CheckpointHook, `save_best`, and `step` epochs (iterations for mmseg)."""
    spec = HOSTS[host]
    text = f'_base_ = [{str(base)!r}]\n'
    text += f"default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, save_best={spec['best']!r}))\n"
    text += spec['extra'].format(epochs=step, iters=2 * step)
    if host == 'mmpretrain':
        text += "param_scheduler = [dict(type='CosineAnnealingLR', T_max=2, by_epoch=True, begin=0, end=2)]\n"
    path = base.parent / f'corpus_{host}_{step}.py'  # one name per run: mmengine names the run's message hub by it
    path.write_text(text)
    return path


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    """host -> (config, work dir, image, first checkpoint, resumed checkpoint)."""
    monkeypatch = pytest.MonkeyPatch()
    out = {}
    try:
        monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
        for host in HOSTS:
            root = tmp_path_factory.mktemp(host)
            base = _workspace(host, root)
            work = root / 'work'
            extra = CROP_64 if host == 'mmpretrain' else []
            options = ['--cfg-options', *extra] if extra else []
            _stock_train(host, [_corpus_config(host, base, 1), '--work-dir', work, *options], monkeypatch)
            first = work / ('iter_2.pth' if host == 'mmseg' else 'epoch_1.pth')
            kept = root / f'first{first.suffix}'
            shutil.copy(first, kept)
            config = _corpus_config(host, base, 2)
            resume = ['--resume'] if host == 'mmseg' else ['--resume', first]  # mmseg's takes the work dir's latest
            _stock_train(host, [config, '--work-dir', work, *resume, *options], monkeypatch)
            resumed = work / ('iter_4.pth' if host == 'mmseg' else 'epoch_2.pth')
            image = root / 'image.png'
            Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(image)
            out[host] = (config, work, image, kept, resumed, extra)
    finally:
        monkeypatch.undo()
    return out


@pytest.mark.parametrize('host', list(HOSTS))
def test_the_hosts_own_training_writes_checkpoints_that_load_and_resume(corpus, host):
    config, work, _, first, resumed, _ = corpus[host]
    log = sorted(work.rglob('*.log'))[-1].read_text()
    assert 'resumed epoch' in log or 'resumed iter' in log or 'resumed epoch: 1' in log, log[-2000:]
    for path in (first, resumed, *work.glob('best_*.pth')):
        checkpoint = load_mmengine_checkpoint(path)
        assert checkpoint['state_dict'], path
    info = load_mmengine_checkpoint(resumed)['message_hub']['runtime_info']
    assert 'best_score' in info and Path(info['best_ckpt']).is_file()
    if host == 'mmseg':  # IoUMetric's numpy float32, which the loader once refused
        assert type(info['best_score']) is np.float32
    if host != 'mmseg':
        assert 'ema_state_dict' in load_mmengine_checkpoint(resumed)


@pytest.mark.parametrize('host', list(HOSTS))
def test_each_checkpoint_tests_infers_and_initialises_a_backbone(corpus, host, tmp_path):
    from maformer_mm.tools import infer, test

    config, work, image, first, resumed, extra = corpus[host]
    options = ['--cfg-options', *extra] if extra else []
    metrics = test.main([str(config), str(resumed), '--work-dir', str(tmp_path / 'test'), *options])
    key = {'mmdet': 'coco/bbox_mAP', 'mmseg': 'mIoU', 'mmpretrain': 'accuracy/top1'}[host]
    assert -1 <= metrics[key] <= 100  # COCO gives -1 where a class has no ground truth
    best = next(work.glob('best_*.pth'))
    written = infer.main([str(image), str(config), str(best), '--out-dir', str(tmp_path / 'infer'), '--device', 'cpu'])
    assert len(written.vis) == 1
    backbone = dict(Config.fromfile(str(config)).model.backbone)  # the backbone the host trained
    backbone['init_cfg'] = dict(type='Pretrained', checkpoint=str(first), prefix='backbone.')
    model = MAFormer(**{k: v for k, v in backbone.items() if k != 'type'})
    model.init_weights()
    state = load_mmengine_checkpoint(first)['state_dict']
    own = model.state_dict()
    assert own and all(torch.equal(v, state['backbone.' + k]) for k, v in own.items() if 'backbone.' + k in state)


def _scheduler_args(name: str) -> dict:
    """Constructor arguments of each registered scheduler (a new kind fails the test below until it is added)."""
    common = dict(begin=0, end=10)
    table = {
        'StepParamScheduler': dict(step_size=2),
        'MultiStepParamScheduler': dict(milestones=[2, 4]),
        'ConstantParamScheduler': dict(),
        'ExponentialParamScheduler': dict(gamma=0.9),
        'CosineAnnealingParamScheduler': dict(T_max=10),
        'LinearParamScheduler': dict(),
        'PolyParamScheduler': dict(),
        'OneCycleParamScheduler': dict(eta_max=0.1, total_steps=10),
        'CosineRestartParamScheduler': dict(periods=[5, 5], restart_weights=[1, 0.5], eta_min=0.0),
        'ReduceOnPlateauParamScheduler': dict(monitor='loss'),
        'QuadraticWarmupParamScheduler': dict(),
    }
    if name == 'PolyLRRatio':
        return {**common, 'eta_min_ratio': 0.1}
    for suffix in ('LR', 'Momentum', 'WeightDecay', 'ParamScheduler'):
        if name.endswith(suffix) and name[: -len(suffix)] + 'ParamScheduler' in table:
            return {**common, **table[name[: -len(suffix)] + 'ParamScheduler']}
    return {**common, **table[name]}


def test_every_registered_parameter_schedulers_state_loads(tmp_path):
    """The state of each scheduler mmengine, mmdet, mmseg and mmpretrain register, after a few steps, saved as the
    Runner saves it, load and restore a fresh scheduler to the same step and value; all but OneCycle, whose state
    holds a method (`anneal_func`, pickled with its class; no config of the hosts uses OneCycle)."""
    import mmdet.engine  # noqa: F401  (registers its schedulers)
    import mmpretrain.engine  # noqa: F401
    import mmseg.engine  # noqa: F401
    from mmengine.optim.scheduler.lr_scheduler import LRSchedulerMixin
    from mmengine.optim.scheduler.momentum_scheduler import MomentumSchedulerMixin
    from mmengine.registry import PARAM_SCHEDULERS

    from maformer_mm.checkpoint.safe_load import UnsafeCheckpointError

    kinds = {}
    for registry in [PARAM_SCHEDULERS, *PARAM_SCHEDULERS.children.values()]:
        kinds.update(registry.module_dict)
    assert len(kinds) >= 30
    for name, kind in sorted(kinds.items()):
        args = _scheduler_args(name)
        param = 'weight_decay' if 'WeightDecay' in name else 'momentum' if 'Momentum' in name else 'lr'
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9, weight_decay=0.01)
        named = not issubclass(kind, (LRSchedulerMixin, MomentumSchedulerMixin)) and 'WeightDecay' not in name
        extra = {'param_name': param} if named else {}
        scheduler = kind(optimizer=optimizer, **extra, **args)
        for _ in range(3):
            scheduler.step({'loss': 0.5}) if 'ReduceOnPlateau' in name else scheduler.step()
        path = tmp_path / f'{name}.pth'
        torch.save({'meta': {'epoch': 1}, 'param_schedulers': [scheduler.state_dict()]}, path)
        if 'OneCycle' in name:
            with pytest.raises(
                UnsafeCheckpointError,
                match=r'GLOBAL mmengine.optim.scheduler.param_scheduler.OneCycleParamScheduler was not',
            ):
                load_mmengine_checkpoint(path)
            continue
        state = load_mmengine_checkpoint(path)['param_schedulers'][0]
        fresh = kind(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1, momentum=0.9,
                     weight_decay=0.01), **extra, **args)  # fmt: skip
        fresh.load_state_dict(state)
        assert fresh.last_step == scheduler.last_step and fresh._last_value == scheduler._last_value, name


def test_an_amp_loss_scalers_state_and_every_metric_scalar_load(tmp_path):
    """AmpOptimWrapper saves `optimizer['loss_scaler']` (torch's GradScaler state); metrics return numpy scalars of
    these types, which mmengine stores as `best_score` and in the message hub."""
    scaler = torch.amp.GradScaler('cpu', init_scale=1024.0)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.ones(2))])
    state = optimizer.state_dict()
    state['loss_scaler'] = scaler.state_dict()
    scalars = [np.float16(0.5), np.float32(0.25), np.float64(0.125), np.int32(3), np.int64(4), np.bool_(True)]
    info = {f'best_score_{type(v).__name__}': v for v in scalars}
    path = tmp_path / 'amp.pth'
    torch.save({'meta': {'epoch': 1}, 'optimizer': state, 'message_hub': {'runtime_info': info}}, path)
    loaded = load_mmengine_checkpoint(path)
    assert loaded['optimizer']['loss_scaler'] == scaler.state_dict() and scaler.state_dict()['scale'] == 1024.0
    for key, value in info.items():
        assert (
            type(loaded['message_hub']['runtime_info'][key]) is type(value)
            and loaded['message_hub']['runtime_info'][key] == value
        )
