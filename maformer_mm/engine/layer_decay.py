"""Layer-wise learning-rate decay for detectors and segmentors (mmdet, mmseg), whose models have no
`get_layer_depth` of their own.

mmpretrain's `LearningRateDecayOptimWrapperConstructor` asks the model for `get_layer_depth`; its classifiers
hand the question to their backbone, mmdet's detectors and mmseg's segmentors do not. mmdet's and mmseg's own
`LearningRateDecayOptimizerConstructor` (and mmseg's `LayerDecayOptimizerConstructor`) know ConvNeXt's, BEiT's and
MAE's parameter names only, and raise a bare `NotImplementedError` for any other backbone.
`LayerDecayOptimWrapperConstructor` reads the depths from `model.backbone.get_layer_depth(name, 'backbone.')` (or
from `model.get_layer_depth`), so the host model is left as it is; it is registered in mmengine's root registry,
where mmdet's, mmseg's and mmpretrain's configs find it. Its `paramwise_cfg` takes mmpretrain's keys, and
`decay_type` as mmdet's ConvNeXt configs write it. It makes one parameter group per (depth, weight decay), not
one per parameter. docs/layer_decay.md has the tables it builds for MAFormer.
"""

import inspect
from collections import defaultdict
from typing import Callable, Dict, List, Optional, Tuple

from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

__all__ = ['LayerDecayOptimWrapperConstructor', 'HOST_LAYER_DECAY_CONSTRUCTORS', 'check_layer_decay_constructor']

_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
_PARAMWISE_KEYS = ('layer_decay_rate', 'decay_type', 'norm_decay_mult', 'bias_decay_mult', 'flat_decay_mult')
_CUSTOM_KEY_FIELDS = ('decay_mult', 'lr_mult')

