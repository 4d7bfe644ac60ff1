"""Validation: the fused confusion matrix accumulated on the device over the whole set, all-reduced once (SPEC §3)."""
from __future__ import annotations

import contextlib
from typing import Iterable

import torch

from csrc import ops
from engine.dist import DistInfo, all_reduce_sum


def autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16  # CPU autocast has no useful fp16 path
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Iterable[dict], num_classes: int, device: torch.device,
             info: DistInfo, amp: str = "none", channels_last: bool = False,
             normalize=None) -> dict:
    """Return ops.miou's dict (per-class IoU, mIoU, acc, macc) plus the confusion matrix, identical on every rank."""
    was_training = model.training
    model.eval()
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    for batch in loader:
        img = batch["image"].to(device, non_blocking=True)  # (B, 3, H, W) uint8
        x = normalize(img)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp):
            logits = model(x)  # (B, C, H, W)
        # padded pixels carry 255 in the mask, so the metric ignores them
        cm += ops.confusion_matrix(logits, batch["mask"].to(device, non_blocking=True), num_classes)
    all_reduce_sum(cm, info)  # one collective per validation, no host sync per batch
    res = ops.miou(cm)
    res["cm"] = cm.cpu()
    model.train(was_training)
    return res
