"""Files that are no checkpoint, or not the one asked for, are refused in the project's words: the file's name, the
real reason and what to do; never torch's internals, a raw pattern or advice that contradicts what the user gave."""

import gzip
import hashlib
import zipfile

import pytest
import torch
from mmengine.runner import CheckpointLoader

import maformer_mm  # noqa: F401  (mmengine's loaders are maformer_mm's)
from maformer_mm.checkpoint.remote import read_checkpoint
from maformer_mm.checkpoint.safe_load import UnsafeCheckpointError, load_mmengine_checkpoint, load_weights
from maformer_mm.models import MAFormer
from tests.helpers import TINY_CFG

_GOOD = {'meta': {'epoch': 1}, 'state_dict': {'w': torch.arange(4.0)}}


def _good(tmp_path):
    path = tmp_path / 'good.pth'
    torch.save(_GOOD, path)
    return path


def _with_extra_entry(source, target, name: str):
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, 'w') as out:
        for entry in archive.namelist():
            out.writestr(entry, archive.read(entry))
        out.writestr(name, b'x')
    return target


def _kinds(tmp_path):
    good = _good(tmp_path)
    data = good.read_bytes()
    files = {
        'empty': b'',
        'html': b'<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>\n',
        'gzip': gzip.compress(data),
        'truncated': data[: len(data) // 2],
        'text': b'version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n',
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f'{name}.pth'
        paths[name].write_bytes(content)
    paths['other_folder'] = _with_extra_entry(good, tmp_path / 'other_folder.pth', 'other/evil.txt')
    paths['top_level'] = _with_extra_entry(good, tmp_path / 'top_level.pth', 'evil.txt')
    paths['plain_zip'] = tmp_path / 'plain_zip.pth'
    with zipfile.ZipFile(paths['plain_zip'], 'w') as archive:
        archive.writestr('weights/readme.txt', b'not torch')
    return paths


REASONS = {
    'empty': r'it is empty \(0 bytes\): an interrupted download or copy\?\. Fetch or copy the file again',
    'html': r'it is an HTML or XML page \(it starts with "<!doctype html>"\), not a checkpoint.*Download the file',
    'gzip': r'it is gzip-compressed.*Decompress it \(gunzip\) and give the checkpoint inside',
    'truncated': r'it is a truncated or damaged zip archive.*cut short while it was written, downloaded or copied',
    'text': r'it is not a torch checkpoint \(a zip archive or a pickle\); it starts with "version https://"',
    'other_folder': r'it is a zip archive but not a torch checkpoint.*\(other/evil.txt\)',
    'top_level': r'it is a zip archive but not a torch checkpoint.*\(evil.txt\)',
    'plain_zip': r'it is a zip archive but not a torch checkpoint.*\(weights/readme.txt\)',
}


@pytest.mark.parametrize('kind', list(REASONS))
def test_each_kind_of_wrong_file_is_named_with_its_reason(tmp_path, kind):
    path = _kinds(tmp_path)[kind]
    for load in (load_weights, load_mmengine_checkpoint, lambda p: CheckpointLoader.load_checkpoint(str(p))):
        with pytest.raises(UnsafeCheckpointError, match=rf'{path} was refused: {REASONS[kind]}') as error:
            load(path)
        message = str(error.value)
        for internal in (
            'enforce fail',
            'inline_container',
            'miniz',
            'Unsupported operand',
            'EOFError',
            'weights_only',
        ):
            assert internal not in message, message
        if kind in ('empty', 'truncated'):
            assert 'a training checkpoint of mmengine' not in message  # they gave one: the file is damaged


def test_an_unregistered_prefix_names_the_registered_ones_by_name():
    with pytest.raises(FileNotFoundError) as error:
        CheckpointLoader.load_checkpoint('mmpretrain://resnet50')
    message = str(error.value)
    assert 'no checkpoint loader is registered for its prefix mmpretrain://' in message
    assert 'https://' in message and 's3://' in message and 'open-mmlab://' in message
    assert '\\S' not in message and '(' not in message.split('prefixes are')[1].split(' (s3://')[0]


def test_a_full_sha256_is_checked_on_every_reader(tmp_path):
    """`read_checkpoint(..., sha256=)` (tools/test.py and tools/infer.py --checkpoint-sha256) and `sha256=` in the
    backbone's init_cfg: the right digest loads, another is refused naming both, a malformed one is a ValueError."""
    path = _good(tmp_path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(read_checkpoint(str(path), sha256=digest.upper())['state_dict']['w'], torch.arange(4.0))
    with pytest.raises(UnsafeCheckpointError, match=rf'its SHA-256 is {digest}, not the {"0" * 64} you gave'):
        read_checkpoint(str(path), sha256='0' * 64)
    with pytest.raises(ValueError, match=r"sha256 'abc' is not a SHA-256: give its 64 hex digits"):
        read_checkpoint(str(path), sha256='abc')
    weights = tmp_path / 'backbone.pth'
    model = MAFormer(**TINY_CFG)
    torch.save(model.state_dict(), weights)
    right = hashlib.sha256(weights.read_bytes()).hexdigest()
    MAFormer(**TINY_CFG, init_cfg=dict(type='Pretrained', checkpoint=str(weights), sha256=right)).init_weights()
    wrong = MAFormer(**TINY_CFG, init_cfg=dict(type='Pretrained', checkpoint=str(weights), sha256='f' * 64))
    with pytest.raises(UnsafeCheckpointError, match=rf'backbone.pth was refused: its SHA-256 is {right}'):
        wrong.init_weights()


def test_the_tools_check_checkpoint_sha256(tmp_path):
    from maformer_mm.tools import test as test_tool

    with pytest.raises(SystemExit):
        test_tool.parse_args(['config.py', 'ckpt.pth', '--checkpoint-sha256', 'xyz'])
    args = test_tool.parse_args(['config.py', 'ckpt.pth', '--checkpoint-sha256', 'A' * 64])
    assert args.checkpoint_sha256 == 'a' * 64
