"""A variant is defined once, in `MAFormer.arch_zoo`: every config that names one agrees with the table (arch, the
widths its neck and heads read, its ImageNet checkpoint's name), every config family covers the same variants, and
the README's table of variants is what `benchmarks/model_index.py` writes from the table.

`agreement_problems` is what the contributing page's steps are checked against (docs/contributing.md); the last test
walks those steps for a made-up variant in a copy of the tree.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from mmengine.config import Config

from maformer_mm.config.zoo import config_dir, list_configs
from maformer_mm.models import MAFormer
from tests.helpers import REPO, memoised_package_config_index

_NAMED = re.compile(r'maformer_([a-z])(?:_|\.py$)')  # the variant letter in a config's name


def widths(settings: dict) -> List[int]:
    return [settings['embed_dims'] * 2**i for i in range(4)]


def _backbone(model: dict) -> Optional[dict]:
    backbone = model.get('backbone') or {}
    return backbone if str(backbone.get('type', '')).endswith('MAFormer') else None


def agreement_problems(name: str, cfg: Config) -> List[str]:
    """What a config that names a variant (`..._maformer_X...`) gets wrong against the variants' table."""
    match = _NAMED.search(Path(name).name)
    backbone = _backbone(cfg.model)
    if match is None or backbone is None or isinstance(backbone.get('arch'), dict):
        return []
    variants = {key[0]: (key, settings) for key, settings in MAFormer.variants().items()}
    if match.group(1) not in variants:
        return [f'{name}: no variant of the table starts with {match.group(1)!r} ({sorted(variants)})']
    variant, settings = variants[match.group(1)]
    problems = []
    if MAFormer.arch_zoo.get(backbone.get('arch')) != settings:
        problems.append(f'{name}: backbone.arch is {backbone.get("arch")!r}, the table names it {variant!r}')
    out = backbone.get('out_indices', (0, 1, 2, 3))
    expected = {
        'neck.in_channels': [widths(settings)[i] for i in out],
        'decode_head.in_channels': [widths(settings)[i] for i in out],
        'panoptic_head.in_channels': [widths(settings)[i] for i in out],
        'auxiliary_head.in_channels': widths(settings)[2],
        'head.in_channels': widths(settings)[3],  # mmpretrain's classifier reads the last stage
    }
    for path, value in expected.items():
        node = cfg.model
        for key in path.split('.'):
            node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            continue
        got = list(node) if isinstance(node, (list, tuple)) else node
        if isinstance(got, list) and len(got) < len(value):
            value = value[len(value) - len(got) :]  # a neck that reads the last levels only (DINO's ChannelMapper)
        if got != value:
            problems.append(f'{name}: model.{path} is {got}, the widths of {variant} give {value}')
    init = backbone.get('init_cfg') or {}
    checkpoint = init.get('checkpoint') if isinstance(init, dict) else None
    wanted = f'checkpoints/maformer_{match.group(1)}_in1k.pth'
    if checkpoint is not None and checkpoint != wanted and Path(checkpoint).name.startswith('maformer_'):
        problems.append(f'{name}: backbone.init_cfg.checkpoint is {checkpoint!r}, expected {wanted!r}')
    return problems


@pytest.fixture(scope='module')
def configs() -> Dict[str, Config]:
    with memoised_package_config_index():
        return {name: Config.fromfile(str(config_dir() / name)) for name in list_configs()}


def test_each_variant_answers_to_its_letter_and_builds_its_widths():
    assert 'tiny' in MAFormer.variants() and 't' not in MAFormer.variants()
    for name, settings in MAFormer.variants().items():
        assert MAFormer.arch_zoo[name[0]] == settings  # each answers to its first letter
        model = MAFormer(arch=name[0], out_indices=(3,))
        assert model.num_features[-1] == widths(settings)[3]


def test_every_config_agrees_with_the_variants_table(configs):
    problems = [p for name, cfg in configs.items() for p in agreement_problems(name, cfg)]
    assert problems == []


def test_every_config_family_covers_the_same_variants(configs):
    """A family is what a config's name says before its variant letter (`mask_rcnn_maformer_`,
    `layer_decay/dino_4scale_maformer_`); each covers t, s and b (or b and l where the paper has L; the demos and
    examples t), and no config names a letter the table does not have."""
    families = defaultdict(set)
    for name in configs:
        path = Path(name)
        match = _NAMED.search(path.name)
        if match and _backbone(configs[name].model):
            families[str(path.parent / path.name[: match.start(1)])].add(match.group(1))
    letters = {key[0] for key in MAFormer.variants()}
    assert families and all(found <= letters for found in families.values())
    assert all({'t', 's', 'b'} <= found or found == {'t'} or found >= {'b', 'l'} for found in families.values()), dict(
        families
    )