DepthFn = Callable[[str], Tuple[int, int]]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Parameter groups whose lr decays with the depth of the parameter in the backbone.

    A parameter at depth d of num_layers gets lr * layer_decay_rate ** (num_layers - 1 - d): the neck and heads
    (the last depth) the full lr, the stem the smallest. `paramwise_cfg`:

    - `layer_decay_rate` (required): in (0, 1].
    - `decay_type`: 'layer_wise' (default) or 'stage_wise', passed to the backbone's `get_layer_depth`.
    - `norm_decay_mult`, `bias_decay_mult`, `flat_decay_mult`: multiply the weight decay of the parameters of norm
      layers, of biases, of every 1-D parameter (mmpretrain's keys, in that order of precedence).
    - `custom_keys`: {substring of a parameter name: dict(decay_mult=..., lr_mult=...)}; the longest key contained
      in a name wins over the three above. `lr_mult` multiplies the depth's scale.

    Every trainable parameter lands in exactly one group; a group holds the parameters of one depth with the same
    weight decay (and `lr_mult`), with their names under `param_names` and `lr_scale`, `layer_id` beside `lr`.
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        cfg = self.paramwise_cfg
        unknown = sorted(set(cfg) - set(_PARAMWISE_KEYS) - {'custom_keys'})
        if unknown:
            raise ValueError(
                f'LayerDecayOptimWrapperConstructor: paramwise_cfg has unknown keys {unknown}; it reads '
                f"{list(_PARAMWISE_KEYS) + ['custom_keys']} (mmdet's decay_rate is layer_decay_rate here; "
                'num_layers comes from the backbone)'
            )
        if 'layer_decay_rate' not in cfg:
            raise ValueError('LayerDecayOptimWrapperConstructor needs paramwise_cfg.layer_decay_rate, e.g. 0.9')
        rate = cfg['layer_decay_rate']
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
            raise ValueError(f'paramwise_cfg.layer_decay_rate must be a number in (0, 1], got {rate!r}')
        self.layer_decay_rate = float(rate)
        self.decay_type = cfg.get('decay_type', 'layer_wise')
        if self.decay_type not in ('layer_wise', 'stage_wise'):
            raise ValueError(f"paramwise_cfg.decay_type must be 'layer_wise' or 'stage_wise', got {self.decay_type!r}")
        for key, value in cfg.get('custom_keys', {}).items():
            if not isinstance(value, dict) or set(value) - set(_CUSTOM_KEY_FIELDS):
                raise ValueError(
                    f'paramwise_cfg.custom_keys[{key!r}] must be a dict of {list(_CUSTOM_KEY_FIELDS)}, got {value!r}'
                )
        if self.base_lr is None:
            raise ValueError('LayerDecayOptimWrapperConstructor needs optimizer.lr')
        if self.base_wd is None and any(k in cfg for k in _PARAMWISE_KEYS[2:]):
            raise ValueError('paramwise_cfg sets a *_decay_mult but optimizer.weight_decay is not set')

    def depth_function(self, model: nn.Module) -> DepthFn:
        """name -> (depth, num_layers) for the parameters of `model`: its backbone's `get_layer_depth` with the
        prefix 'backbone.', or the model's own (a bare backbone, or an mmpretrain classifier without `backbone`)."""
        backbone = getattr(model, 'backbone', None)
        if backbone is not None and hasattr(backbone, 'get_layer_depth'):
            owner, method, prefix = type(backbone).__name__, backbone.get_layer_depth, 'backbone.'
        elif hasattr(model, 'get_layer_depth'):
            owner, method, prefix = type(model).__name__, model.get_layer_depth, ''
        else:
            raise TypeError(
                f'LayerDecayOptimWrapperConstructor: neither {type(model).__name__} nor its backbone '
                f'({type(backbone).__name__}) has get_layer_depth(param_name, prefix), which gives each parameter '
                "its depth (MAFormer and mmpretrain's Swin, ViT and ConvNeXt have it)"
            )
        if self.decay_type == 'layer_wise':
            return lambda name: method(name, prefix) if prefix else method(name)
        if 'decay_type' not in inspect.signature(method).parameters:
            raise ValueError(
                f"decay_type='stage_wise': {owner}.get_layer_depth has no decay_type argument; use 'layer_wise'"
            )
        return lambda name: method(name, prefix, decay_type='stage_wise')

    def _weight_decay(self, name: str, param: nn.Parameter, in_norm: bool) -> Tuple[Optional[float], float]:
        """(weight decay, lr_mult) of one parameter by mmpretrain's precedence: custom key, norm, bias, 1-D."""
        cfg = self.paramwise_cfg
        custom = cfg.get('custom_keys', {})
        key = next((k for k in sorted(sorted(custom), key=len, reverse=True) if k in name), None)
        if key is not None:
            wd = None if self.base_wd is None else self.base_wd * custom[key].get('decay_mult', 1.0)
            return wd, float(custom[key].get('lr_mult', 1.0))
        if self.base_wd is None:
            return None, 1.0
        if in_norm and 'norm_decay_mult' in cfg:
            return self.base_wd * cfg['norm_decay_mult'], 1.0
        if name.rsplit('.', 1)[-1] == 'bias' and 'bias_decay_mult' in cfg:
            return self.base_wd * cfg['bias_decay_mult'], 1.0
        if param.ndim == 1 and 'flat_decay_mult' in cfg:
            return self.base_wd * cfg['flat_decay_mult'], 1.0
        return self.base_wd, 1.0

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
        """Appends the groups of `module`'s trainable parameters to `params` (in depth order)."""
        depth_of = self.depth_function(module)
        norm_params = {id(p) for m in module.modules() if isinstance(m, _NORMS) for p in m.parameters(recurse=False)}
        groups: Dict[Tuple[int, Optional[float], float], dict] = {}
        num_layers = None
        for name, param in module.named_parameters():  # each shared parameter once
            if not param.requires_grad:
                continue
            depth, layers = depth_of(name)
            if num_layers is None:
                num_layers = layers
            if layers != num_layers or not 0 <= depth < layers:
                raise ValueError(f'get_layer_depth gave {name!r} depth {depth} of {layers} (others: of {num_layers})')
            wd, lr_mult = self._weight_decay(name, param, id(param) in norm_params)
            key = (depth, wd, lr_mult)
            if key not in groups:
                scale = self.layer_decay_rate ** (layers - 1 - depth) * lr_mult
                groups[key] = dict(params=[], param_names=[], lr=self.base_lr * scale, lr_scale=scale, layer_id=depth)
                if wd is not None:
                    groups[key]['weight_decay'] = wd
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        ordered = [groups[k] for k in sorted(groups, key=lambda k: (k[0], -1.0 if k[1] is None else k[1], k[2]))]
        params.extend(ordered)
        _log_groups(ordered, self.layer_decay_rate, self.decay_type, num_layers)


def _log_groups(groups: List[dict], rate: float, decay_type: str, num_layers: Optional[int]) -> None:
    lines = [f'layer-wise lr decay ({decay_type}, rate {rate}, {num_layers} depths): {len(groups)} param groups']
    by_depth: Dict[int, List[dict]] = defaultdict(list)
    for group in groups:
        by_depth[group['layer_id']].append(group)
    for depth, found in sorted(by_depth.items()):
        parts = ', '.join(f'{len(g["params"])} params wd {g.get("weight_decay")}' for g in found)
        lines.append(f'  depth {depth}: lr x{found[0]["lr_scale"]:.4g}: {parts}')
    print_log('\n'.join(lines), logger='current')


# The host libraries' own layer-decay constructors, which know ConvNeXt/BEiT/MAE names only (mmdet 3.3, mmseg 1.2),
# and mmpretrain's, which needs a model with get_layer_depth (mmdet's and mmseg's models have none).
HOST_LAYER_DECAY_CONSTRUCTORS = (
    'LearningRateDecayOptimizerConstructor',
    'LayerDecayOptimizerConstructor',
    'LearningRateDecayOptimWrapperConstructor',
)


def check_layer_decay_constructor(cfg) -> None:
    """Refuses, before anything is built, an mmdet or mmseg config whose optimizer uses a host library's layer-decay
    constructor with a MAFormer backbone, saying what to write instead (those constructors raise a bare
    `NotImplementedError` for MAFormer, or ask for a method the detector does not have). mmpretrain configs may
    use mmpretrain's constructor: its classifiers ask their backbone."""
    optim = cfg.get('optim_wrapper') or {}
    constructor = optim.get('constructor') if isinstance(optim, dict) else None
    if not isinstance(constructor, str) or cfg.get('default_scope') not in ('mmdet', 'mmseg'):
        return
    if constructor.rsplit('.', 1)[-1] not in HOST_LAYER_DECAY_CONSTRUCTORS:
        return
    backbone = (cfg.get('model') or {}).get('backbone') or {}
    kind = backbone.get('type') if isinstance(backbone, dict) else None
    if not (isinstance(kind, str) and kind.rsplit('.', 1)[-1] == 'MAFormer'):
        return
    paramwise = dict(optim.get('paramwise_cfg') or {})
    rate = paramwise.get('decay_rate', paramwise.get('layer_decay_rate', 0.9))
    decay_type = paramwise.get('decay_type', 'layer_wise')
    raise ValueError(
        f'optim_wrapper.constructor={constructor!r} cannot give MAFormer layer-wise lr decay: '
        f"{cfg.default_scope}'s constructors know ConvNeXt's and BEiT's parameter names only, and mmpretrain's needs "
        'a model with get_layer_depth, which detectors and segmentors lack. Write '
        "optim_wrapper=dict(constructor='LayerDecayOptimWrapperConstructor', paramwise_cfg=dict(_delete_=True, "
        f'layer_decay_rate={rate}, decay_type={decay_type!r}, flat_decay_mult=0.0)) (num_layers comes from the '
        'backbone); see docs/layer_decay.md'
    )
