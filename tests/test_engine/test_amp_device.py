"""bf16 AMP runs on the device of the run, and never sends bf16 into an mmcv kernel that has none.

`tools/train.py --device cpu --amp` on a machine with a GPU: torch.cuda.is_available() is True there, and a
wrapper that picked its autocast device from it would autocast 'cuda' while the model runs on the CPU, i.e.
train in float32 without a word. These tests make torch report a GPU (as the tests of
tests/test_reliability/test_bad_input.py see it on such a machine) and check that bf16 is really used."""

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from torch import nn

from maformer_mm.engine import BF16OptimWrapper
from maformer_mm.engine.optim import bf16_unsafe_modules
from maformer_mm.models import MAFormer
from maformer_mm.tools import train
from tests.helpers import DEMO_DET_CONFIG, TINY_CFG


class _Detector(nn.Module):
    """A backbone and a head, the shape of an mmdet model for the wrapper's `scope='backbone'`."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = MAFormer(**TINY_CFG)
        self.head = nn.Linear(TINY_CFG['arch']['embed_dims'] * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[-1].mean((2, 3)))


def _run(wrapper: BF16OptimWrapper, model: _Detector) -> list:
    """The dtypes seen inside the backbone (patch embedding) and at the head's input, in one step's forward."""
    dtypes = []
    hooks = [
        model.backbone.patch_embed.projection.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype)),
        model.head.register_forward_pre_hook(lambda m, args: dtypes.append(args[0].dtype)),
    ]
    with wrapper.optim_context(model):
        model(torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    return dtypes


@pytest.fixture
def gpu_seen(monkeypatch):
    """torch reports one GPU (nothing here initialises CUDA; mmengine's logger asks for the device count)."""
    count = torch.cuda.device_count()
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: max(count, 1))
    monkeypatch.setenv('LOCAL_RANK', '0')  # parse_args exports it; restored after the test


def test_train_device_cpu_amp_autocasts_the_cpu_on_a_gpu_machine(gpu_seen, tmp_path):
    args = train.parse_args([str(DEMO_DET_CONFIG), '--device', 'cpu', '--amp', '--work-dir', str(tmp_path)])
    cfg = train.build_config(args)
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.scope, cfg.optim_wrapper.device_type) == (
        'BF16OptimWrapper',
        'backbone',
        'cpu',
    )
    model = _Detector()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)  # as the Runner builds it
    assert isinstance(wrapper, BF16OptimWrapper)
    assert _run(wrapper, model) == [torch.bfloat16, torch.float32]  # bf16 backbone, float32 handed on


def test_train_device_cuda_amp_is_fp16_with_loss_scaling(gpu_seen, tmp_path):
    cfg = train.build_config(train.parse_args([str(DEMO_DET_CONFIG), '--amp', '--work-dir', str(tmp_path)]))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.loss_scale == 'dynamic'
    assert 'device_type' not in cfg.optim_wrapper


def test_wrapper_default_device_is_the_models(gpu_seen):
    """Without device_type the wrapper autocasts where the model's parameters are, not where a GPU exists."""
    model = _Detector()
    wrapper = BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01), scope='backbone')
    assert wrapper.autocast_device(model) == 'cpu'
    assert _run(wrapper, model) == [torch.bfloat16, torch.float32]
    whole = BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    assert _run(whole, model) == [torch.bfloat16, torch.bfloat16]
    assert (
        BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01), device_type='cuda').autocast_device(
            model
        )
        == 'cuda'
    )  # an explicit setting wins
    with pytest.raises(ValueError, match="device_type must be 'cpu' or 'cuda'"):
        BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01), device_type='gpu')


def test_mmcv_roi_align_has_no_bf16_kernel():
    """The premise of the check below, on this machine's mmcv: its RoIAlign refuses bf16 (the CUDA kernel
    dispatches float, double and half only, as the CPU one does)."""
    from mmcv.ops import RoIAlign

    feats = torch.rand(1, 2, 8, 8)
    rois = torch.tensor([[0, 1.0, 1.0, 6.0, 6.0]])
    roi_align = RoIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)
    assert roi_align(feats, rois).dtype == torch.float32
    with pytest.raises(RuntimeError, match='BFloat16'):
        roi_align(feats.bfloat16(), rois.bfloat16())


def test_model_scope_refuses_mmcv_ops_without_bf16():
    """scope='model' on a model with RoIAlign fails before the forward, naming the module and the remedy."""
    from mmcv.ops import RoIAlign
    from mmdet.models.losses import FocalLoss

    model = _Detector()
    model.roi = RoIAlign((2, 2))
    model.loss_cls = FocalLoss(use_sigmoid=True)
    wrapper = BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01))
    with pytest.raises(ValueError, match=r"without a bfloat16 cpu kernel: roi \(RoIAlign\)\. Use scope='backbone'"):
        with wrapper.optim_context(model):
            pass
    assert not torch.is_autocast_enabled('cpu')
    # mmdet's FocalLoss calls mmcv's kernel on CUDA only (plain torch ops on the CPU)
    assert bf16_unsafe_modules(model, 'cuda') == ['roi (RoIAlign)', 'loss_cls (FocalLoss)']
    wrapper = BF16OptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.01), scope='backbone')
    assert _run(wrapper, model) == [torch.bfloat16, torch.float32]  # the backbone scope is fine
