"""Config texts inside checkpoints are never parsed by mmengine nor built, and never a reason to refuse a load.

Two controls show why no check of a text can be trusted: the crafted template (`crafted.config_template`) assigns
only data and mmengine's template substitution turns it into code; a text that is plain data names `os.system` as a
model type and mmengine's registry imports and calls it. What mmengine gets from the loaders holds no saved text but
`gpu_ids = [...]` written here.
"""

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS
from mmengine.runner import CheckpointLoader

import maformer_mm  # noqa: F401
from maformer_mm.checkpoint.config_text import defuse_config_texts, saved_gpu_ids
from maformer_mm.checkpoint.safe_load import load_mmengine_checkpoint
from tests.test_security.crafted import config_template, system_config, with_config_texts

# Texts that made every mmengine load fail with a raw error before (issue 26), and others that are no config.
BROKEN_TEXTS = {
    'unhashable_key': 'x = {[1]: 2}',
    'unhashable_item': 'x = {[1]}',
    'zero_step': 'gpu_ids = range(0, 8, 0)',
    'huge_range': 'gpu_ids = range(0, 10**29)',
    'huge_literal_range': 'gpu_ids = range(0, 100000000000000000000000000000)',
    'syntax': 'a = [',
    'null_byte': 'a = 1\x00',
    'deep': 'a = ' + '[' * 300 + ']' * 300,
    'not_text': b'model = 1',
    'call': "gpu_ids = __import__('os').getcwd()",
}


def test_the_crafted_template_runs_when_mmengine_parses_it(tmp_path):
    """The control: the text is valid Python that assigns a dict, and Config.fromstring runs its payload."""
    marker = tmp_path / 'payload_ran'
    text = config_template(marker)
    compile(text, 'config', 'exec')
    with pytest.raises(KeyError):  # the rewritten dict fails after exec ran
        Config.fromstring(text, file_format='.py')
    assert marker.exists()


def test_a_plain_data_config_runs_a_command_when_mmengine_builds_it(tmp_path):
    """The control: `model = dict(type='os.system', command=...)` is data, and mmengine's registry imports the
    dotted name and calls it. This is why no saved config is ever built."""
    marker = tmp_path / 'payload_ran'
    cfg = Config.fromstring(system_config(marker), file_format='.py')
    MODELS.build(cfg.model)
    assert marker.exists()


def test_defused_checkpoints_hold_no_saved_text_but_gpu_ids():
    pretty = "model = dict(type='MaskRCNN')\ngpu_ids = range(0, 2)\nwork_dir = './w'\n"
    checkpoint = {'meta': {'config': pretty, 'cfg': pretty}, 'message_hub': {'runtime_info': {'cfg': pretty}}}
    defuse_config_texts(checkpoint)
    assert checkpoint == {'meta': {'config': 'gpu_ids = [0, 1]\n'}, 'message_hub': {'runtime_info': {}}}
    templated = {'meta': {'config': config_template(Path('/nonexistent/never_written')), 'cfg': 'x = ['}}
    assert defuse_config_texts(templated) == {'meta': {}}


@pytest.mark.parametrize(
    'text, ids',
    [
        ('gpu_ids = range(0, 8)', list(range(8))),
        ('gpu_ids = [0, 3]', [0, 3]),
        ('gpu_ids = (1,)', [1]),
        ('a = 1\ngpu_ids = range(2)', [0, 1]),
        ('gpu_ids = range(0, 8, 2)', [0, 2, 4, 6]),
        ('gpu_ids = [-1]', None),
        ('gpu_ids = list(range(2))', None),
        ('gpus = 2', None),
    ],
)
def test_saved_gpu_ids_read_only_literal_ids(text, ids):
    assert saved_gpu_ids(text) == ids


@pytest.mark.parametrize('name', sorted(BROKEN_TEXTS))
def test_broken_texts_never_fail_a_load(tmp_path, name):
    """Each text in meta['config'], meta['cfg'] and the message hub: mmengine's loader returns the checkpoint
    without them; the file itself reads with the text as saved."""
    text = BROKEN_TEXTS[name]
    path = tmp_path / 'broken.pth'
    torch.save(with_config_texts({'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {'w': torch.ones(1)}}, text), path)
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert loaded['meta'] == {'epoch': 1, 'iter': 2} and loaded['message_hub'] == {'runtime_info': {}}
    assert load_mmengine_checkpoint(path)['meta']['config'] == text


def test_loads_drop_the_crafted_texts_and_run_nothing(tmp_path):
    """Through mmengine's loader (resume, load_from, tools/test.py): the template, the os.system config and a
    saved config whose custom_imports name an unimported plugin are all gone, and nothing ran."""
    marker = tmp_path / 'payload_ran'
    for number, text in enumerate(
        [
            config_template(marker),
            system_config(marker),
            "custom_imports = dict(imports=['my_team_plugin'], allow_failed_imports=False)\nmodel = dict(type='X')\n",
        ]
    ):
        path = tmp_path / f'{number}.pth'
        torch.save(with_config_texts({'meta': {'epoch': 1, 'iter': 2}, 'state_dict': {}}, text), path)
        assert CheckpointLoader.load_checkpoint(str(path))['meta'] == {'epoch': 1, 'iter': 2}
    assert not marker.exists()
