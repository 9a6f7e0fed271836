"""MAFormer: a Transformer Network with Multi-scale Attention Fusion for Visual Recognition.

Paper: Wang, Sun et al., arXiv 2209.01620 (2022); Neurocomputing 595, 127828 (2024). No official
code exists; the choices the paper leaves open are this project's and are listed in `MAFormer`'s
docstring and the README.
"""

import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import PatchEmbed, PatchMerging
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from mmengine.registry import MODELS
from torch import nn
from torch.utils.checkpoint import CheckpointPolicy, checkpoint, create_selective_checkpoint_contexts

from ...checkpoint import load_backbone_checkpoint
from ...layers import BlockOptions, MAFBlock, ViTBlock, is_exporting, pad_to_multiple

__all__ = ['MAFormer', 'MAFormerStage']

_ImageSize = Union[int, Tuple[int, int]]  # a side, or (H, W)


# Selective `with_cp`: the outputs of every fused attention kernel torch 2.13's SDPA may pick are kept (small: the
# result and a log-sum-exp per query), the rest of a block is recomputed in the backward pass. Which kernel each
# attention runs, and why the math fallback is recomputed: docs/gpu.md, "Selective with_cp".
_KEPT_OPS = tuple(
    getattr(torch.ops.aten, name).default
    for name in (
        '_scaled_dot_product_flash_attention_for_cpu',
        '_scaled_dot_product_flash_attention',
        '_scaled_dot_product_efficient_attention',
        '_scaled_dot_product_cudnn_attention',
        '_scaled_dot_product_fused_attention_overrideable',
    )
    if hasattr(torch.ops.aten, name)
)


def _keep_attention(ctx, op, *args, **kwargs) -> CheckpointPolicy:
    return CheckpointPolicy.MUST_SAVE if op in _KEPT_OPS else CheckpointPolicy.PREFER_RECOMPUTE


def _selective_contexts():
    return create_selective_checkpoint_contexts(_keep_attention)


class MAFormerStage(nn.Module):
    """One stage: an optional 2x patch merging, then its blocks, on NHWC maps (B, H, W, C)."""

    def __init__(
        self, blocks: List[nn.Module], downsample: Optional[PatchMerging] = None, with_cp: bool = False
    ) -> None:
        super().__init__()
        self.downsample = downsample
        self.blocks = nn.ModuleList(blocks)
        self.with_cp = with_cp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            if is_exporting():  # pad odd H, W here: mmcv decides its padding in Python, which a trace freezes
                x = pad_to_multiple(x, 2)[0]
            b, h, w, c = x.shape
            x, (h, w) = self.downsample(x.reshape(b, h * w, c), (h, w))  # pads odd H, W (corner)
            x = x.view(b, h, w, -1)
        for block in self.blocks:
            if self.with_cp and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False, context_fn=_selective_contexts)
            else:
                x = block(x)
        return x


