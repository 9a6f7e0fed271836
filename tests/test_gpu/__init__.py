"""GPU code paths. Tests marked `requires_cuda` run where CUDA is present and are skipped, with the reason,
where it is not; their CPU stand-ins run everywhere."""

import pytest
import torch

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU (torch.cuda.is_available() is False)'
)
