"""Export of an `ExportTarget` to ONNX, at a fixed input size or with H and W dynamic.

torch 2.13 offers two exporters; with the model in its export forms (see `maformer_mm/layers/export.py`)
both export every kind of config at fixed and at dynamic sizes. The default one (`dynamo=True`:
torch.export, then ONNX through onnxscript) is used: the legacy TorchScript exporter is deprecated, and
its trace freezes a size-dependent Python decision with a mere warning, where torch.export reasons about
sizes symbolically. The legacy exporter (`exporter='legacy'`) is about 5x faster to export.
"""

import re
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from ..layers import ViTBlock
from .targets import ExportTarget

__all__ = [
    'export_onnx',
    'dynamic_blockers',
    'default_exporter',
    'deformable_attention_modules',
    'EXPORTERS',
    'MSDA_REASON',
]

EXPORTERS = ('dynamo', 'legacy')
INPUT_NAME = 'images'


# Why models with mmcv's MultiScaleDeformableAttention (DINO's encoder and decoder, Mask2Former's pixel decoder)
# export with the legacy exporter at a fixed size only.
MSDA_REASON = (
    "mmcv's MultiScaleDeformableAttention (here in its PyTorch form, grid_sample) splits its input by level sizes "
    'held in a tensor, which mmdet builds with torch._shape_as_tensor: torch.export (the dynamo exporter) fails on '
    'that op, and the legacy exporter traces the sizes as constants, so the graph holds for the export size only.'
)


def deformable_attention_modules(module: nn.Module) -> List[str]:
    """Names of the mmcv MultiScaleDeformableAttention modules inside `module`."""
    from mmcv.ops import MultiScaleDeformableAttention

    return [name for name, m in module.named_modules() if isinstance(m, MultiScaleDeformableAttention)]


def default_exporter(module: nn.Module) -> str:
    """'legacy' for modules with multi-scale deformable attention (MSDA_REASON), else 'dynamo'."""
    return 'legacy' if deformable_attention_modules(module) else 'dynamo'


def _export_dynamo(
    target: ExportTarget, inputs: Tuple[torch.Tensor, ...], path: str, dynamic: bool, opset: int
) -> None:
    deformable = deformable_attention_modules(target.module)
    if deformable:
        raise ValueError(
            f'the dynamo exporter cannot export this model ({len(deformable)} multi-scale deformable '
            f'attention modules, e.g. {deformable[0]}): {MSDA_REASON} Use the legacy exporter '
            '(--exporter legacy), at a fixed size.'
        )
    dynamic_shapes = None
    if dynamic:
        d = target.size_divisor
        if d > 1:  # H = d * a: simple symbolic sizes (the exporter reasons about them op by op)
            hw = {2: d * torch.export.Dim('height_blocks', min=1), 3: d * torch.export.Dim('width_blocks', min=1)}
        else:
            hw = {2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC}
        dynamic_shapes = (hw, *(None for _ in target.extra_inputs))
    with warnings.catch_warnings():
        # torchvision's fake NMS and torch's pytree say they are deprecated, once per call: noise for the user
        warnings.filterwarnings('ignore', message='`create_unbacked_symint` is deprecated')
        warnings.filterwarnings('ignore', message=r'`isinstance\(treespec, LeafSpec\)` is deprecated')
        from .detectors import ONNX_TRANSLATIONS

        program = torch.onnx.export(
            target.module,
            inputs,
            dynamo=True,
            custom_translation_table=ONNX_TRANSLATIONS,
            input_names=[INPUT_NAME, *target.extra_inputs],
            output_names=list(target.output_names),
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            verbose=False,
        )
    program.save(path)


