"""`torch.compile` (inductor, CPU) of the backbone gives eager mode's outputs: no graph-breaking state."""

import torch

from maformer_mm.models import MAFormer


def test_compiled_backbone_matches_eager(tiny_cfg):
    model = MAFormer(**tiny_cfg).eval()
    x = torch.randn(2, 3, 72, 56)  # padding in both window and merge paths
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager, fused = model(x), compiled(x)
    for a, b in zip(eager, fused):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
