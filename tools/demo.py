"""`make demo`: MAFormer on a generated image: multi-scale feature shapes, params and FLOPs per variant."""
import torch

import maformer_mm  # noqa: F401
from maformer_mm.models import MAFormer
from maformer_mm.utils.flops import model_complexity


def main() -> None:
    torch.manual_seed(0)
    image = torch.rand(1, 3, 224, 224)
    print('MAFormer on a generated 224x224 image (FLOPs = multiply-adds, attention included)')
    print('| arch | params (M) | FLOPs (G) | feature maps (C x H x W, strides 4/8/16/32) |')
    print('|---|---|---|---|')
    for arch in ('tiny', 'small', 'base', 'large'):
        model = MAFormer(arch=arch).eval()
        with torch.no_grad():
            shapes = ', '.join('x'.join(map(str, f.shape[1:])) for f in model(image))
        flops, params = model_complexity(model, 'backbone', (224, 224))
        print(f'| {arch} | {params / 1e6:.1f} | {flops / 1e9:.2f} | {shapes} |')


if __name__ == '__main__':
    main()
