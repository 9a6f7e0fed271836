"""MAFormer on a GPU against mmdet's Swin, measured in one process, in fp32 and under AMP.

Backbones (MAFormer-T/S against Swin-T/S): images per second of inference (no grad) and of a training
step (forward + backward), and the peak memory of a training step, at 224x224 (batch 64) and 800x1333
(batch 2). Mask R-CNN (MAFormer-T with global and with window attention, against Swin-T, each built from
its config): seconds per training iteration at 1333x800 with batch 2 (data preprocessing, forward, losses,
backward and the config's AdamW step, through `model.train_step`). AMP is fp16 autocast; the detectors use
mmengine's AmpOptimWrapper with dynamic loss scaling, as `tools/train.py --amp` trains. The models take
turns in every round, warm-up rounds come first, every call is synchronised, and memory is
`torch.cuda.max_memory_allocated` above what was allocated before the call (weights, optimizer state).
Also reports which SDPA kernel each MAFormer attention runs. Writes a Markdown report headed by the GPU
model and the numbers as JSON.

    python -m benchmarks.cuda_benchmark                   # on a GPU: benchmarks/cuda_results.{md,json}
    python -m benchmarks.cuda_benchmark --device cpu --backbone-sizes 64:2 --det-size 96x128 --precisions fp32

`--device cpu` is a smoke run of the same code at small sizes: AMP is bf16 there (BF16OptimWrapper on
the backbone, as `tools/train.py --amp` does without a GPU; bf16 is slow on CPUs without bf16 units) and
memory is not measured.
"""

import argparse
import json
import os.path as osp
import statistics
import time
from collections import defaultdict
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.backbone_benchmark import REFERENCE, build, hardware_name, parse_size
from benchmarks.dense_cost import TASKS
from benchmarks.dense_cost import build as build_from_config
from maformer_mm.layers import Attention, CrossAttention, WindowAttention

HERE = osp.dirname(osp.abspath(__file__))
BACKBONES = ('MAFormer-T', 'MAFormer-S', 'Swin-T', 'Swin-S')
# Row name -> config of the detectors (dense_cost's Mask R-CNN rows); the last one is the reference.
DETECTORS = {name.replace('Mask R-CNN ', ''): config for name, config in TASKS['det'][2].items()}
DET_REFERENCE = 'Swin-T'
PRECISIONS = ('fp32', 'amp')
ATTENTIONS = {WindowAttention: 'window', CrossAttention: 'cross', Attention: 'global'}


def amp_dtype(device: str) -> torch.dtype:
    """fp16 on GPUs (as mmengine's AmpOptimWrapper); bf16 where fp16 autocast is not what training uses."""
    return torch.float16 if device == 'cuda' else torch.bfloat16


def autocast(precision: str, device: str):
    return nullcontext() if precision == 'fp32' else torch.autocast(device_type=device, dtype=amp_dtype(device))


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def measure(fn: Callable[[], None], device: str) -> Tuple[float, Optional[float]]:
    """(seconds, peak MiB above the memory allocated before the call; None off CUDA) of one call."""
    _sync(device)
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    fn()
    _sync(device)
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == 'cuda' else None
    return seconds, peak


def interleaved(calls: Dict[str, Callable[[], None]], warmup: int, repeats: int, device: str) -> Dict[str, dict]:
    """name -> median seconds and largest peak memory of its call, the calls taking turns in every round."""
    samples: Dict[str, List[Tuple[float, Optional[float]]]] = defaultdict(list)
    for round_ in range(warmup + repeats):
        for name, fn in calls.items():
            result = measure(fn, device)
            if round_ >= warmup:
                samples[name].append(result)
    return {
        name: dict(
            seconds=statistics.median(s for s, _ in runs),
            peak_mib=None if runs[0][1] is None else max(m for _, m in runs),
        )
        for name, runs in samples.items()
    }


