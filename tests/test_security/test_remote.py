"""URLs and hub names get the checks of local files: every prefix mmengine registers reads through maformer_mm, a
download lands in torch hub's cache only after its hash and its content were checked, a refused download is
deleted, and a poisoned file already in the cache is refused. Files are served from 127.0.0.1 by the test."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.runner import CheckpointLoader

import maformer_mm  # noqa: F401  (installs the loaders)
from maformer_mm.checkpoint.remote import SCHEMES, hash_prefix
from maformer_mm.checkpoint.safe_load import UnsafeCheckpointError
from maformer_mm.models import MAFormer
from tests.helpers import DEMO_DET_CONFIG
from tests.test_security.crafted import write_crafted
from tests.test_security.serving import serving

PAYLOAD = 'exec_via_history_buffer'  # refused while unpickling; runs exec under a full unpickle


def _sha8(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def _hashed(path: Path) -> Path:
    """`path` renamed as torch hub names files: `name-<sha256 prefix>.pth`."""
    return path.rename(path.with_name(f'{path.stem}-{_sha8(path)}{path.suffix}'))


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """A TORCH_HOME that does not exist yet (torch hub's cache is TORCH_HOME/hub/checkpoints)."""
    home = tmp_path / 'fresh_torch_home'
    monkeypatch.setenv('TORCH_HOME', str(home))
    return home


@pytest.fixture
def files(tmp_path, tiny_cfg):
    """Served files: a training checkpoint of a tiny MAFormer (hash-named and not), a hostile one (hash-named and
    not), and the good one under a wrong hash; and the marker the hostile payload would create."""
    folder = tmp_path / 'served'
    folder.mkdir()
    marker = tmp_path / 'payload_ran'
    model = MAFormer(**tiny_cfg)
    hub = MessageHub('remote_test')
    hub.update_scalar('train/loss', 0.5)
    good = folder / 'maformer.pth'
    torch.save(
        {
            'meta': {'epoch': 1, 'iter': 2},
            'message_hub': hub.state_dict(),
            'state_dict': {'backbone.' + k: v for k, v in model.state_dict().items()},
        },
        good,
    )
    shutil.copy(good, folder / 'maformer-00000000.pth')
    shutil.copy(good, folder / 'plain.pth')
    hostile = write_crafted(PAYLOAD, folder / 'hostile.pth', marker)
    shutil.copy(hostile, folder / 'hostile_named.pth')
    return dict(
        folder=folder,
        model=model,
        good=_hashed(good),
        hostile=hostile,
        hostile_hashed=_hashed(folder / 'hostile_named.pth'),
        marker=marker,
    )


def _cache(torch_home: Path) -> Path:
    return torch_home / 'hub' / 'checkpoints'


def test_every_prefix_mmengine_registers_reads_through_maformer_mm():
    """mmengine 0.10.7 registers these and no others; each now goes to a loader of maformer_mm.checkpoint.remote."""
    assert (
        set(CheckpointLoader._schemes)
        == set(SCHEMES)
        == {
            '',
            'http://',
            'https://',
            'modelzoo://',
            'torchvision://',
            'open-mmlab://',
            'openmmlab://',
            'mmcls://',
            'pavi://',
            r'(\S+\:)?s3://',
            r'(\S+\:)?petrel://',
        }
    )
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.reader is SCHEMES[prefix] and loader.__module__ == 'maformer_mm.checkpoint.remote', prefix


def test_a_url_is_downloaded_once_into_a_fresh_torch_home(files, torch_home):
    assert not torch_home.exists()
    with serving(files['folder']) as served:
        url = served(files['good'].name)
        for _ in range(2):
            loaded = CheckpointLoader.load_checkpoint(url, map_location='cpu')
            assert all(
                torch.equal(loaded['state_dict']['backbone.' + k], v) for k, v in files['model'].state_dict().items()
            )
        assert served.requests == [f'/{files["good"].name}']  # the second load read the cache
    name = files['good'].name
    assert sorted(p.name for p in _cache(torch_home).iterdir()) == [name, name + '.url']  # no temporary left
    assert (_cache(torch_home) / (name + '.url')).read_text() == url + '\n'


def test_two_urls_with_one_file_name_never_share_a_cache_entry(files, torch_home):
    """torch hub caches by file name: `A/plain.pth` then `B/plain.pth` would get A's file. The record beside the
    cached file names its URL, and the second URL is refused, naming both; a file placed in the cache by hand (no
    record) loads, as offline machines need."""
    other = files['folder'] / 'other'
    other.mkdir()
    torch.save({'state_dict': {'w': torch.zeros(1)}}, other / 'plain.pth')
    with serving(files['folder']) as served:
        first, second = served('plain.pth'), served('other/plain.pth')
        assert 'backbone.patch_embed.projection.weight' in CheckpointLoader.load_checkpoint(first)['state_dict']
        with pytest.raises(
            UnsafeCheckpointError,
            match=rf"plain.pth \(torch hub's cache\) was refused for {second}: it was downloaded from {first}, "
            r'another URL that ends in the same file name',
        ):
            CheckpointLoader.load_checkpoint(second)
        assert served.requests == ['/plain.pth']
        (_cache(torch_home) / 'plain.pth.url').unlink()  # as if placed there by hand
        assert 'backbone.patch_embed.projection.weight' in CheckpointLoader.load_checkpoint(second)['state_dict']


@pytest.mark.parametrize('name', ['hostile', 'hostile_hashed'])
def test_a_hostile_download_is_refused_deleted_and_not_cached(files, torch_home, name):
    with serving(files['folder']) as served:
        url = served(files[name].name)
        with pytest.raises(
            UnsafeCheckpointError,
            match=rf'{url} \(downloaded\) was refused: unpickling stopped: the '
            r'checkpoint calls getattr.*the download was deleted and not '
            r'cached',
        ):
            CheckpointLoader.load_checkpoint(url, map_location='cpu')
        backbone = MAFormer(
            arch=dict(embed_dims=16, depths=(1, 1, 2, 1), num_heads=(1, 2, 2, 4)),
            init_cfg=dict(type='Pretrained', checkpoint=url),
        )
        with pytest.raises(UnsafeCheckpointError, match=rf'{url} \(downloaded\) was refused'):
            backbone.init_weights()
    assert not files['marker'].exists()
    assert list(_cache(torch_home).iterdir()) == []


def test_the_hash_a_name_carries_is_verified(files, torch_home):
    assert hash_prefix('resnet50-0676ba61.pth') == '0676ba61' and hash_prefix('epoch-12.pth') is None
    with serving(files['folder']) as served:
        url = served('maformer-00000000.pth')
        with pytest.raises(
            UnsafeCheckpointError,
            match=rf'{url} \(downloaded\) was refused: its SHA-256 is '
            rf'{_sha8(files["good"])}\.\.\., but its name says '
            r'00000000\.\.\.',
        ):
            CheckpointLoader.load_checkpoint(url)
    assert list(_cache(torch_home).iterdir()) == []


def test_a_poisoned_file_in_torch_hubs_cache_is_refused_for_a_hub_name(files, torch_home):
    """`torchvision://resnet50` (mmdet's R-50 configs) with no network: the cached file is read, never trusted."""
    from mmengine.runner.checkpoint import get_torchvision_models

    name = Path(get_torchvision_models()['resnet50']).name
    _cache(torch_home).mkdir(parents=True)
    poisoned = shutil.copy(files['hostile'], _cache(torch_home) / name)
    with pytest.raises(
        UnsafeCheckpointError,
        match=rf'{poisoned} \(torch hub\'s cache of .*{name}\) was refused: '
        r'its SHA-256 is',
    ):
        CheckpointLoader.load_checkpoint('torchvision://resnet50')
    assert not files['marker'].exists()


def test_open_mmlab_names_are_fetched_and_cached_through_the_same_checks(files, torch_home, tmp_path, monkeypatch):
    """MMENGINE_HOME/open_mmlab.json adds names to mmengine's table; a cached file whose name carries no hash is
    refused by its content."""
    monkeypatch.setenv('MMENGINE_HOME', str(tmp_path / 'mmengine_home'))
    (tmp_path / 'mmengine_home').mkdir()
    with serving(files['folder']) as served:
        table = {'maformer_good': served(files['good'].name), 'maformer_hostile': served(files['hostile'].name)}
        (tmp_path / 'mmengine_home' / 'open_mmlab.json').write_text(json.dumps(table))
        with pytest.raises(UnsafeCheckpointError, match=r'hostile\.pth \(downloaded\) was refused'):
            CheckpointLoader.load_checkpoint('open-mmlab://maformer_hostile')
        loaded = CheckpointLoader.load_checkpoint('openmmlab://maformer_good')
    assert loaded['meta']['epoch'] == 1
    shutil.copy(files['hostile'], _cache(torch_home) / 'hostile.pth')
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"hostile\.pth was refused: unpickling stopped.*It is torch hub's "
        r'cached copy of .*delete it to download the file again',
    ):
        CheckpointLoader.load_checkpoint('open-mmlab://maformer_hostile')
    assert not files['marker'].exists()


