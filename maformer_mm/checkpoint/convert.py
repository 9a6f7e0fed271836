"""Key mapping from MAFormer checkpoints trained with timm conventions to this project's names.

A MAFormer built from timm's layer classes (as a timm model would be: `PatchEmbed.proj`, `Mlp.fc1/fc2`,
Swin-style `PatchMerging`, a final `norm` and a `head.fc` classifier) holds the same tensors as ours under
other names. `convert_timm` renames them (no I/O), `tools/convert_checkpoint.py` applies it to a file.

timm-style key                                  -> ours
patch_embed.proj.{weight,bias}                  -> patch_embed.projection.{weight,bias}  (mmcv PatchEmbed)
patch_embed.norm.*                              -> patch_embed.norm.*
stages.i.downsample.norm.*                      -> same name, 4C channels reordered (below)
stages.i.downsample.reduction.weight            -> same name, 4C input columns reordered (below)
stages.i.blocks.j.mlp.fc1.*                     -> stages.i.blocks.j.ffn.layers.0.0.*   (mmcv FFN)
stages.i.blocks.j.mlp.fc2.*                     -> stages.i.blocks.j.ffn.layers.1.*
stages.i.blocks.j.{norm1, norm2, norm_q, norm_kv, attn.qkv, attn.proj, attn.relative_position_bias_table,
                   cross_attn.q, cross_attn.kv, cross_attn.proj, gld.fc}.*  -> unchanged (same layers)
norm.*                                          -> norm3.*   (the norm before pooling)
head.fc.*, head.*                               -> dropped (`convert_timm_head` gives mmpretrain's `fc.*`)
*.relative_position_index, *.attn_mask, others  -> dropped (buffers recomputed here; anything unknown)

`stages.i.downsample` is the patch merging at the start of stage i (i >= 1), as in timm >= 0.9's Swin.
Patch merging order: timm concatenates the 2x2 neighbours (row, col) = (0,0), (1,0), (0,1), (1,1) as blocks of
C channels (input index k * C + c, k = 2 * col + row); mmcv's `PatchMerging` unfolds channel-major (index
4 * c + 2 * row + col). The merge norm's 4C parameters and the reduction's 4C input columns are permuted so
the converted layer computes exactly what the timm one did.
"""

import re
from typing import Dict, List, Mapping, Optional, Tuple

import torch

from .state_dict import backbone_state_dict

__all__ = [
    'map_timm_key',
    'convert_timm',
    'convert_timm_head',
    'dropped_timm_keys',
    'timm_merge_to_unfold',
    'publishable_weights',
]

_BLOCK_LAYERS = r'(?:norm1|norm2|norm_q|norm_kv|attn\.(?:qkv|proj)|cross_attn\.(?:q|kv|proj)|gld\.fc)'
_RULES = (
    (re.compile(r'^patch_embed\.proj\.(weight|bias)$'), r'patch_embed.projection.\1'),
    (re.compile(r'^patch_embed\.norm\.(weight|bias)$'), r'patch_embed.norm.\1'),
    (re.compile(r'^(stages\.\d+\.downsample)\.norm\.(weight|bias)$'), r'\1.norm.\2'),
    (re.compile(r'^(stages\.\d+\.downsample)\.reduction\.weight$'), r'\1.reduction.weight'),
    (re.compile(r'^(stages\.\d+\.blocks\.\d+)\.mlp\.fc1\.(weight|bias)$'), r'\1.ffn.layers.0.0.\2'),
    (re.compile(r'^(stages\.\d+\.blocks\.\d+)\.mlp\.fc2\.(weight|bias)$'), r'\1.ffn.layers.1.\2'),
    (re.compile(rf'^(stages\.\d+\.blocks\.\d+\.{_BLOCK_LAYERS})\.(weight|bias)$'), r'\1.\2'),
    (re.compile(r'^(stages\.\d+\.blocks\.\d+\.attn\.relative_position_bias_table)$'), r'\1'),
    (re.compile(r'^norm\.(weight|bias)$'), r'norm3.\1'),
)
_MERGE = re.compile(r'^stages\.\d+\.downsample\.(norm|reduction)\.')
_HEAD = re.compile(r'^head\.(?:fc\.)?(weight|bias)$')
_OURS = re.compile(r'^patch_embed\.projection\.|\.ffn\.layers\.|^norm3\.')


