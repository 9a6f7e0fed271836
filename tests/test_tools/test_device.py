"""`--device` of tools/train.py, tools/test.py, tools/infer.py and the demos: the default follows
torch.cuda.is_available(), an explicit value overrides mmengine's own choice, and a bad value is named.
(The CUDA side runs in the GPU tests; an explicit `--device cpu` run under a pretended CUDA choice is in
tests/test_det/test_data_root.py.)"""

import mmengine.device.utils as mmengine_device
import pytest
import torch
from mmengine.device import get_device

from maformer_mm.engine.runs import default_device, on_device, parse_device
from maformer_mm.tools import demo, demo_seg
from maformer_mm.tools import test as test_tool
from maformer_mm.tools import train as train_tool

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason='checks the errors of a machine without CUDA')


def test_default_follows_cuda_availability():
    assert default_device() == ('cuda' if torch.cuda.is_available() else 'cpu')
    assert train_tool.parse_args(['c.py']).device == torch.device(default_device())
    assert test_tool.parse_args(['c.py', 'w.pth']).device == torch.device(default_device())
    assert demo.parse_args([]).device == demo_seg.parse_args([]).device == torch.device(default_device())


def test_explicit_cpu_overrides_mmengines_choice(monkeypatch):
    monkeypatch.setattr(mmengine_device, 'DEVICE', 'cuda')  # as mmengine picks on a GPU machine
    args = test_tool.parse_args(['c.py', 'w.pth', '--device', 'cpu'])
    assert args.device == torch.device('cpu')
    with on_device(args.device):
        assert get_device() == 'cpu'  # what mmengine's Runner moves the model to
    assert get_device() == 'cuda'


@pytest.mark.parametrize(
    'value, message',
    [
        ('gpu', "--device 'gpu' is not a device"),
        ('cuda:x', "--device 'cuda:x' is not a device"),
        ('meta', "--device 'meta': only cpu and cuda devices are supported"),
    ],
)
def test_bad_device_is_named(value, message):
    with pytest.raises(ValueError, match=message):
        parse_device(value)


@NO_CUDA
def test_cuda_without_cuda_is_named(capsys):
    with pytest.raises(ValueError, match=r"--device 'cuda:0': CUDA is not available on this machine"):
        parse_device('cuda:0')
    with pytest.raises(SystemExit):
        test_tool.parse_args(['c.py', 'w.pth', '--device', 'cuda'])
    assert "--device 'cuda': CUDA is not available on this machine" in capsys.readouterr().err
