"""uint8 activations for int8 convolutions (models/int8.py's Int8ConvModule, `infer.py --int8-head`): the op, its
Python API and its pure-PyTorch reference. Kernel: csrc/quant.cpp (schema + CPU; CPU only, as int8 inference is).

quantize_u8(x) → (q, scale): x non-negative (a ReLU output), float32 or bfloat16, any layout; scale = max(x) / 255
(1 when the max is <= 0), q = clamp(round(x / scale), 0, 255) as uint8 with x's strides (a channels_last input stays
channels_last, which oneDNN's int8 convolution reads), NaN → 0. One scale per call, from the tensor itself: no
calibration, and an outlier only coarsens that one tensor's steps.
"""
from __future__ import annotations

import torch

from .backend import _check_tensor, _fake, _use_ext


def quantize_u8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q uint8 with x's strides, scale float32 0-d tensor) of a non-negative float32 / bfloat16 tensor: q = clamp(
    round_half_even(x * (1 / scale)), 0, 255), scale = max(x) / 255 (1 when max(x) <= 0). No autograd."""
    _check_tensor(x, "x")
    if x.dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"quantize_u8: x must be float32 or bfloat16, got {x.dtype}")
    if x.requires_grad and torch.is_grad_enabled():
        raise RuntimeError("quantize_u8 has no autograd: call it under torch.no_grad()")
    if x.device.type == "cpu" and _use_ext(x.device):
        return torch.ops.trashseg.quantize_u8(x)
    return ref_quantize_u8(x)


def ref_quantize_u8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quantize_u8 in plain torch, the same float32 operations (the kernel gives the same bits)."""
    xf = x.float()
    m = torch.where(torch.isnan(xf), 0.0, xf).amax() if x.numel() else xf.new_zeros(())
    scale = torch.where(m > 0, m / 255.0, torch.ones_like(m))  # float32, as the kernel's m / 255.f
    inv = 1.0 / scale
    v = xf * inv
    q = torch.where(torch.isnan(v), 0.0, v).clamp(0.0, 255.0).round()
    return q.to(torch.uint8), scale


@_fake("trashseg::quantize_u8")
def _quantize_u8_fake(x):
    return torch.empty_like(x, dtype=torch.uint8), x.new_empty((), dtype=torch.float32)
