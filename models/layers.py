"""Small building blocks shared by the backbones: stochastic depth, channels-first LayerNorm, initialisers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Per-sample stochastic depth (timm / mmcv DropPath): zero a sample's residual branch with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)  # (B, 1, ...)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def drop_path_rates(rate: float, depths: tuple[int, ...] | list[int]) -> list[list[float]]:
    """Linear stochastic-depth schedule over all blocks (0 → rate), split per stage (mmseg/timm rule)."""
    total = sum(depths)
    rates = torch.linspace(0, rate, total, device="cpu").tolist()
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, H, W) map (mmcls LN2d / ConvNeXt channels_first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C); free for channels_last tensors
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)


def bf16_matmul_weights(module: nn.Module) -> int:
    """Cast every Conv2d's and Linear's parameters to bf16 in place, for inference under bf16 autocast; the number
    of modules cast. Autocast casts them to the same values on every call otherwise, which costs ~8 % of a ConvNeXt-T
    UperNet forward at 512² on an AMX CPU. Norm layers keep fp32, as autocast computes them."""
    n = 0
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.to(torch.bfloat16)
            n += 1
    return n


def init_trunc_normal(module: nn.Module, std: float = 0.02, types: tuple[type, ...] = (nn.Linear, nn.Conv2d)) -> None:
    """mmcv TruncNormal(std) on `types` (bias 0) and Constant(1, 0) on LayerNorm, as mmseg's backbones do."""
    for m in module.modules():
        if isinstance(m, types):
            nn.init.trunc_normal_(m.weight, std=std)  # bounds ±2 absolute, as mmcv's trunc_normal_init
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
