"""What several parts of the package share (the tools, the benchmarks and the deploy code): FLOP counting."""

from .flops import complexity, flop_analyzer, model_complexity, sdpa_flop_jit, tensor_forward

__all__ = ['complexity', 'flop_analyzer', 'model_complexity', 'sdpa_flop_jit', 'tensor_forward']
