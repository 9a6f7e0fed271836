"""Config texts inside checkpoints are data: evaluated here, never by mmengine, and never a reason to refuse a load.

The crafted text (`crafted.config_template`) assigns only data; mmengine's template substitution turns it into
code before it parses it. What mmengine gets from the loaders holds texts written by maformer_mm from values, or
none.
"""

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import CheckpointLoader

import maformer_mm  # noqa: F401
from maformer_mm.checkpoint.config_text import ConfigTextError, config_as_text, defuse_config_texts, read_config_text
from maformer_mm.checkpoint.inferencers import saved_config
from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
from tests.helpers import DEMO_DET_CONFIG, REPO
from tests.test_security.crafted import config_template, with_config_texts


def test_the_crafted_template_runs_when_mmengine_parses_it(tmp_path):
    """The control: the text is valid Python that assigns a dict, and Config.fromstring runs its payload."""
    marker = tmp_path / 'payload_ran'
    text = config_template(marker)
    compile(text, 'config', 'exec')
    with pytest.raises(KeyError):  # the rewritten dict fails after exec ran
        Config.fromstring(text, file_format='.py')
    assert marker.exists()


def test_a_template_is_refused_before_anything_evaluates_it(tmp_path):
    marker = tmp_path / 'payload_ran'
    with pytest.raises(ConfigTextError, match=r'line 1 holds template syntax \(\{\{\), which mmengine substitutes'):
        read_config_text(config_template(marker))
    assert not marker.exists()


@pytest.mark.parametrize(
    'text, found',
    [
        ('import os\nx = 1', r'line 1 is import code'),
        ("model = dict(type=__import__('os').getcwd())", r'line 1 computes a value instead of stating it: __import__'),
        ("_base_ = ['/some/file.py']", r'line 1 names base config files to read \(_base_\)'),
        ('a = [', r'it is not valid Python'),
        ("a = '\\x7b\\x7b'", r'a string holds template syntax \(\{\{\) once evaluated'),
        ("a = 'x' '{' '{$HOME}}'", r'a string holds template syntax'),
        ('a = 1e999', r'holds a constant that is not plain data'),
        ('a = b', r'computes a value instead of stating it: b'),
        ('a = dict(**x)', r'computes a value'),
        ('a = range(10 ** 9)', r'computes a value'),
    ],
    ids=[
        'import',
        'call',
        'base',
        'syntax',
        'escaped_template',
        'joined_template',
        'infinity',
        'name',
        'unpacking',
        'huge_range',
    ],
)
def test_texts_that_are_not_plain_data_are_refused_naming_what_was_found(text, found):
    with pytest.raises(ConfigTextError, match=found):
        read_config_text(text)


@pytest.mark.parametrize(
    'config',
    [
        DEMO_DET_CONFIG,
        REPO / 'configs' / 'upernet_maformer_t_512x512_160k_ade20k.py',
        REPO / 'configs' / 'maformer_t_in1k.py',
    ],
    ids=['det', 'seg', 'cls'],
)
def test_saved_texts_of_real_configs_are_read_as_the_same_values(config):
    """What mmengine saves (`Config.pretty_text`) is data: evaluated here it gives what mmengine's own parse gives,
    and the text written back from the values parses to the same config."""
    text = Config.fromfile(str(config)).pretty_text
    values = read_config_text(text)
    expected = Config.fromstring(text, file_format='.py').to_dict()  # our own config: safe to parse
    assert Config(values).to_dict() == expected
    assert Config.fromstring(config_as_text(values), file_format='.py').to_dict() == expected


def test_defused_texts_keep_only_what_mmengine_needs():
    """`meta['config']` (mmcv 1.x; Runner.resume reads `gpu_ids` only) becomes gpu_ids alone; other texts become
    their values' text; a text that is not data, or imports a module not imported yet, is left out."""
    pretty = "model = dict(type='MaskRCNN')\ngpu_ids = range(0, 2)\nwork_dir = './w'\n"
    checkpoint = {
        'meta': {'config': pretty, 'cfg': pretty},
        'message_hub': {'runtime_info': {'cfg': "custom_imports = dict(imports=['my_team_plugin'])"}},
    }
    defuse_config_texts(checkpoint)
    assert checkpoint['meta']['config'] == 'gpu_ids = [0, 1]\n'
    assert checkpoint['meta']['cfg'] == "model = {'type': 'MaskRCNN'}\ngpu_ids = [0, 1]\nwork_dir = './w'\n"
    assert 'cfg' not in checkpoint['message_hub']['runtime_info']
    marker_free = {'meta': {'config': config_template(REPO / 'never'), 'cfg': 'x = ['}}
    assert defuse_config_texts(marker_free) == {'meta': {}}


def test_loads_defuse_the_texts_and_never_fail_because_of_them(tmp_path):
    """Through mmengine's loader (resume, load_from, tools/test.py) the crafted texts are gone and nothing ran; a
    saved config whose custom_imports name an unimported plugin loads too (it is never executed)."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'templated.pth'
    torch.save(
        with_config_texts(
            {'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {'w': torch.ones(1)}}, config_template(marker)
        ),
        path,
    )
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta'] == {'epoch': 1, 'iter': 2} and loaded['message_hub'] == {'runtime_info': {}}
    assert load_mmengine_checkpoint(path)['meta']['config'] == config_template(marker)  # the file itself: as saved
    plugin = tmp_path / 'plugin.pth'
    text = "custom_imports = dict(imports=['my_team_plugin'], allow_failed_imports=False)\nmodel = dict(type='X')\n"
    torch.save(with_config_texts({'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {}}, text), plugin)
    assert CheckpointLoader.load_checkpoint(str(plugin))['meta'] == {'epoch': 1, 'iter': 2}
    assert not marker.exists()


def test_an_inferencer_uses_a_saved_config_only_as_data(tmp_path):
    marker = tmp_path / 'payload_ran'
    with pytest.raises(
        ValueError,
        match=r'ckpt: its saved config \(message_hub.runtime_info.cfg\) was not used: '
        r'line 1 holds template syntax.*Give the config file the checkpoint was '
        r'trained with',
    ):
        saved_config(with_config_texts({}, config_template(marker)), 'ckpt')
    with pytest.raises(
        ValueError,
        match=r"imports \['my_team_plugin'\] \(custom_imports\), which this process has not "
        r'imported. Import them yourself if you trust them',
    ):
        saved_config({'meta': {'cfg': "custom_imports = dict(imports=['my_team_plugin'])\nmodel = {}"}}, 'ckpt')
    with pytest.raises(ValueError, match=r'ckpt holds no saved config'):
        saved_config({'meta': {}}, 'ckpt')
    cfg = saved_config({'meta': {'cfg': "model = dict(type='MaskRCNN', num_classes=3)"}}, 'ckpt')
    assert cfg.model.to_dict() == {'type': 'MaskRCNN', 'num_classes': 3}
    assert not marker.exists()
