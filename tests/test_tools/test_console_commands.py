"""Every console command as installed (setup.py's `maformer-*`): it runs its tool's `main`, takes `--help`, and each
one that takes a config takes one of maformer_mm's configs by name, through the one loader (`config.zoo`)."""

import contextlib
import io
from importlib import import_module
from importlib.metadata import entry_points

import pytest

from maformer_mm.config.zoo import resolve_config

COMMANDS = {
    e.name: e.value.split(':')[1]
    for e in entry_points(group='console_scripts')
    if e.value.startswith('maformer_mm.tools.entry_points:')
}
NAME = 'mask_rcnn_maformer_t_demo'


def test_the_commands_are_the_tools():
    assert set(COMMANDS) == {
        'maformer-train',
        'maformer-test',
        'maformer-infer',
        'maformer-export',
        'maformer-flops',
        'maformer-convert',
        'maformer-configs',
        'maformer-plot-curve',
        'maformer-demo',
        'maformer-demo-seg',
    }


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_each_command_runs_its_tool_and_takes_help(command, monkeypatch):
    entry = getattr(import_module('maformer_mm.tools.entry_points'), COMMANDS[command])
    monkeypatch.setattr('sys.argv', [command, '--help'])
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as stop:
        entry()
    assert stop.value.code == 0 and out.getvalue().startswith('usage: ')


def test_the_config_taking_commands_take_a_name(tmp_path, capsys):
    """train, test, infer, flops, export and configs resolve `mask_rcnn_maformer_t_demo` to the shipped file."""
    from maformer_mm.tools import configs, export_onnx, get_flops, infer, test, train

    path = resolve_config(NAME)
    assert train.build_config(train.parse_args([NAME, '--device', 'cpu'])).filename == path
    checkpoint = tmp_path / 'ckpt.pth'
    checkpoint.write_bytes(b'')  # only its existence is checked while the config is built
    assert test.build_config(test.parse_args([NAME, str(checkpoint), '--device', 'cpu'])).filename == path
    for tool, argv in (
        (infer, ['img.png', NAME, str(checkpoint)]),
        (get_flops, [NAME]),
        (export_onnx, [NAME, '--shape', '64', '--out', 'x.onnx']),
    ):
        assert tool.parse_args(argv).config == NAME  # each then loads it with config.zoo.load_config (below)
    assert configs.main(['--path', NAME]) == [path] and capsys.readouterr().out.strip() == path
    image = tmp_path / 'img.png'
    image.write_bytes(b'')
    with pytest.raises(FileNotFoundError, match=r'no config of maformer_mm is named mask_rcnn_maformer_q\.py'):
        infer.main([str(image), 'mask_rcnn_maformer_q', str(checkpoint)])
