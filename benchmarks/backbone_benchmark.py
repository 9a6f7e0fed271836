"""MAFormer against mmdet's Swin, measured in one process, interleaved.

For each input size: FLOPs (multiply-adds, attention counted), the median latency of inference
(eval, no grad) and of a training step (forward + backward), images per second, time per FLOP as a
ratio to the Swin of the same size class, and the peak memory of a training step (on CPU the peak
resident memory of a fresh subprocess above its level before the step; on CUDA
`max_memory_allocated`). Also: `with_cp` memory/time for MAFormer-S (memory also above weights and
gradients, which is what checkpointing lowers), bf16 autocast, and the ViTDet-style window mode of
MAFormer-T. Writes a Markdown table and a PNG plot of latency against size.

    python -m benchmarks.backbone_benchmark                      # CPU (and CUDA when present)
    python -m benchmarks.backbone_benchmark --sizes 224 --repeats 2
"""

import argparse
import json
import os
import os.path as osp
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

import maformer_mm  # noqa: F401
from maformer_mm.analysis.complexity import complexity
from maformer_mm.models import MAFormer

HERE = osp.dirname(osp.abspath(__file__))
# Stage-3 windows of 14 (as ViTDet on a 1/16 map) with every seventh block global.
VITDET_T = dict(vit_window_size=14, vit_global_blocks=(6, 13, 20))


def build(name: str, with_cp: bool = False) -> nn.Module:
    """The benchmarked backbones, without stochastic depth so every run does the same work."""
    from mmdet.models.backbones import SwinTransformer

    builders: Dict[str, Callable[[], nn.Module]] = {
        'MAFormer-T': lambda: MAFormer(arch='tiny', drop_path_rate=0.0, with_cp=with_cp),
        'MAFormer-T (win)': lambda: MAFormer(arch='tiny', drop_path_rate=0.0, with_cp=with_cp, **VITDET_T),
        'MAFormer-S': lambda: MAFormer(arch='small', drop_path_rate=0.0, with_cp=with_cp),
        'Swin-T': lambda: SwinTransformer(
            embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.0, with_cp=with_cp
        ),
        'Swin-S': lambda: SwinTransformer(
            embed_dims=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.0, with_cp=with_cp
        ),
    }
    return builders[name]()


REFERENCE = {
    'MAFormer-T': 'Swin-T',
    'MAFormer-T (win)': 'Swin-T',
    'MAFormer-S': 'Swin-S',
    'Swin-T': 'Swin-T',
    'Swin-S': 'Swin-S',
}