def test_mmcls_names_give_the_backbone_keys_after_the_checks(files, torch_home, monkeypatch):
    import mmengine.runner.checkpoint as mmengine_checkpoint

    with serving(files['folder']) as served:
        monkeypatch.setattr(
            mmengine_checkpoint,
            'get_mmcls_models',
            lambda: {'maformer': served('plain.pth'), 'hostile': served('hostile.pth')},
        )
        loaded = CheckpointLoader.load_checkpoint('mmcls://maformer')
        with pytest.raises(UnsafeCheckpointError, match=r'hostile\.pth \(downloaded\) was refused'):
            CheckpointLoader.load_checkpoint('mmcls://hostile')
    assert set(loaded['state_dict']) == set(files['model'].state_dict())  # 'backbone.' removed, as mmengine does
    assert not files['marker'].exists()


def test_object_storage_bytes_are_read_through_the_same_checks(files, monkeypatch):
    """s3:// and petrel:// (the petrel client is not installed here: its file backend is stood in for)."""
    import mmengine.fileio

    class Backend:
        def get(self, filepath):
            return files['hostile'].read_bytes() if 'hostile' in filepath else files['good'].read_bytes()

    monkeypatch.setattr(mmengine.fileio, 'get_file_backend', lambda *args, **kwargs: Backend())
    with pytest.raises(UnsafeCheckpointError, match=r's3://bucket/hostile\.pth was refused: unpickling stopped'):
        CheckpointLoader.load_checkpoint('s3://bucket/hostile.pth')
    assert CheckpointLoader.load_checkpoint('cluster:s3://bucket/good.pth')['meta']['iter'] == 2
    assert not files['marker'].exists()


def test_an_inferencers_weights_by_url_are_refused_before_a_model_is_built(files, torch_home):
    from mmdet.apis import DetInferencer

    with serving(files['folder']) as served:
        url = served(files['hostile'].name)
        with pytest.raises(UnsafeCheckpointError, match=rf'{url} \(downloaded\) was refused'):
            DetInferencer(model=str(DEMO_DET_CONFIG), weights=url, device='cpu')
    assert not files['marker'].exists() and list(_cache(torch_home).iterdir()) == []
