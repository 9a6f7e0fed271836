"""A training or test run of a config: the checks before it, the device, the Runner and a clean end.

The tools build the config from their command line (`tools/cli.py`) and call `train` or `test` here; so do the
demos and the notebook through the tools. The checks before a run (`config.preflight`, the pretrained files, the
layer-decay constructor, the checkpoint's classes) stop it before the Runner is built, naming what is wrong.
"""

import itertools
import os
import os.path as osp
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..checkpoint.classes import check_checkpoint_classes, check_checkpoint_fits
from ..checkpoint.remote import expected_sha256
from ..config.classes import dataset_classes, leaf_datasets
from ..config.data_root import CocoLayout
from ..config.preflight import check_data
from ..config.pretrained import check_pretrained_files
from ..datasets.coco_checks import coco_dataset_paths, id_sorted_names
from .checkpointing import use_safe_checkpoints
from .launch import closing_process_group, prepare_launcher
from .layer_decay import check_layer_decay_constructor

__all__ = ['default_device', 'parse_device', 'on_device', 'build_runner', 'train', 'test', 'test_onnx']

_RUNS = itertools.count()  # numbers each run's visualizer (build_runner)


def default_device() -> str:
    """`cuda` where torch sees a GPU, else `cpu` (the `--device` default of every tool)."""
    return 'cuda' if torch.cuda.is_available() else 'cpu'


def parse_device(device: str) -> torch.device:
    """`--device` as a torch.device; ValueError naming the value when it is not a usable cpu/cuda device."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f'--device {device!r} is not a device (expected cpu, cuda or cuda:N): {error}') from None
    if parsed.type not in ('cpu', 'cuda'):
        raise ValueError(f'--device {device!r}: only cpu and cuda devices are supported')
    if parsed.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(
                f'--device {device!r}: CUDA is not available on this machine '
                '(torch.cuda.is_available() is False); use --device cpu'
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(f'--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)')
    return parsed


@contextmanager
def on_device(device: torch.device) -> Iterator[None]:
    """Makes mmengine place the model (and map resumed checkpoints) on `device` for the duration.

    mmengine's Runner moves the model to `mmengine.device.get_device()`, which returns the module-level
    `DEVICE` chosen once at import (cuda whenever torch sees a GPU) and offers no setting; `cuda:N`
    becomes the current CUDA device, so that mmengine's plain `cuda` means it.
    """
    import mmengine.device.utils as mmengine_device

    previous = mmengine_device.DEVICE
    mmengine_device.DEVICE = device.type
    if device.type == 'cuda' and device.index is not None:
        torch.cuda.set_device(device.index)
    try:
        yield
    finally:
        mmengine_device.DEVICE = previous


def build_runner(cfg: Config) -> Runner:
    """The config's Runner (its `runner_type` if it names one), with a visualizer of its own.

    mmdet's and mmseg's runtime bases name the visualizer 'visualizer', and mmengine builds a named visualizer
    once per process (`ManagerMixin.get_instance`): a second run in the same process (the demos train and then
    test, so do notebooks and the tests) would log its scalars and draw into the first run's folder. A name per
    run gives each its own.
    """
    if isinstance(cfg.get('visualizer'), dict):
        cfg.visualizer['name'] = f'{cfg.visualizer.get("name", "visualizer")}_{os.getpid()}_{next(_RUNS)}'
    return RUNNERS.build(cfg) if 'runner_type' in cfg else Runner.from_cfg(cfg)


def _log(runner: Runner, layout: Optional[CocoLayout], notes: Sequence[Tuple[str, int]], extra: Sequence[str]) -> None:
    if layout is not None:
        runner.logger.info(layout.summary())
    for note, level in notes:
        runner.logger.log(level, note)
    for line in extra:
        runner.logger.info(line)


def train(
    cfg: Config,
    device: torch.device,
    source: str,
    layout: Optional[CocoLayout] = None,
    notes: Sequence[str] = (),
) -> Runner:
    """Checks `cfg` (read from `source`) and trains it on `device`; returns the finished Runner. `notes` are
    logged into the run's log (what the command line changed)."""
    check_layer_decay_constructor(cfg)  # mmdet's/mmseg's own would fail with a bare NotImplementedError
    checks = check_data(cfg, ('train', 'val'), log=False)
    check_pretrained_files(cfg.model, source)
    use_safe_checkpoints(cfg)  # a kill while saving leaves no truncated checkpoint; --resume skips one
    prepare_launcher(cfg)
    with closing_process_group() as hold, on_device(device):
        runner = hold(build_runner(cfg))
        _log(runner, layout, checks, notes)
        runner.train()
    return runner


def test(
    cfg: Config,
    checkpoint: str,
    device: torch.device,
    source: str,
    layout: Optional[CocoLayout] = None,
    sha256: Optional[str] = None,
    extra_metrics: Sequence[Any] = (),
) -> dict:
    """Evaluates `checkpoint` with `cfg` (read from `source`, its `load_from` set) on `device`: the data checked, the
    checkpoint's classes against the test data's, its tensors against the model; returns the metrics."""
    checks: List[Tuple[str, int]] = list(check_data(cfg, ('test',), log=False))
    if layout is not None:
        classes, data, id_order = layout.classes, f'--data-root {layout.root}', layout.id_order
    else:
        dataset = next(leaf_datasets(cfg.test_dataloader.dataset))
        classes = dataset_classes(dataset)
        data = f'the test data of {source}'
        id_order = id_sorted_names(coco_dataset_paths(dataset)[0], classes)
    from mmengine.runner.checkpoint import CheckpointLoader

    with expected_sha256(sha256):  # the Runner's load below reads the file again, also checked
        loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')  # maformer_mm's checked loader
    renamed = check_checkpoint_classes(loaded, checkpoint, classes, data, id_order)
    if renamed:
        checks.append((renamed, 30))
    prepare_launcher(cfg)  # joins the process group that the block below closes
    with closing_process_group() as hold, on_device(device), expected_sha256(sha256):
        runner = hold(build_runner(cfg))
        _log(runner, layout, checks, ())
        check_checkpoint_fits(runner.model, loaded, checkpoint, classes, data)
        del loaded  # the Runner loads it into the model itself
        runner.test_evaluator.metrics.extend(extra_metrics)
        return runner.test()


def test_onnx(cfg: Config, model: str, out: Optional[str] = None) -> dict:
    """Evaluates a detector exported whole to ONNX (`model`) on `cfg`'s test set in ONNX Runtime (CPU), scored by the
    config's own metric after the same data checks as `test`; with `out` (.pkl) also writes the predictions. The
    images are prepared and the masks pasted by the standalone runner (`deploy/evaluate.py`)."""
    if not osp.isfile(model):
        raise FileNotFoundError(f'ONNX file not found: {model}')
    if not model.endswith('.onnx'):
        raise ValueError(f'--backend onnxruntime takes a .onnx file (tools/deploy/export_onnx.py), got {model}')
    if out and not out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out must be a .pkl or .pickle file with --backend onnxruntime, got {out}')
    check_data(cfg, ('test',))
    from ..deploy.evaluate import evaluate_onnx  # onnxruntime: needed only here

    return evaluate_onnx(cfg, model, out)
