"""The console commands of an installed maformer_mm (`maformer-train`, ...; see setup.py).

Each runs a tool's `main()` and exits 0 when it returns; a tool's errors exit non-zero as usual. (A console
script passes `main()`'s return value to `sys.exit`, which would turn a returned Runner or metrics dict into
exit status 1.)
"""

from importlib import import_module
from typing import Callable

__all__ = [
    'train',
    'test',
    'infer',
    'export_onnx',
    'get_flops',
    'convert_checkpoint',
    'configs',
    'plot_curve',
    'demo',
    'demo_seg',
]


def _command(tool: str) -> Callable[[], int]:
    def run() -> int:
        import_module(f'{__package__}.{tool}').main()
        return 0

    run.__name__ = run.__qualname__ = tool
    run.__doc__ = f"Runs `python -m {__package__}.{tool}` with the command line's arguments."
    return run


train = _command('train')
test = _command('test')
infer = _command('infer')
export_onnx = _command('export_onnx')
get_flops = _command('get_flops')
convert_checkpoint = _command('convert_checkpoint')
configs = _command('configs')
plot_curve = _command('plot_curve')
demo = _command('demo')
demo_seg = _command('demo_seg')
