"""UPerNet decode head (PPM + FPN) and the FCN auxiliary head, exactly as mmseg's UPerHead / FCNHead (SPEC §4).

Names follow mmseg: `psp_modules.K.1.{conv,bn}`, `bottleneck`, `lateral_convs.I`, `fpn_convs.I`, `fpn_bottleneck`,
`conv_seg`; the auxiliary head has `convs.0` and `conv_seg`. BatchNorm is plain BN here; train.py converts it to
SyncBN under DDP.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ConvModule(nn.Module):
    """mmcv ConvModule: conv (no bias, a norm follows) → BN → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, padding: int = 0, inplace: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.activate = nn.ReLU(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.bn(self.conv(x)))


def _init_head(module: nn.Module) -> None:
    """mmcv ConvModule init (kaiming normal, fan_out, relu; BN 1/0) and BaseDecodeHead's Normal(0.01) on conv_seg."""
    for m in module.modules():
        if isinstance(m, ConvModule):
            nn.init.kaiming_normal_(m.conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.ones_(m.bn.weight)
            nn.init.zeros_(m.bn.bias)
    nn.init.normal_(module.conv_seg.weight, std=0.01)
    nn.init.zeros_(module.conv_seg.bias)


class UPerHead(nn.Module):
    def __init__(self, in_channels: list[int], channels: int = 512, num_classes: int = 150,
                 pool_scales: tuple[int, ...] = (1, 2, 3, 6), dropout: float = 0.1):
        super().__init__()
        top = in_channels[-1]
        self.psp_modules = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(top, channels, 1)) for s in pool_scales)
        self.bottleneck = ConvModule(top + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1, inplace=False) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(
            ConvModule(channels, channels, 3, padding=1, inplace=False) for _ in in_channels[:-1])
        self.fpn_bottleneck = ConvModule(len(in_channels) * channels, channels, 3, padding=1)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        _init_head(self)

    def psp_forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        outs = [x] + [resize(ppm(x), size) for ppm in self.psp_modules]
        return self.bottleneck(torch.cat(outs, dim=1))  # (B, ch, H/32, W/32)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(feats[i]) for i, conv in enumerate(self.lateral_convs)]
        laterals.append(self.psp_forward(feats[-1]))
        for i in range(len(laterals) - 1, 0, -1):  # top-down: upsample and add
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(laterals[i]) for i, conv in enumerate(self.fpn_convs)]
        outs.append(laterals[-1])
        size = outs[0].shape[2:]
        outs = [outs[0]] + [resize(o, size) for o in outs[1:]]  # all at stride 4
        x = self.fpn_bottleneck(torch.cat(outs, dim=1))  # (B, ch, H/4, W/4)
        return self.conv_seg(self.dropout(x))  # (B, classes, H/4, W/4)


class FCNHead(nn.Module):
    """Auxiliary head on stage 3: one 3×3 ConvModule, Dropout2d, 1×1 classifier (num_convs=1, no concat)."""

    def __init__(self, in_channels: int, channels: int = 256, num_classes: int = 150, in_index: int = 2,
                 dropout: float = 0.1):
        super().__init__()
        self.in_index = in_index
        self.convs = nn.Sequential(ConvModule(in_channels, channels, 3, padding=1))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        _init_head(self)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.conv_seg(self.dropout(self.convs(feats[self.in_index])))  # (B, classes, H/16, W/16)
