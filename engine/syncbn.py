"""Synchronised BatchNorm for every backend: torch's SyncBatchNorm on CUDA, our own all-reduce version on the CPU.

torch.nn.SyncBatchNorm refuses CPU tensors, yet a gloo run must compute the same statistics as one process with the
global batch (that is what makes 2 processes × B equal 1 process × 2B). The CPU version all-reduces per-channel sum,
sum of squares and count with a differentiable all_reduce, so gradients flow across ranks as in SyncBatchNorm.
State-dict keys are BatchNorm's, so checkpoints stay interchangeable.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: y = Σ_r x_r on every rank, so ∂L/∂x_r = Σ_r' ∂L_r'/∂y (an all-reduce of the
    gradient). What torch.distributed.nn.functional.all_reduce did; that API is deprecated (a FutureWarning on every
    rank), and the functional collectives that replace it are not differentiable through gloo."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y, op=dist.ReduceOp.SUM)
        return y

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:
        g = g.clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM)
        return g


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x)


class CPUSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xd = x.double()  # sums over a whole global batch: float64 keeps E[x²] − E[x]² exact enough
        local = torch.cat([xd.sum(dims), (xd * xd).sum(dims), xd.new_tensor([x.numel() / c])])  # (2C + 1,)
        tot = all_reduce(local)  # differentiable: gradients reach every rank's inputs
        n = tot[-1]
        mean = tot[:c] / n  # (C,)
        var = (tot[c:2 * c] / n - mean * mean).clamp_min(0)  # biased, as BN normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_((var * n / (n - 1).clamp_min(1)).to(self.running_var.dtype),
                                                  alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.double().view(shape) + self.bias.double().view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_cpu(module)


def _convert_cpu(module: nn.Module) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, CPUSyncBatchNorm):
        out = CPUSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight.copy_(module.weight)
                out.bias.copy_(module.bias)
        if module.track_running_stats:
            out.running_mean.copy_(module.running_mean)
            out.running_var.copy_(module.running_var)
            out.num_batches_tracked.copy_(module.num_batches_tracked)
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, _convert_cpu(child))
    return out