def _export_legacy(
    target: ExportTarget, inputs: Tuple[torch.Tensor, ...], path: str, dynamic: bool, opset: int
) -> None:
    dynamic_axes: Optional[Dict[str, Dict[int, str]]] = dict(target.output_axes) or None
    if dynamic:
        dynamic_axes = {INPUT_NAME: {2: 'height', 3: 'width'}}
        dynamic_axes.update(
            {name: {2: f'{name}_height', 3: f'{name}_width'} for name in target.output_names if name != 'logits'}
        )
        dynamic_axes.update(target.output_axes)
    from .detectors import register_legacy_symbolics

    register_legacy_symbolics(opset)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # the legacy exporter is deprecated in torch 2.9+ and says so
        torch.onnx.export(
            target.module,
            inputs,
            path,
            dynamo=False,
            input_names=[INPUT_NAME, *target.extra_inputs],
            output_names=list(target.output_names),
            opset_version=opset,
            dynamic_axes=dynamic_axes,
        )


def dynamic_blockers(module: nn.Module) -> List[str]:
    """Why H and W cannot be dynamic in the export of `module` (empty when they can)."""
    reasons = []
    windowed = [name for name, m in module.named_modules() if isinstance(m, ViTBlock) and m.window_size]
    if windowed:
        reasons.append(
            f'{len(windowed)} ViT blocks attend in windows (vit_window_size > 0, e.g. {windowed[0]}). Such a block '
            'attends globally when its map fits in one window and in padded windows otherwise: a choice made by '
            'the map size, which a graph traced at one size would freeze. torch.export can express it only as '
            'torch.cond, which fails on the padded window branch in torch 2.13.'
        )
    deformable = deformable_attention_modules(module)
    if deformable:
        reasons.append(
            f'{len(deformable)} multi-scale deformable attention modules (e.g. {deformable[0]}): ' + MSDA_REASON
        )
    return reasons


def _add_metadata(path: str, metadata: Dict[str, str], output_axes: Dict[str, Dict[int, str]]) -> None:
    """Stores `metadata` in the file and names the input's dynamic dimensions 'height' and 'width' (also
    inside the output shapes' expressions), and the outputs' `output_axes`."""
    import onnx

    model = onnx.load(path)
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    dims = model.graph.input[0].type.tensor_type.shape.dim
    names = {dims[i].dim_param: new for i, new in ((2, 'height'), (3, 'width')) if dims[i].dim_param}
    if names:
        pattern = re.compile(r'\b(' + '|'.join(map(re.escape, names)) + r')\b')
        for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param:
                    dim.dim_param = pattern.sub(lambda m: names[m.group(1)], dim.dim_param)
    for output in model.graph.output:
        for axis, name in output_axes.get(output.name, {}).items():
            output.type.tensor_type.shape.dim[axis].dim_param = name
    onnx.save(model, path)


def export_onnx(
    target: ExportTarget,
    path: str,
    size: Tuple[int, int],
    dynamic: bool = False,
    opset: int = 18,
    exporter: str = 'dynamo',
    batch: int = 1,
) -> None:
    """Writes `target.module` as ONNX to `path`, traced on a (batch, C, H, W) input.

    Args:
        size: (H, W) of the traced input; with `dynamic`, the graph accepts other H and W too.
        dynamic: H and W of the input (and of every map) become symbolic dimensions.
        opset: ONNX opset version.
        exporter: 'dynamo' (torch.export; the default) or 'legacy' (TorchScript tracing).
    """
    if exporter not in EXPORTERS:
        raise ValueError(f'exporter must be one of {EXPORTERS}, got {exporter!r}')
    d = target.size_divisor
    if size[0] % d or size[1] % d:
        raise ValueError(
            f'the export size {size[0]}x{size[1]} must be a multiple of {d} in H and W: the detector takes images '
            f'padded as its data preprocessor pads them (pad_size_divisor={d}), e.g. '
            f'{-(-size[0] // d) * d}x{-(-size[1] // d) * d}'
        )
    images = torch.randn(batch, target.in_channels, *size)
    extras = dict(target.extra_inputs)
    if 'img_shape' in extras:
        extras['img_shape'] = torch.tensor(size, dtype=torch.long)
    target.module.eval()
    with torch.no_grad():
        (_export_dynamo if exporter == 'dynamo' else _export_legacy)(
            target, (images, *extras.values()), path, dynamic, opset
        )
    _add_metadata(
        path,
        dict(target.metadata, exporter=exporter, dynamic_hw=str(dynamic).lower(), export_size=f'{size[0]}x{size[1]}'),
        target.output_axes,
    )