def map_timm_key(key: str) -> Optional[str]:
    """Our backbone key for a timm-style key, or None when the key is dropped (head, buffers, unknown)."""
    for pattern, replacement in _RULES:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def timm_merge_to_unfold(tensor: torch.Tensor) -> torch.Tensor:
    """Permutes the last (4C) axis of a patch-merging norm parameter or reduction weight from timm's
    neighbour-major order to mmcv's channel-major unfold order (see the module docstring)."""
    *lead, four_c = tensor.shape
    if four_c % 4:
        raise ValueError(f'patch-merging tensor of shape {tuple(tensor.shape)}: last axis is not 4 x channels')
    c = four_c // 4
    # timm index = (2 * col + row) * C + ch  ->  axes (col, row, ch); ours = ch * 4 + row * 2 + col.
    out = tensor.reshape(*lead, 2, 2, c)
    out = out.permute(*range(len(lead)), len(lead) + 2, len(lead) + 1, len(lead))
    return out.reshape(*lead, four_c).contiguous()


def convert_timm(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Renames a timm-style MAFormer state dict to our backbone keys (and reorders patch-merging tensors).

    Keys `map_timm_key` does not know are left out; list them with `dropped_timm_keys`.

    Raises:
        ValueError: the state dict is already in this project's naming (converting it again would drop keys
            and scramble the patch-merging channels).
    """
    ours = [k for k in state_dict if _OURS.search(k)]
    if ours:
        raise ValueError(f"the state dict is already in this project's naming ({ours[0]!r}); load it directly")
    converted: Dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        new_key = map_timm_key(key)
        if new_key is not None:
            converted[new_key] = timm_merge_to_unfold(value) if _MERGE.match(key) else value
    return converted


def convert_timm_head(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The classifier of a timm-style state dict (`head.fc.*` or `head.*`) as mmpretrain's
    `LinearClsHead` keys `fc.weight` / `fc.bias`; empty when there is none."""
    return {f'fc.{m.group(1)}': v for k, v in state_dict.items() if (m := _HEAD.match(k))}


def dropped_timm_keys(state_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Keys of `state_dict` that `convert_timm` leaves out, in their order."""
    return [k for k in state_dict if map_timm_key(k) is None]


def publishable_weights(
    full: Mapping[str, torch.Tensor], keep_head: bool, source: str = 'the checkpoint'
) -> Tuple[Dict[str, torch.Tensor], str]:
    """The weights `tools/convert_checkpoint.py` writes for a model's tensors `full` (a checkpoint's
    `model_state_dict`): the backbone as `backbone.*`, renamed from timm's naming when it is in it and copied as it
    is when it is in this project's, with mmpretrain's `head.*` when `keep_head`; and a one-line report.

    Raises:
        ValueError: no key of `full` is a MAFormer key of either naming.
    """
    source_keys = backbone_state_dict(full)  # backbone.* keys without the prefix, or all tensors of a timm dict
    try:
        converted, renamed = convert_timm(source_keys), True
    except ValueError:  # already this project's naming: the weights are copied as they are
        converted, renamed = dict(source_keys), False
    if not converted:
        raise ValueError(f'no key of {source} is a timm-style MAFormer key (first keys: {list(source_keys)[:5]})')
    weights = {'backbone.' + k: v for k, v in converted.items()}
    if renamed:
        head = convert_timm_head(source_keys) if keep_head else {}
    else:
        head = {k[len('head.') :]: v for k, v in full.items() if k.startswith('head.')} if keep_head else {}
    weights.update({'head.' + k: v for k, v in head.items()})
    if renamed:
        dropped = dropped_timm_keys(source_keys)
        kept_head = [k for k in dropped if convert_timm_head({k: source_keys[k]})] if head else []
        dropped = [k for k in dropped if k not in kept_head]
        report = (
            f'mapped {len(converted)} of {len(source_keys)} keys to the backbone'
            + (f', kept the head ({len(kept_head)} keys)' if kept_head else '')
            + f'; dropped {len(dropped)}: {dropped}'
        )
    else:
        report = f"{source} is in this project's naming: copied {len(converted)} backbone tensors" + (
            f' and the head ({len(head)} keys)' if head else ''
        )
    return weights, report
