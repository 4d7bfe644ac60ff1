"""ConvNeXt backbone with mmseg's (mmcls/mmpretrain `ConvNeXt`) parameter names, returning four normalised stages.

Layout (SPEC §5): `downsample_layers.I.{0,1}` (I = 0 is the 4×4 stem conv + LN; I > 0 is LN + 2×2 conv),
`stages.I.J.{depthwise_conv, norm, pointwise_conv1, pointwise_conv2, gamma}`, `norm0..3` on each output stage.
Matches mmpretrain's ConvNeXt(out_indices=(0, 1, 2, 3), gap_before_final_norm=False, linear_pw_conv=True).
"""
from __future__ import annotations

import re

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .layers import DropPath, LayerNorm2d, drop_path_rates, init_trunc_normal

EPS = 1e-6  # every ConvNeXt LayerNorm (official, mmcls, HF, timm)


class ConvNeXtBlock(nn.Module):
    """7×7 depthwise conv → LN → Linear(4C) → GELU → Linear(C) → layer scale → drop path, plus the identity."""

    def __init__(self, dim: int, drop_path: float = 0.0, layer_scale_init: float = 1e-6, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.depthwise_conv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=EPS)
        self.pointwise_conv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pointwise_conv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(torch.full((dim,), float(layer_scale_init))) if layer_scale_init > 0 else None
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.depthwise_conv(x).permute(0, 2, 3, 1)  # (B, H, W, C); a view when x is channels_last
        y = self.pointwise_conv2(self.act(self.pointwise_conv1(self.norm(y))))  # (B, H, W, C)
        if self.gamma is not None:
            y = y * self.gamma
        return x + self.drop_path(y.permute(0, 3, 1, 2))  # (B, C, H, W)


class ConvNeXt(nn.Module):
    def __init__(self, depths: tuple[int, ...] = (3, 3, 9, 3), dims: tuple[int, ...] = (96, 192, 384, 768),
                 drop_path_rate: float = 0.0, layer_scale_init: float = 1.0, in_chans: int = 3):
        super().__init__()
        assert len(depths) == len(dims) == 4, "ConvNeXt has four stages"
        self.depths, self.dims = tuple(depths), tuple(dims)
        self.out_channels = list(dims)
        self.grad_checkpointing = False

        self.downsample_layers = nn.ModuleList()
        self.downsample_layers.append(nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4),
                                                    LayerNorm2d(dims[0], eps=EPS)))
        for i in range(1, 4):
            self.downsample_layers.append(nn.Sequential(LayerNorm2d(dims[i - 1], eps=EPS),
                                                        nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)))
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvNeXtBlock(dims[i], dpr[i][j], layer_scale_init) for j in range(depths[i])])
            for i in range(4))
        for i in range(4):
            self.add_module(f"norm{i}", LayerNorm2d(dims[i], eps=EPS))
        # mmcls init_cfg: TruncNormal(std=.02) on Conv2d and Linear, Constant(1, 0) on LayerNorm.
        init_trunc_normal(self, std=0.02, types=(nn.Linear, nn.Conv2d))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(4):
            x = self.downsample_layers[i](x)  # (B, C_i, H / 2^(i+2), W / 2^(i+2))
            if self.grad_checkpointing and torch.is_grad_enabled():
                for block in self.stages[i]:
                    x = checkpoint(block, x, use_reentrant=False)
            else:
                x = self.stages[i](x)
            outs.append(getattr(self, f"norm{i}")(x))
        return outs


# ------------------------------------------------------------ rules tied to the names above (models.registry's entry)

def stage_id(name: str) -> int | None:
    """Layer-decay id of a backbone parameter (its name under `backbone.`), mmseg's `get_stage_id_for_convnext`
    (decay_type='stage_wise'): 0 for downsample_layers.* (the stem AND the three between-stage downsamplers), i + 1
    for stages.i.*; None for the output norms norm0..3, which train with the heads."""
    parts = name.split(".")
    if parts[0] == "downsample_layers":
        return 0
    if parts[0] == "stages":
        return int(parts[1]) + 1
    return None


NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed", "pos_embed", "gamma")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Whether a segmentor parameter (full name) is exempt from weight decay under mmseg's UperNet-ConvNeXt configs
    (LearningRateDecayOptimizerConstructor): every 1-D parameter (norm weights and biases, conv/linear biases,
    layer-scale `gamma`) and the position tables."""
    return param.ndim <= 1 or name.endswith(".bias") or name.split(".")[-1] in NO_DECAY_NAMES


def hparams_from_state_dict(sd: dict) -> dict:
    """dims and depths read off a backbone state_dict under the names above (no `backbone.` prefix)."""
    depths = []
    for i in range(4):
        pat = rf"^stages\.{i}\.(\d+)\."
        depths.append(len({re.match(pat, k).group(1) for k in sd if re.match(pat, k)}))
    stem = [f"downsample_layers.{i}.{0 if i == 0 else 1}.weight" for i in range(4)]
    return {"dims": tuple(int(sd[k].shape[0]) for k in stem if k in sd), "depths": tuple(depths)}