# ------------------------------------------------------------------------------------------ backbones
def backbone_calls(
    models: Dict[str, nn.Module], x: torch.Tensor, precision: str, device: str
) -> Tuple[Dict[str, Callable], Dict[str, Callable]]:
    """(inference calls, training-step calls) of each backbone on the batch `x`."""

    def infer(model: nn.Module) -> Callable[[], None]:
        def call() -> None:
            model.eval()
            with torch.no_grad(), autocast(precision, device):
                model(x)

        return call

    def train(model: nn.Module) -> Callable[[], None]:
        def call() -> None:
            model.train()
            with autocast(precision, device):
                loss = sum(o.float().mean() for o in model(x))
            loss.backward()
            model.zero_grad(set_to_none=True)

        return call

    return {n: infer(m) for n, m in models.items()}, {n: train(m) for n, m in models.items()}


def measure_backbones(
    names: Sequence[str],
    sizes: Sequence[Tuple[int, int, int]],
    precisions: Sequence[str],
    warmup: int,
    repeats: int,
    device: str,
) -> List[dict]:
    """One row per backbone, size (H, W, batch) and precision."""
    models = {n: build(n).to(device) for n in names}
    rows = []
    for h, w, batch in sizes:
        x = torch.rand(batch, 3, h, w, device=device)
        for precision in precisions:
            infer_calls, train_calls = backbone_calls(models, x, precision, device)
            infer = interleaved(infer_calls, warmup, repeats, device)
            train = interleaved(train_calls, warmup, repeats, device)
            for n in names:
                rows.append(
                    dict(
                        model=n,
                        size=[h, w],
                        batch=batch,
                        precision=precision,
                        infer_ips=batch / infer[n]['seconds'],
                        train_ips=batch / train[n]['seconds'],
                        infer_peak_mib=infer[n]['peak_mib'],
                        train_peak_mib=train[n]['peak_mib'],
                    )
                )
    add_ratios(
        rows,
        lambda r: REFERENCE[r['model']],
        ('infer_ips', 'train_ips', 'train_peak_mib'),
        ('size', 'batch', 'precision'),
    )
    return rows


def add_ratios(rows: List[dict], reference: Callable[[dict], str], fields: Sequence[str], keys: Sequence[str]) -> None:
    """Adds `<field>_ratio` = row / its reference row (same `keys`) when the reference was measured."""
    index = {(r['model'], *(str(r[k]) for k in keys)): r for r in rows}
    for row in rows:
        ref = index.get((reference(row), *(str(row[k]) for k in keys)))
        for field in fields:
            ok = ref is not None and row[field] is not None and ref[field]
            row[f'{field}_ratio'] = row[field] / ref[field] if ok else None


# ---------------------------------------------------------------------------------------------- Mask R-CNN
def optim_wrapper_cfg(config_wrapper: dict, precision: str, device: str) -> dict:
    """The config's optimizer wrapper, switched to AMP as `tools/train.py --amp` switches it."""
    cfg = dict(config_wrapper)
    if precision == 'amp' and device == 'cuda':
        cfg.update(type='AmpOptimWrapper', loss_scale='dynamic')
    elif precision == 'amp':
        cfg.update(type='BF16OptimWrapper', scope='backbone', device_type=device)
    return cfg


def build_detector(config: str, precision: str, device: str) -> Tuple[nn.Module, object]:
    """A config's Mask R-CNN (random weights) in training mode on `device`, and its optimizer wrapper."""
    from mmengine.optim import build_optim_wrapper

    from maformer_mm.config.zoo import load_config

    model = build_from_config(config, 'mmdet').to(device)
    model.train()
    wrapper = build_optim_wrapper(model, optim_wrapper_cfg(load_config(config).optim_wrapper, precision, device))
    return model, wrapper


def detection_batch(hw: Tuple[int, int], batch: int, seed: int = 0) -> dict:
    """A batch of random images with random boxes and masks of COCO classes (mmdet's demo inputs)."""
    from mmdet.testing import demo_mm_inputs

    torch.manual_seed(seed)
    return demo_mm_inputs(
        batch_size=batch, image_shapes=[(3, *hw)] * batch, num_items=[8] * batch, num_classes=80, with_mask=True
    )


def train_step_call(model: nn.Module, wrapper, data: dict, losses: Dict[str, float], name: str) -> Callable[[], None]:
    """One training iteration of `model` through `model.train_step` (its loss goes to `losses[name]`)."""

    def call() -> None:
        log_vars = model.train_step(data, wrapper)
        losses[name] = torch.as_tensor(log_vars['loss']).item()

    return call