def _sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def infer_step(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        model(x)


def train_step(model: nn.Module, x: torch.Tensor, keep_grads: bool = False) -> None:
    sum(o.float().mean() for o in model(x)).backward()
    model.zero_grad(set_to_none=not keep_grads)


def timed(fn: Callable, model: nn.Module, x: torch.Tensor, device: str) -> float:
    _sync(device)
    start = time.perf_counter()
    fn(model, x)
    _sync(device)
    return time.perf_counter() - start


def interleaved_latency(
    names: Sequence[str], hw: Tuple[int, int], repeats: int, device: str, mode: str
) -> Dict[str, float]:
    """Median seconds per call of each model, the models taking turns in every round."""
    models = {n: build(n).to(device) for n in names}
    for m in models.values():
        m.train(mode == 'train')
    x = torch.rand(1, 3, *hw, device=device)
    fn = train_step if mode == 'train' else infer_step
    for _ in range(2):  # warm-up: first calls at a new shape pay one-off allocation and kernel set-up
        for model in models.values():
            timed(fn, model, x, device)
    samples: Dict[str, List[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name, model in models.items():
            samples[name].append(timed(fn, model, x, device))
    return {n: statistics.median(v) for n, v in samples.items()}


def peak_memory_mib(name: str, hw: Tuple[int, int], with_cp: bool, device: str, above_grads: bool = False) -> float:
    """Peak memory of one training step, measured in a fresh process. `above_grads`: the rise above a
    model whose gradient buffers already exist, i.e. activations and temporaries only; on CPU glibc's mmap
    threshold is then fixed so that freed tensors leave the resident set and the number is repeatable."""
    code = (
        f'from benchmarks.backbone_benchmark import _child_peak; '
        f'print(_child_peak({name!r}, {tuple(hw)!r}, {with_cp!r}, {device!r}, {above_grads!r}))'
    )
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536') if above_grads else None
    out = subprocess.run(
        [sys.executable, '-c', code], cwd=osp.dirname(HERE), capture_output=True, text=True, check=True, env=env
    ).stdout
    return float(out.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: now, VmHWM: peak of this process image) in MiB.
    ru_maxrss would not do: Linux carries it over from the parent across fork and exec."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f'{field} not in /proc/self/status')


def _reset_peak(device: str) -> float:
    """Starts a new peak-memory window and returns the current level (MiB)."""
    if device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    with open('/proc/self/clear_refs', 'w') as f:  # '5' resets VmHWM to VmRSS
        f.write('5')
    return _status_mib('VmRSS')


def _child_peak(name: str, hw: Tuple[int, int], with_cp: bool, device: str, above_grads: bool = False) -> float:
    model = build(name, with_cp=with_cp).to(device)
    model.train()  # mmdet's Swin.train() returns None: no chaining
    x = torch.rand(1, 3, *hw, device=device)
    if above_grads:
        train_step(model, x, keep_grads=True)
    base = _reset_peak(device)
    train_step(model, x)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device == 'cuda' else _status_mib('VmHWM')
    return peak - base


def parse_size(text: str) -> Tuple[int, int]:
    h, _, w = text.partition('x')
    return int(h), int(w or h)


def bf16_check(device: str) -> str:
    model = build('MAFormer-T').to(device)
    model.eval()
    with torch.no_grad(), torch.autocast(device_type=device, dtype=torch.bfloat16):
        outs = model(torch.rand(1, 3, 512, 512, device=device))
    ok = all(o.dtype == torch.bfloat16 and torch.isfinite(o.float()).all() for o in outs)
    return 'works (bf16 outputs, all finite)' if ok else 'FAILED'


def run(
    sizes: Sequence[Tuple[int, int]],
    repeats: int,
    device: str,
    names: Sequence[str],
    partial: Optional[str] = None,
    cp_size: Optional[Tuple[int, int]] = None,
) -> dict:
    """All measurements on one device; after each size the rows so far are saved to `partial` (JSON).
    `with_cp` is measured at `cp_size` (default: the largest size)."""
    results: dict = dict(device=device, sizes=[list(s) for s in sizes], rows=[])
    torch.manual_seed(0)
    for hw in sizes:
        flops = {n: complexity(build(n), (torch.rand(1, 3, *hw),))[0] for n in names}
        infer = interleaved_latency(names, hw, repeats, device, 'eval')
        train = interleaved_latency(names, hw, repeats, device, 'train')
        for n in names:
            ref = REFERENCE[n]
            per_flop = (train[n] / flops[n]) / (train[ref] / flops[ref])
            results['rows'].append(
                dict(
                    model=n,
                    size=list(hw),
                    gflops=flops[n] / 1e9,
                    infer_s=infer[n],
                    train_s=train[n],
                    infer_ips=1 / infer[n],
                    time_ratio=infer[n] / infer[ref],
                    infer_time_per_flop_ratio=(infer[n] / flops[n]) / (infer[ref] / flops[ref]),
                    train_time_per_flop_ratio=per_flop,
                )
            )
        print(f'done {hw}', flush=True)
        if partial:
            with open(partial, 'w') as f:
                json.dump(results, f, indent=1)
    big = max(sizes, key=lambda s: s[0] * s[1])
    results['memory'] = {n: peak_memory_mib(n, big, False, device) for n in names}
    cp_hw = cp_size or big
    cp = interleaved_cp(cp_hw, repeats, device)
    cp['peak_mib'] = peak_memory_mib('MAFormer-S', cp_hw, True, device)
    cp['peak_mib_ref'] = (results['memory'].get('MAFormer-S') if cp_hw == big else None) or peak_memory_mib(
        'MAFormer-S', cp_hw, False, device
    )
    # What checkpointing changes: the peak above weights and gradients (repeatable; grads dominate small inputs).
    cp['activation_mib'] = peak_memory_mib('MAFormer-S', cp_hw, True, device, above_grads=True)
    cp['activation_mib_ref'] = peak_memory_mib('MAFormer-S', cp_hw, False, device, above_grads=True)
    results['with_cp'] = cp
    results['bf16'] = bf16_check(device)
    return results


def interleaved_cp(hw: Tuple[int, int], repeats: int, device: str) -> dict:
    plain, ckpt = build('MAFormer-S').to(device), build('MAFormer-S', with_cp=True).to(device)
    plain.train()
    ckpt.train()
    x = torch.rand(1, 3, *hw, device=device)
    timed(train_step, plain, x, device), timed(train_step, ckpt, x, device)
    a, b = [], []
    for _ in range(repeats):
        a.append(timed(train_step, plain, x, device))
        b.append(timed(train_step, ckpt, x, device))
    return dict(size=list(hw), train_s=statistics.median(a), train_s_cp=statistics.median(b))


def markdown(res: dict, hardware: str) -> str:
    lines = [
        f'# Backbone benchmark ({res["device"]})',
        '',
        f'Hardware: {hardware}. Batch 1, median of the '
        'interleaved runs. FLOPs = multiply-adds with attention counted. Ratios are against the Swin of the '
        'same size class (T: Swin-T, S: Swin-S), measured in the same run.',
        '',
        '| model | input | GFLOPs | inference (s) | img/s | train step (s) | time ratio | '
        'time/FLOP ratio (inference) | time/FLOP ratio (train) |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in res['rows']:
        lines.append(
            f'| {r["model"]} | {r["size"][0]}x{r["size"][1]} | {r["gflops"]:.1f} | {r["infer_s"]:.3f} | '
            f'{r["infer_ips"]:.2f} | {r["train_s"]:.3f} | {r["time_ratio"]:.2f} | '
            f'{r["infer_time_per_flop_ratio"]:.2f} | {r["train_time_per_flop_ratio"]:.2f} |'
        )
    cp = res['with_cp']
    big = f'{cp["size"][0]}x{cp["size"][1]}'
    lines += [
        '',
        f'Training-step peak memory at {big} (MiB): '
        + ', '.join(f'{n} {m:.0f}' for n, m in res['memory'].items())
        + '.',
        '',
        f'`with_cp` on MAFormer-S at {big}: peak memory {cp["peak_mib_ref"]:.0f} -> {cp["peak_mib"]:.0f} MiB '
        f'({100 * (1 - cp["peak_mib"] / cp["peak_mib_ref"]):.0f}% less; above weights and gradients '
        f'{cp["activation_mib_ref"]:.0f} -> {cp["activation_mib"]:.0f} MiB, '
        f'{100 * (1 - cp["activation_mib"] / cp["activation_mib_ref"]):.0f}% less), training step '
        f'{cp["train_s"]:.2f} -> '
        f'{cp["train_s_cp"]:.2f} s ({100 * (cp["train_s_cp"] / cp["train_s"] - 1):+.0f}%).',
        '',
        f'bf16 autocast ({res["device"]}): {res["bf16"]}.',
        '',
    ]
    return '\n'.join(lines)


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r['model'] for r in res['rows']):
        rows = [r for r in res['rows'] if r['model'] == name]
        ax.plot([r['size'][0] * r['size'][1] / 1e6 for r in rows], [r['infer_s'] for r in rows], 'o-', label=name)
    ax.set_xlabel('input pixels (millions)')
    ax.set_ylabel(f'inference latency (s, batch 1, {res["device"]})')
    ax.set_xscale('log')
    ax.set_yscale('log')
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def hardware_name(device: str) -> str:
    if device == 'cuda':
        return f'{torch.cuda.get_device_name()}, torch {torch.__version__}'
    return f'{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}'


def benchmark_devices() -> List[str]:
    return ['cpu'] + (['cuda'] if torch.cuda.is_available() else [])


def write_report(path: str, sections: List[str]) -> None:
    """Writes the devices' Markdown sections to `path` (saying so when there was no GPU) and prints them."""
    if 'cuda' not in benchmark_devices():
        sections = sections + ['No GPU was available: CPU timings only.\n']
    with open(path, 'w') as f:
        f.write('\n'.join(sections))
    print('\n'.join(sections))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', nargs='+', default=['224', '512', '800x1216'], help='H or HxW')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--models', nargs='+', default=list(REFERENCE))
    parser.add_argument('--out', default=osp.join(HERE, 'results.md'))
    parser.add_argument(
        '--cp-size', type=parse_size, help='H or HxW for the with_cp measurement (default: the largest of --sizes)'
    )
    args = parser.parse_args(argv)
    sizes = [parse_size(s) for s in args.sizes]
    sections = []
    for device in benchmark_devices():
        stem = osp.splitext(args.out)[0] + f'_{device}'
        res = run(sizes, args.repeats, device, args.models, stem + '.partial.json', args.cp_size)
        sections.append(markdown(res, hardware_name(device)))
        with open(stem + '.json', 'w') as f:
            json.dump(res, f, indent=1)
        os.remove(stem + '.partial.json')
        plot(res, stem + '.png')
    write_report(args.out, sections)


if __name__ == '__main__':
    main()
