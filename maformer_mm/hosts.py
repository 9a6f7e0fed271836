"""What maformer_mm knows about its host libraries (mmdet 3.3, mmseg 1.2, mmpretrain 1.2, mmcv 2.1), in one place.

Everything else asks here: the tools which task a config's scope is and which inferencer runs it, the FLOP counter
and the ONNX export which data samples a model takes and which heads are query-based, `--data-root` and the
inferencers where heads keep their class count, the bf16 optimizer wrapper which mmcv ops lack bf16 kernels.

Adding a head means one entry here, where it differs from those below: its config path under the model in
`HEAD_PATHS` (if it is not one of them), its type in `QUERY_HEAD_TYPES` if it is a MaskFormer-style head with a
"no object" class, and any mmcv op it runs without a bf16 kernel in `bf16_unsafe_types` (docs/contributing.md).
"""

import inspect
from typing import Any, Dict, List, Optional, Tuple, Type

from torch import nn

__all__ = [
    'TASKS',
    'task_of',
    'FLOP_SHAPES',
    'HEAD_PATHS',
    'QUERY_HEAD_TYPES',
    'is_query_head_type',
    'query_head_kind',
    'takes_data_samples',
    'data_samples',
    'inferencer_type',
    'bf16_unsafe_types',
]

# default_scope -> the task its configs describe.
TASKS: Dict[str, str] = {'mmdet': 'detection', 'mmseg': 'segmentation', 'mmpretrain': 'classification'}

# The input size at which each task's FLOPs are usually reported, (H, W).
FLOP_SHAPES: Dict[str, Tuple[int, int]] = {'mmdet': (800, 1280), 'mmseg': (512, 2048), 'mmpretrain': (224, 224)}

# Where heads keep their class count, as config paths under `model` (a list there: each of its heads).
HEAD_PATHS: Tuple[str, ...] = (
    'roi_head.bbox_head',
    'roi_head.mask_head',
    'bbox_head',
    'decode_head',
    'auxiliary_head',
    'head',
    'panoptic_head',
    'panoptic_fusion_head',
)

# Heads whose `loss_cls.class_weight` has one entry per class and one for "no object" (mmdet and mmseg).
QUERY_HEAD_TYPES: Tuple[str, ...] = ('MaskFormerHead', 'Mask2FormerHead')


def task_of(scope: Optional[str], source: str = 'the config') -> str:
    """The task of a config's `default_scope`; ValueError naming `source` for another scope."""
    if scope not in TASKS:
        raise ValueError(
            f'{source}: default_scope={scope!r}; maformer_mm runs mmdet, mmseg and mmpretrain configs '
            f'({", ".join(f"{s} ({t})" for s, t in TASKS.items())})'
        )
    return TASKS[scope]


def is_query_head_type(head_type: Any) -> bool:
    """Whether a head config's `type` (a name, possibly scoped, or a class) is a MaskFormer-style head."""
    name = head_type.__name__ if isinstance(head_type, type) else str(head_type or '')
    return name.split('.')[-1].endswith(QUERY_HEAD_TYPES)


def takes_data_samples(head: Optional[nn.Module]) -> bool:
    """Whether a decode head's forward takes the data samples (mmseg's MaskFormer and Mask2Former heads), which
    mmseg 1.2.2's mode 'tensor' does not pass."""
    return head is not None and 'batch_data_samples' in inspect.signature(head.forward).parameters


def query_head_kind(model: nn.Module) -> Optional[str]:
    """'detr' for mmdet's DETR-family detectors, 'maskformer' for its MaskFormer family, 'maskformer_seg' for an
    mmseg segmentor with such a head; None otherwise."""
    if takes_data_samples(getattr(model, 'decode_head', None)):
        return 'maskformer_seg'
    try:
        from mmdet.models.detectors import DetectionTransformer, MaskFormer
    except ImportError:
        return None
    if isinstance(model, DetectionTransformer):
        return 'detr'
    if isinstance(model, MaskFormer):
        return 'maskformer'
    return None


def data_samples(scope: Optional[str], hw: Tuple[int, int], count: int = 1) -> Optional[List[Any]]:
    """`count` data samples of the scope's kind for one (H, W) input that was neither resized nor padded, as a
    model's mode 'tensor' needs them; None for classifiers (they take none)."""
    meta = dict(img_shape=hw, ori_shape=hw, pad_shape=hw, batch_input_shape=hw, scale_factor=(1.0, 1.0))
    if scope == 'mmdet':
        from mmdet.structures import DetDataSample

        return [DetDataSample(metainfo=dict(meta)) for _ in range(count)]
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample

        return [SegDataSample(metainfo=dict(meta)) for _ in range(count)]
    return None


def inferencer_type(scope: str) -> type:
    """The host's inferencer for a config scope (DetInferencer, MMSegInferencer, ImageClassificationInferencer)."""
    task_of(scope)
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer

        return DetInferencer
    if scope == 'mmseg':
        from mmseg.apis import MMSegInferencer

        return MMSegInferencer
    from mmpretrain.apis import ImageClassificationInferencer

    return ImageClassificationInferencer


def bf16_unsafe_types(device_type: str) -> Tuple[Type[nn.Module], ...]:
    """Module types whose forward sends its inputs' dtype to an mmcv kernel without a bfloat16 version on
    `device_type`: no kernel of mmcv 2.1.0 takes bf16. mmdet casts the RoIs to the features' dtype before RoIAlign
    (so bf16 features are bf16 RoIs), and its FocalLoss calls mmcv's sigmoid focal loss on CUDA; on the CPU it, and
    MultiScaleDeformableAttention, run plain torch ops, which take bf16."""
    try:
        from mmcv import ops
    except ImportError:  # mmcv without its compiled ops: no model can hold them
        return ()
    types = [
        ops.RoIAlign,
        ops.RoIPool,
        ops.DeformConv2d,
        ops.ModulatedDeformConv2d,
        ops.SigmoidFocalLoss,
        ops.SoftmaxFocalLoss,
    ]
    if device_type == 'cuda':
        types.append(ops.MultiScaleDeformableAttention)
        try:
            from mmdet.models.losses import FocalLoss

            types.append(FocalLoss)
        except ImportError:  # mmdet is optional
            pass
    return tuple(types)