@MODELS.register_module()
class MAFormer(BaseModule):
    """MAFormer backbone: MAF blocks in stages 1-2, ViT blocks in stages 3-4, strides 4/8/16/32.

    Decisions of this project where the paper is silent (see the README):
    window 7 without shift and with a Swin relative position bias; one MLP (ratio 4) per block;
    GLD on a fixed reference grid (the stage grid at `pretrain_img_size`), to which other maps are
    resized (area pooling to shrink, bilinear to grow) before the token-axis FC; global grid
    round(H_r * sqrt(N)) x round(W_r * sqrt(N)); position term = the resized input bilinearly
    interpolated to the global grid; cross-attention with the stage's head count and its own
    output projection; variants with CSWin's widths, depths and heads.

    Args:
        arch: 'tiny'/'small'/'base'/'large' (or 't'/'s'/'b'/'l'), or a dict with `embed_dims`,
            `depths` (4 ints) and `num_heads` (4 ints).
        in_channels: Image channels.
        patch_size: Side of the patch embedding (stride 4 in every variant).
        window_size: Side of the local attention windows in the MAF blocks.
        gld_ratio: N, global tokens per reference-grid token in GLD.
        mlp_ratio: MLP hidden width over the channels.
        qkv_bias: Bias in the attention projections.
        drop_rate: Dropout in MLPs and after attention projections.
        attn_drop_rate: Dropout on attention weights.
        drop_path_rate: Stochastic depth, rising linearly over all blocks to this value.
        pretrain_img_size: Image size of pretraining; sets the GLD reference grids.
        out_indices: Stages whose (normalised) maps are returned, as NCHW tensors.
        frozen_stages: -1 trains everything; 0 freezes the patch embedding; k >= 1 also freezes
            stages 1..k and their output norms. Re-applied by `train()`.
        vit_window_size: 0 (default) keeps global attention in every ViT block. > 0 makes the
            stage-3 ViT blocks attend in windows of this side (ViTDet style) except those listed in
            `vit_global_blocks`; weights are unchanged, so global-attention checkpoints load.
        vit_global_blocks: Stage-3 block indexes that stay global when `vit_window_size > 0`.
        with_cp: Activation checkpointing of every block (saves memory): the attention kernels' outputs
            are kept, everything else in the block is recomputed in the backward pass.
        norm_cfg: Norm layer config.
        act_cfg: MLP activation config.
        init_cfg: mmengine init config. `dict(type='Pretrained', checkpoint=PATH[, prefix=...][, sha256=...])`
            loads backbone weights from any checkpoint form (see `load_backbone_checkpoint`), checking the file's
            full SHA-256 when `sha256` is given.

    Examples:
        >>> model = MAFormer(arch='tiny')
        >>> [o.shape for o in model(torch.rand(1, 3, 224, 224))]
        [torch.Size([1, 64, 56, 56]), torch.Size([1, 128, 28, 28]), torch.Size([1, 256, 14, 14]),
         torch.Size([1, 512, 7, 7])]
    """

    arch_zoo: Dict[str, dict] = {
        **dict.fromkeys(['t', 'tiny'], dict(embed_dims=64, depths=(1, 2, 21, 1), num_heads=(2, 4, 8, 16))),
        **dict.fromkeys(['s', 'small'], dict(embed_dims=64, depths=(2, 4, 32, 2), num_heads=(2, 4, 8, 16))),
        **dict.fromkeys(['b', 'base'], dict(embed_dims=96, depths=(2, 4, 32, 2), num_heads=(4, 8, 16, 32))),
        **dict.fromkeys(['l', 'large'], dict(embed_dims=144, depths=(2, 4, 32, 2), num_heads=(6, 12, 24, 48))),
    }
    num_stages = 4
    maf_stages = (0, 1)

    @classmethod
    def variants(cls) -> Dict[str, dict]:
        """The named variants in the table's order, by their long names (`{'tiny': {...}, 'small': ...}`); each also
        answers to its first letter. Configs, the model index, the README and the tests take the list from here."""
        return {name: dict(settings) for name, settings in cls.arch_zoo.items() if len(name) > 1}

    def __init__(
        self,
        arch: Union[str, dict] = 'tiny',
        in_channels: int = 3,
        patch_size: int = 4,
        window_size: int = 7,
        gld_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        pretrain_img_size: _ImageSize = 224,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        vit_window_size: int = 0,
        vit_global_blocks: Sequence[int] = (),
        with_cp: bool = False,
        norm_cfg: Optional[dict] = None,
        act_cfg: Optional[dict] = None,
        init_cfg: Optional[Union[dict, List[dict]]] = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        norm_cfg = norm_cfg or dict(type='LN')
        act_cfg = act_cfg or dict(type='GELU')
        self.arch_settings = self._parse_arch(arch)
        embed_dims = self.arch_settings['embed_dims']
        depths = self.arch_settings['depths']
        num_heads = self.arch_settings['num_heads']
        self._check_args(in_channels, patch_size, window_size, gld_ratio, drop_path_rate, vit_window_size)
        self.in_channels = in_channels
        self.num_features = [embed_dims * 2**i for i in range(self.num_stages)]
        self.out_indices = self._parse_out_indices(out_indices)
        self.out_channels = tuple(self.num_features[i] for i in self.out_indices)
        self.out_strides = tuple(patch_size * 2**i for i in self.out_indices)
        if not -1 <= frozen_stages <= self.num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {self.num_stages}], got {frozen_stages}')
        self.frozen_stages = frozen_stages
        pretrain_hw = (
            (pretrain_img_size, pretrain_img_size) if isinstance(pretrain_img_size, int) else tuple(pretrain_img_size)
        )
        global_blocks = set(vit_global_blocks)
        if vit_window_size and not global_blocks <= set(range(depths[2])):
            raise ValueError(f'vit_global_blocks {sorted(global_blocks)} must index the {depths[2]} stage-3 blocks')

        self.patch_embed = PatchEmbed(
            in_channels=in_channels,
            embed_dims=embed_dims,
            conv_type='Conv2d',
            kernel_size=patch_size,
            stride=patch_size,
            padding='corner',
            norm_cfg=norm_cfg,
        )
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        options = BlockOptions(
            mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias,
            drop=drop_rate,
            attn_drop=attn_drop_rate,
            norm_cfg=norm_cfg,
            act_cfg=act_cfg,
        )
        self.stages = nn.ModuleList()
        for i, (heads, dims) in enumerate(zip(num_heads, self.num_features)):
            stage_dpr = dpr[sum(depths[:i]) : sum(depths[: i + 1])]
            if i in self.maf_stages:
                stride = patch_size * 2**i
                ref_hw = (math.ceil(pretrain_hw[0] / stride), math.ceil(pretrain_hw[1] / stride))
                blocks = [MAFBlock(dims, heads, window_size, ref_hw, gld_ratio, p, options) for p in stage_dpr]
            else:
                blocks = [
                    ViTBlock(dims, heads, p, self._vit_window(i, j, vit_window_size, global_blocks), options)
                    for j, p in enumerate(stage_dpr)
                ]
            downsample = (
                None
                if i == 0
                else PatchMerging(
                    in_channels=self.num_features[i - 1], out_channels=dims, norm_cfg=norm_cfg, padding='corner'
                )
            )
            self.stages.append(MAFormerStage(blocks, downsample, with_cp))
        for i in self.out_indices:
            self.add_module(f'norm{i}', build_norm_layer(norm_cfg, self.num_features[i])[1])
        self._freeze_stages()

    @staticmethod
    def _vit_window(stage: int, block: int, window: int, global_blocks: set) -> int:
        """Window side of a ViT block: windows only in stage 3 (index 2), outside the global ones."""
        return window if stage == 2 and block not in global_blocks else 0

    def _parse_arch(self, arch: Union[str, dict]) -> dict:
        if isinstance(arch, str):
            key = arch.lower()
            if key not in self.arch_zoo:
                raise ValueError(
                    f'arch {arch!r} is not a MAFormer variant; choose one of {sorted(self.arch_zoo)} or pass a dict'
                )
            return dict(self.arch_zoo[key])
        if not isinstance(arch, dict):
            raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
        missing = {'embed_dims', 'depths', 'num_heads'} - set(arch)
        if missing:
            raise ValueError(f'custom arch dict is missing {sorted(missing)}; it needs embed_dims, depths, num_heads')
        settings = dict(embed_dims=arch['embed_dims'], depths=tuple(arch['depths']), num_heads=tuple(arch['num_heads']))
        if not isinstance(settings['embed_dims'], int) or settings['embed_dims'] <= 0:
            raise ValueError(f'arch embed_dims must be a positive int, got {settings["embed_dims"]!r}')
        for key in ('depths', 'num_heads'):
            values = settings[key]
            if len(values) != self.num_stages or not all(isinstance(v, int) and v > 0 for v in values):
                raise ValueError(f'arch {key} must be {self.num_stages} positive ints, got {values}')
        for i, heads in enumerate(settings['num_heads']):
            dims = settings['embed_dims'] * 2**i
            if dims % heads:
                raise ValueError(f'arch stage {i + 1}: {dims} channels are not divisible by {heads} heads')
        return settings

    def _parse_out_indices(self, out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
        indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
        if not indices:
            raise ValueError('out_indices must name at least one stage')
        result = []
        for index in indices:
            if not -self.num_stages <= index < self.num_stages:
                raise ValueError(f'out_indices entry {index} is out of range for {self.num_stages} stages')
            result.append(index % self.num_stages)
        if len(set(result)) != len(result):
            raise ValueError(f'out_indices {indices} name a stage twice')
        return tuple(sorted(result))

    @staticmethod
    def _check_args(
        in_channels: int,
        patch_size: int,
        window_size: int,
        gld_ratio: float,
        drop_path_rate: float,
        vit_window_size: int,
    ) -> None:
        for name, value in (('in_channels', in_channels), ('patch_size', patch_size), ('window_size', window_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if not 0 < gld_ratio <= 1:
            raise ValueError(f'gld_ratio must be in (0, 1], got {gld_ratio}')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate}')
        if not isinstance(vit_window_size, int) or vit_window_size < 0:
            raise ValueError(f'vit_window_size must be an int >= 0 (0 = global attention), got {vit_window_size!r}')

    def init_weights(self) -> None:
        """Loads `init_cfg`'s 'Pretrained' checkpoint with `load_backbone_checkpoint` (also from a list
        `init_cfg`, after its other entries: mmengine's own Pretrained init loads silently and non-strictly);
        without `init_cfg`, truncated-normal init."""
        from mmengine.model.weight_init import PretrainedInit

        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        pretrained = [c for c in cfgs if c.get('type') in ('Pretrained', PretrainedInit)]
        if len(pretrained) > 1:
            raise ValueError(f'MAFormer init_cfg has {len(pretrained)} Pretrained entries; give one')
        if not pretrained:
            if self.init_cfg is None:
                self.apply(self._init_module)
            super().init_weights()
            return
        others = [c for c in cfgs if c is not pretrained[0]]
        if others:  # mmengine applies them; the checkpoint is loaded after, as mmengine orders it
            self.init_cfg, original = others, self.init_cfg
            try:
                super().init_weights()
            finally:
                self.init_cfg = original
        cfg = pretrained[0]
        load_backbone_checkpoint(
            self,
            cfg['checkpoint'],
            prefix=cfg.get('prefix'),
            map_location=cfg.get('map_location') or 'cpu',
            sha256=cfg.get('sha256'),
        )
        self._is_init = True

    @staticmethod
    def _init_module(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_layer_depth(self, param_name: str, prefix: str = '', decay_type: str = 'layer_wise') -> Tuple[int, int]:
        """The depth of a parameter for layer-wise learning-rate decay, as mmpretrain's backbones give it.

        Depth 0 is the stem (the patch embedding); `layer_wise` gives every block its own depth (1 for the first
        block of stage 1, up to sum(depths)), `stage_wise` gives every stage one (1 to 4), as ConvNeXt's stage-wise
        mode. A patch merging opens its stage and takes the depth of that stage's first block (layer-wise) or of its
        stage. Every part of a block (norms, window attention and its relative-position table, GLD and its FC bias,
        cross-attention, MLP) takes the block's depth. The last depth, num_layers - 1, is everything after the
        backbone: parameters whose names do not start with `prefix`, and the output norms `norm0`..`norm3`, which
        dense tasks add to the ImageNet model. docs/decisions.md says why.

        Args:
            param_name: A parameter's name in the model that holds this backbone.
            prefix: The backbone's prefix in that model ('backbone.' in a detector).
            decay_type: 'layer_wise' or 'stage_wise'.

        Returns:
            (depth, num_layers): num_layers is sum(depths) + 2 (layer-wise) or 6 (stage-wise); the decay scale
            of the lr is rate ** (num_layers - 1 - depth).
        """
        depths = self.arch_settings['depths']
        if decay_type == 'layer_wise':
            num_layers = sum(depths) + 2
        elif decay_type == 'stage_wise':
            num_layers = self.num_stages + 2
        else:
            raise ValueError(f"decay_type must be 'layer_wise' or 'stage_wise', got {decay_type!r}")
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        parts = param_name[len(prefix) :].split('.')
        if parts[0] == 'patch_embed':
            return 0, num_layers
        if parts[0] in {f'norm{i}' for i in self.out_indices}:
            return num_layers - 1, num_layers
        if parts[0] == 'stages' and len(parts) > 3 and parts[1].isdigit() and int(parts[1]) < self.num_stages:
            stage = int(parts[1])
            if decay_type == 'stage_wise' and parts[2] in ('downsample', 'blocks'):
                return stage + 1, num_layers
            if parts[2] == 'downsample' and stage > 0:
                return sum(depths[:stage]) + 1, num_layers
            if parts[2] == 'blocks' and parts[3].isdigit() and int(parts[3]) < depths[stage]:
                return sum(depths[:stage]) + int(parts[3]) + 1, num_layers
        raise ValueError(f'{param_name!r} names no parameter of this MAFormer (prefix {prefix!r})')

    def _freeze_stages(self) -> None:
        frozen: List[nn.Module] = []
        if self.frozen_stages >= 0:
            frozen.append(self.patch_embed)
        for i in range(self.frozen_stages):
            frozen.append(self.stages[i])
            if i in self.out_indices:
                frozen.append(getattr(self, f'norm{i}'))
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True) -> 'MAFormer':
        super().train(mode)
        self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """x: (B, in_channels, H, W) of any size -> NCHW maps at strides 4/8/16/32 (ceil division)."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'MAFormer expects images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}')
        if is_exporting():  # the patch embedding's corner padding, written so that a trace follows the size
            x = pad_to_multiple(x.permute(0, 2, 3, 1), self.patch_embed.projection.stride[0])[0].permute(0, 3, 1, 2)
        x, (h, w) = self.patch_embed(x)  # B, H*W, C
        x = x.view(x.shape[0], h, w, -1)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.out_indices:
                outs.append(getattr(self, f'norm{i}')(x).permute(0, 3, 1, 2).contiguous())
        return tuple(outs)
