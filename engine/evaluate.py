"""Validation: the fused confusion matrix accumulated on the device over the whole set, all-reduced once (SPEC §3)."""
from __future__ import annotations

import contextlib
import os
from typing import Iterable

import torch

from csrc import ops
from engine.dist import DistInfo, all_reduce_sum


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo, or None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16): only then does CPU bf16 autocast pay
    (1.9x on the forward with avx512_bf16). Without it oneDNN emulates bf16 and a matmul runs ~100x slower than
    fp32 (measured on an AVX2 EPYC: 0.12 vs 21 GFLOP/s). TRASHSEG_CPU_BF16=0/1 overrides the detection."""
    env = os.environ.get("TRASHSEG_CPU_BF16")
    if env in ("0", "1"):
        return env == "1"
    flags = _cpu_flags()
    if flags is not None:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    try:  # no /proc/cpuinfo (not Linux): ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX-BF16 tiles (Intel Xeon 4th generation and later). There bf16 inference (channels_last)
    runs at 4.9x transformers' fp32 (ConvNeXt-T UperNet, 512², 2 vCPUs); with avx512_bf16 alone (AMD Zen 4) at
    1.8-1.9x, no faster than our fp32 with Winograd convolutions (1.9-2.0x) (README "Per CPU kind").
    TRASHSEG_CPU_AMX=0/1 overrides the detection."""
    env = os.environ.get("TRASHSEG_CPU_AMX")
    if env in ("0", "1"):
        return env == "1"
    flags = _cpu_flags()
    return flags is not None and "amx_bf16" in flags  # not Linux: unknown, so inference keeps the exact fp32 path


def resolve_amp(amp: str, device: torch.device) -> str:
    """--amp auto -> bf16 on CUDA and on a CPU with native bf16, else none (fp32). bf16 / fp16 / none are kept:
    they force either way."""
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "none"


def run_precision(amp: str, device: torch.device) -> tuple[str, str]:
    """train.py's (training, validation) precision for --amp. auto is bf16 for both on CUDA and on a CPU with native
    bf16 (avx512_bf16 or AMX), fp32 elsewhere, where bf16 is emulated and trains 14x slower than fp32. On the AMX
    Xeon `make train` in bf16 reached the fp32 runs' mIoU over three seeds at 1.2-1.5x their speed; the Zen 4 EPYC's
    bf16 step is 1.35x its fp32 one (README "Precision and compile"). Anything else is used for both."""
    if amp != "auto":
        return amp, amp
    a = resolve_amp("auto", device)
    return a, a


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # CPU autocast has no useful fp16 path
    return torch.autocast(device_type=device.type, dtype=dtype)


def _val_step(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, num_classes: int,
              amp: str) -> torch.Tensor:
    with autocast(x.device, amp):
        logits = model(x)  # (B, C, H, W)
    return ops.confusion_matrix(logits, mask, num_classes)  # (C, C) int64


_compiled: dict = {}


def _compiled_val_step():
    if "val" not in _compiled:
        _compiled["val"] = torch.compile(_val_step)
    return _compiled["val"]


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], num_classes: int, device: torch.device,
             info: DistInfo, amp: str = "none", channels_last: bool = False,
             normalize=None, compile: bool = False) -> dict:
    """Return ops.miou's dict (per-class IoU, mIoU, acc, macc) plus the confusion matrix, identical on every rank.

    compile=True: the forward and the fused confusion matrix run as one torch.compile graph (_val_step)."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for batch in loader:
        img = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W) uint8
        x = normalize(img)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # padded pixels carry 255 in the mask, so the metric ignores them
        step = _compiled_val_step() if compile else _val_step
        cm += step(model, x, batch["mask"].to(device, non_blocking=True), num_classes, amp)
    all_reduce_sum(cm, info)  # one collective per validation, no host sync per batch
    res = ops.miou(cm)
    res["cm"] = cm.cpu()
    model.train(was_training)
    return res
