"""Multi-scale, flip test-time augmentation through the fused streaming merge (SPEC §4 TTA).

Only one view's logits are alive at a time: each view is resized, softmaxed, un-flipped and added into one running
float32 (B, C, H, W) accumulator by csrc's fused kernel, so memory is bounded whatever the number of views
(mmseg 1.x keeps every view's full-size map).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from csrc import ops
from engine.evaluate import autocast

TTA_SCALES = (256, 384, 512, 640)  # SPEC §4: the team's scales (step 128) × horizontal flip, for 512-px images
TTA_RATIOS = (0.5, 0.75, 1.0, 1.25)  # the same views for an image of any size: ratios of its longer side


def view_size(h: int, w: int, scale: int | float | None) -> tuple[int, int]:
    """An int s resizes the image so its longer side is s; a float r scales it by r; None keeps it. Aspect kept.

    For the competition's 512×512 images, 256/384/512/640 and 0.5/0.75/1.0/1.25 are the same s×s views the team used.
    """
    if scale is None:
        return h, w
    r = scale if isinstance(scale, float) else scale / max(h, w)
    return max(1, int(round(h * r))), max(1, int(round(w * r)))


def _view_step(model: torch.nn.Module, xv: torch.Tensor, acc: "ops.TTAAccumulator", flipped: bool,
               amp: str) -> torch.Tensor:
    with autocast(xv.device, amp):
        logits = model(xv)  # (B, C, vh, vw)
    acc.add(logits, flip=flipped)
    return logits


_compiled_steps: dict = {}


def compiled_view_step():
    """torch.compile of one view's forward + the accumulator's fused add, one graph (the ops have fake kernels and
    no Python-side graph break). Shapes are marked dynamic after the first recompile, so the TTA scales share code."""
    if "step" not in _compiled_steps:
        _compiled_steps["step"] = torch.compile(_view_step)
    return _compiled_steps["step"]


@torch.no_grad()
def tta_accumulate(models: Sequence[torch.nn.Module], img: torch.Tensor, scales: Sequence[int | None],
                   flip: bool, amp: str = "none", channels_last: bool = False,
                   acc: "ops.TTAAccumulator | None" = None, on_view=None,
                   compile: bool = False) -> "ops.TTAAccumulator":
    """Feed every (model, scale, flip) view of a uint8 batch (B, 3, H, W) into one accumulator.

    Several models make a soft ensemble of teachers (each view weighs the same). `on_view(model_idx, scale, flipped,
    logits)` sees each view's logits after they are merged (infer.py uses it for the single-scale metric).
    compile=True runs each view's forward and merge through torch.compile (compiled_view_step).
    """
    step = compiled_view_step() if compile else _view_step
    b, _, h, w = img.shape
    num_classes = models[0].num_classes
    if acc is None:
        acc = ops.TTAAccumulator(b, num_classes, (h, w), img.device)
    for mi, model in enumerate(models):
        x0 = model.normalize(img)  # (B, 3, H, W) float32
        for s in scales:
            vh, vw = view_size(h, w, s)
            x = x0 if (vh, vw) == (h, w) else F.interpolate(x0, size=(vh, vw), mode="bilinear", align_corners=False)
            for flipped in ((False, True) if flip else (False,)):
                xv = x.flip(-1) if flipped else x
                if channels_last:
                    xv = xv.contiguous(memory_format=torch.channels_last)
                logits = step(model, xv, acc, flipped, amp)  # (B, C, vh, vw), already added into acc
                if on_view is not None:
                    on_view(mi, s, flipped, logits)
                del logits
    return acc
