"""Winograd 3×3 convolutions for CPU inference, through the NNPACK library that torch ships.

UperNet's head is almost all 3×3 convolutions at 1/4 resolution: for ConvNeXt-T at 512², the fpn_bottleneck
(2048 → 512 channels at 128²) alone is 309 of the model's 467 GFLOP, and the head's 3×3 convolutions together
~89 %. oneDNN computes them directly (9 multiply-adds per input channel and output value) at ~80 % of the fp32
matmul peak on an AVX2 CPU, so fp32 inference cannot go much faster by scheduling alone. Winograd's F(6×6, 3×3)
computes the same convolution with ~5× fewer multiplications (64 per 6×6 output tile instead of 324; the tile
transforms cost memory traffic instead). NNPACK's implementation (its default for 3×3) runs a 512 → 512 3×3
convolution at 64² about 2.3× faster than oneDNN on the development machine, with a relative error of ~1e-5 against
the direct result (argmax agreement on whole models: tests/test_winograd.py and the README).

Inference only: NNPACK has no backward here, so WinogradConv2d computes with it only when no gradient is wanted, in
fp32, on the CPU, outside autocast and outside torch.compile (inductor then sees a plain convolution). Otherwise it
is the nn.Conv2d it replaces: same parameters, same state_dict keys, same result.

    from models.winograd import use_winograd
    n = use_winograd(model)          # swaps every eligible nn.Conv2d in place; returns how many
    use_winograd(model, False)       # and back
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn


@functools.cache
def available() -> bool:
    """Whether this torch has NNPACK and it runs on this CPU. The call also initialises the library: without it
    every NNPACK convolution fails with 'SpatialConvolution_updateOutput failed'."""
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def eligible(m: nn.Module) -> bool:
    """A plain 3×3 convolution NNPACK's Winograd path computes: stride 1, no dilation, no groups, zero padding."""
    return (type(m) in (nn.Conv2d, WinogradConv2d) and m.kernel_size == (3, 3) and m.stride == (1, 1)
            and m.dilation == (1, 1) and m.groups == 1 and m.padding_mode == "zeros"
            and isinstance(m.padding, tuple))


class WinogradConv2d(nn.Conv2d):
    """nn.Conv2d that runs NNPACK's Winograd convolution for fp32 CPU inference and is plain nn.Conv2d otherwise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and x.dim() == 4 and not (torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad))
                and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling() and available()):
            # NNPACK reads NCHW; a channels_last input is copied once (the output comes back NCHW).
            return torch._nnpack_spatial_convolution(x.contiguous(), self.weight, self.bias,
                                                     padding=list(self.padding))  # (B, out, H, W)
        return super().forward(x)


def use_winograd(model: nn.Module, enable: bool = True) -> int:
    """Swap every eligible nn.Conv2d in `model` to WinogradConv2d (enable) or back; the number swapped. In place and
    reversible: only the modules' class changes, never their parameters or keys."""
    n = 0
    for m in model.modules():
        if enable and type(m) is nn.Conv2d and eligible(m):
            m.__class__ = WinogradConv2d
            n += 1
        elif not enable and type(m) is WinogradConv2d:
            m.__class__ = nn.Conv2d
            n += 1
    return n