def measure_detectors(
    names: Sequence[str],
    hw: Tuple[int, int],
    batch: int,
    precisions: Sequence[str],
    warmup: int,
    repeats: int,
    device: str,
) -> List[dict]:
    """One row per detector and precision: seconds per training iteration, its peak memory, the last loss."""
    data = detection_batch(hw, batch)
    rows = []
    for precision in precisions:
        losses: Dict[str, float] = {}
        steps = {n: train_step_call(*build_detector(DETECTORS[n], precision, device), data, losses, n) for n in names}
        timings = interleaved(steps, warmup, repeats, device)
        steps.clear()  # frees this precision's detectors before the next ones are built
        for n in names:
            rows.append(
                dict(
                    model=n,
                    size=list(hw),
                    batch=batch,
                    precision=precision,
                    iter_s=timings[n]['seconds'],
                    peak_mib=timings[n]['peak_mib'],
                    loss=losses[n],
                )
            )
    add_ratios(rows, lambda r: DET_REFERENCE, ('iter_s', 'peak_mib'), ('precision',))
    return rows


# ------------------------------------------------------------------------------------------ SDPA kernels
class _KernelRecorder(TorchDispatchMode):
    """Records the attention kernels each MAFormer attention module runs (its class -> kernel names)."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Optional[List[str]] = None
        self.kernels: Dict[str, Set[str]] = defaultdict(set)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.current is not None:
            self.current.append(func.name().split('::')[-1])
        return func(*args, **(kwargs or {}))


def attention_kernels(model: nn.Module, x: torch.Tensor) -> Dict[str, Set[str]]:
    """'window' / 'cross' / 'global' -> the fused SDPA kernels that attention ran in one forward of `model(x)`,
    or {'math'} when it ran none (SDPA's math fallback, or the explicit path)."""
    recorder = _KernelRecorder()

    def enter(module: nn.Module, args: tuple) -> None:
        recorder.current = []

    def leave(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        fused = {op for op in recorder.current if op.startswith('_scaled_dot_product')}
        recorder.kernels[ATTENTIONS[type(module)]].update(fused or {'math'})
        recorder.current = None

    handles = []
    for module in model.modules():
        if type(module) in ATTENTIONS:
            handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        with recorder:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return dict(recorder.kernels)


def kernel_table(device: str, precisions: Sequence[str], hw: Tuple[int, int]) -> Dict[str, dict]:
    """'<precision> <training|inference>' -> attention -> kernels of MAFormer-T. In training the window
    attention's bias needs a gradient, which not every fused kernel gives (CPU flash attention does not)."""
    model = build('MAFormer-T').to(device).train()
    x = torch.rand(1, 3, *hw, device=device)
    table = {}
    for precision in precisions:
        for mode, grad in (('training', True), ('inference', False)):
            with torch.set_grad_enabled(grad), autocast(precision, device):
                table[f'{precision} {mode}'] = {k: sorted(v) for k, v in attention_kernels(model, x).items()}
    return table


# -------------------------------------------------------------------------------------------------- report
def _num(value: Optional[float], fmt: str) -> str:
    return '-' if value is None else format(value, fmt)


def markdown(res: dict) -> str:
    amp = 'fp16' if res['device'] == 'cuda' else 'bf16'
    lines = [
        f'# CUDA benchmark: {res["hardware"]}',
        '',
        f'Median of {res["repeats"]} interleaved rounds after {res["warmup"]} warm-up rounds, synchronised. '
        f'AMP: {amp} autocast (Mask R-CNN: {res["amp_wrapper"]}). Ratios are against the Swin of the same '
        'size class in the same run; memory is the peak of a training step above the weights (and '
        'optimizer state) already allocated.',
        '',
        '## Backbones',
        '',
        '| model | input | batch | precision | inference img/s | train img/s | train peak (MiB) | '
        'train img/s ratio | memory ratio |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in res['backbones']:
        lines.append(
            f'| {r["model"]} | {r["size"][0]}x{r["size"][1]} | {r["batch"]} | {r["precision"]} | '
            f'{r["infer_ips"]:.1f} | {r["train_ips"]:.1f} | {_num(r["train_peak_mib"], ".0f")} | '
            f'{_num(r["train_ips_ratio"], ".2f")} | {_num(r["train_peak_mib_ratio"], ".2f")} |'
        )
    det = res['detectors']
    if det:
        h, w = det[0]['size']
        lines += [
            '',
            f'## Mask R-CNN training iteration ({w}x{h}, batch {det[0]["batch"]})',
            '',
            '| model | precision | s/iteration | time ratio | peak (MiB) | memory ratio | loss |',
            '|---|---|---|---|---|---|---|',
        ]
        for r in det:
            lines.append(
                f'| Mask R-CNN {r["model"]} | {r["precision"]} | {r["iter_s"]:.3f} | '
                f'{_num(r["iter_s_ratio"], ".2f")} | {_num(r["peak_mib"], ".0f")} | '
                f'{_num(r["peak_mib_ratio"], ".2f")} | {r["loss"]:.3f} |'
            )
    lines += [
        '',
        '## SDPA kernels of MAFormer-T',
        '',
        '| precision, pass | window attention (float bias) | cross-attention | global attention |',
        '|---|---|---|---|',
    ]
    for run, kernels in res['kernels'].items():
        lines.append(
            f'| {run} | ' + ' | '.join(', '.join(kernels.get(a, ['-'])) for a in ('window', 'cross', 'global')) + ' |'
        )
    return '\n'.join(lines) + '\n'


def parse_batch_size(text: str) -> Tuple[int, int, int]:
    """'224:64' or '800x1333:2' -> (H, W, batch)."""
    size, _, batch = text.partition(':')
    return (*parse_size(size), int(batch or 1))


@contextmanager
def process_state_restored(device: str) -> Iterator[None]:
    """Restores what a run changes in the process (cuDNN's benchmark flag, the random generators of the CPU and,
    on CUDA, of the GPUs), so that a run from inside pytest leaves the tests after it as they were."""
    benchmark = torch.backends.cudnn.benchmark
    try:
        with torch.random.fork_rng(devices=None if device == 'cuda' else []):
            yield
    finally:
        torch.backends.cudnn.benchmark = benchmark


def run(args: argparse.Namespace) -> dict:
    """Every measurement of `main`, as the JSON it writes."""
    res = dict(
        device=args.device,
        hardware=hardware_name(args.device),
        warmup=args.warmup,
        repeats=args.repeats,
        amp_wrapper='AmpOptimWrapper, dynamic loss scale' if args.device == 'cuda' else 'BF16OptimWrapper',
    )
    sizes = [parse_batch_size(s) for s in args.backbone_sizes]
    res['kernels'] = kernel_table(args.device, args.precisions, sizes[0][:2])
    res['backbones'] = measure_backbones(args.backbones, sizes, args.precisions, args.warmup, args.repeats, args.device)
    res['detectors'] = measure_detectors(
        args.detectors,
        parse_size(args.det_size),
        args.det_batch,
        args.precisions,
        args.warmup,
        args.repeats,
        args.device,
    )
    return res


def main(argv: Optional[Sequence[str]] = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--backbones', nargs='+', default=list(BACKBONES), choices=list(REFERENCE))
    parser.add_argument('--backbone-sizes', nargs='+', default=['224:64', '800x1333:2'], help='HxW:batch')
    parser.add_argument('--detectors', nargs='*', default=list(DETECTORS), choices=list(DETECTORS))
    parser.add_argument('--det-size', default='800x1333', help='HxW of the Mask R-CNN images')
    parser.add_argument('--det-batch', type=int, default=2)
    parser.add_argument('--precisions', nargs='+', default=list(PRECISIONS), choices=list(PRECISIONS))
    parser.add_argument('--warmup', type=int, default=3)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--out', default=osp.join(HERE, 'cuda_results.md'))
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('no CUDA device: run this on a GPU machine (or `--device cpu` for a small smoke run)')
    with process_state_restored(args.device):
        torch.manual_seed(0)
        torch.backends.cudnn.benchmark = True  # convolutions: the fastest algorithm for the fixed sizes
        res = run(args)
    with open(osp.splitext(args.out)[0] + '.json', 'w') as f:
        json.dump(res, f, indent=1)
    text = markdown(res)
    with open(args.out, 'w') as f:
        f.write(text)
    print(text)
    return res


if __name__ == '__main__':
    main()