def test_a_config_that_disagrees_is_named_with_the_expected_values(configs):
    cfg = Config(configs['mask_rcnn_maformer_s.py'].to_dict())
    cfg.model.neck.in_channels = [32, 64, 128, 256]
    cfg.model.backbone.init_cfg.checkpoint = 'checkpoints/maformer_t_in1k.pth'
    assert agreement_problems('mask_rcnn_maformer_s.py', cfg) == [
        'mask_rcnn_maformer_s.py: model.neck.in_channels is [32, 64, 128, 256], the widths of small give '
        '[64, 128, 256, 512]',
        "mask_rcnn_maformer_s.py: backbone.init_cfg.checkpoint is 'checkpoints/maformer_t_in1k.pth', expected "
        "'checkpoints/maformer_s_in1k.pth'",
    ]


def test_the_readme_table_is_written_from_the_variants_table():
    from benchmarks import model_index

    cache = json.loads(model_index.CACHE.read_text())
    readme = (REPO / 'README.md').read_text()
    assert model_index.variants_table(cache) in readme, 'README out of date: run python -m benchmarks.model_index'
    for name, settings in MAFormer.variants().items():  # and the cache was measured for the table as it is
        assert model_index.variant_key(settings) in cache, name


def test_the_contributing_steps_add_a_variant(tmp_path):
    """docs/contributing.md's steps for a new variant, walked in a copy of the tree: one line in the table, a config,
    `python -m benchmarks.model_index` (which measures only the new ones); then the checks of this file pass for it
    in the copy, and name a config written wrong."""
    copy = tmp_path / 'tree'
    for part in ('maformer_mm', 'configs', 'benchmarks', 'tests', 'README.md', 'pytest.ini', 'docs'):
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, symlinks=True, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copy(source, copy / part)
    # Step 1: the table.
    model = copy / 'maformer_mm' / 'models' / 'backbones' / 'maformer.py'
    text = model.read_text()
    anchor = "        **dict.fromkeys(['l', 'large'],"
    line = (
        "        **dict.fromkeys(['x', 'xmini'], dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2))),\n"
    )
    assert anchor in text
    model.write_text(text.replace(anchor, line + anchor))
    # Step 2: its configs (here one, the ImageNet-1K classifier, as maformer_t_in1k.py is written).
    (copy / 'configs' / 'maformer_x_in1k.py').write_text(
        "_base_ = ['./_base_/maformer_in1k.py']\n"
        "model = dict(backbone=dict(arch='xmini', drop_path_rate=0.0), head=dict(in_channels=128))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(copy))
    run = dict(cwd=copy, env=env, capture_output=True, text=True, timeout=900)
    # Step 3: the model index and the README's table.
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-m', 'benchmarks.model_index'], **run)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert 'maformer_x_in1k.py:' in proc.stdout and 'MAFormer-xmini:' in proc.stdout  # only the new ones measured
    assert proc.stdout.count('params') == 2
    assert '| **MAFormer-X** | 16, 1-1-1-1, 1-1-2-2 |' in (copy / 'README.md').read_text()
    assert 'maformer_x_in1k' in (copy / 'configs' / 'metafile.yml').read_text()
    # Step 4: the checks of this file, in the copy: the new config agrees, a wrong one is named, the README is current.
    check = (
        'from mmengine.config import Config; import maformer_mm; from tests.test_variants import agreement_problems; '
        'from benchmarks import model_index; import json; '
        "cfg = Config.fromfile('configs/maformer_x_in1k.py'); print(agreement_problems('maformer_x_in1k.py', cfg)); "
        "cfg.model.head.in_channels = 512; print(agreement_problems('maformer_x_in1k.py', cfg)); "
        'table = model_index.variants_table(json.loads(model_index.CACHE.read_text())); '
        "print('README current:', table in open('README.md').read())"
    )
    proc = subprocess.run([sys.executable, '-W', 'ignore', '-c', check], **run)
    assert proc.returncode == 0, proc.stderr[-3000:]
    agrees, wrong, readme = proc.stdout.strip().splitlines()[-3:]
    assert agrees == '[]' and readme == 'README current: True'
    assert 'maformer_x_in1k.py: model.head.in_channels is 512, the widths of xmini give 128' in wrong
