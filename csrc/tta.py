"""Test-time augmentation merge: the mean over views of softmax(resize(view)), fused (tta_merge) or streamed one view
at a time (TTAAccumulator), and the pure-PyTorch reference (csrc/ops.py has the semantics)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .backend import _FLOAT_DTYPES, _check_int, _check_tensor, _fake, _refuse_grad, _size2, _use_ext


def _check_views(views, flips, out_size):
    if isinstance(views, torch.Tensor) or not isinstance(views, (list, tuple)):
        raise TypeError("views must be a list of (B, C, h, w) logits tensors")
    if len(views) == 0:
        raise ValueError("views is empty")
    if isinstance(flips, (bool, int)) or not isinstance(flips, (list, tuple)):
        raise TypeError("flips must be a list of bools, one per view")
    if len(flips) != len(views):
        raise ValueError(f"got {len(views)} views but {len(flips)} flips")
    H, W = _size2(out_size)
    for k, v in enumerate(views):
        _check_tensor(v, f"views[{k}]")
        if v.dim() != 4:
            raise ValueError(f"views[{k}] must be (B, C, h, w), got shape {tuple(v.shape)}")
        if v.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"views[{k}] must be float32/float16/bfloat16, got {v.dtype}")
        if v.shape[2] == 0 or v.shape[3] == 0 or v.shape[1] == 0:
            raise ValueError(f"views[{k}] is empty: {tuple(v.shape)}")
        if v.shape[:2] != views[0].shape[:2]:
            raise ValueError(f"views[{k}] has (B, C) = {tuple(v.shape[:2])} but views[0] has "
                             f"{tuple(views[0].shape[:2])}")
        if v.device != views[0].device:
            raise ValueError(f"views[{k}] is on {v.device} but views[0] is on {views[0].device}")
    return H, W


def tta_merge(views: Sequence[torch.Tensor], flips: Sequence[bool], out_size) -> torch.Tensor:
    """Mean over views of softmax(bilinear_resize(view, out_size)) (un-flipped): float32 (B, C, H, W).

    One fused pass: each output pixel gathers its taps from every view, so no per-view full-size map exists."""
    H, W = _check_views(views, flips, out_size)
    _refuse_grad("tta_merge", views)
    v0 = views[0]
    if not _use_ext(v0.device):
        return ref_tta_merge(views, flips, (H, W))
    out = torch.empty((v0.shape[0], v0.shape[1], H, W), dtype=torch.float32, device=v0.device)
    torch.ops.trashseg.tta_accumulate_(out, list(views), [int(bool(f)) for f in flips], False, 1.0 / len(views))
    return out


@_fake("trashseg::tta_accumulate_")
def _tta_accumulate_fake(out, views, flips, accumulate, scale):
    return None


@_fake("trashseg::channel_argmax")
def _channel_argmax_fake(x, scale, int64_labels):
    B, _, H, W = x.shape
    return (x.new_empty((B, H, W), dtype=torch.int64 if int64_labels else torch.uint8),
            x.new_empty((B, H, W), dtype=torch.float32))


class TTAAccumulator:
    """Running sum of per-view probabilities: holds one (B, C, H, W) float32 map, whatever the number of views.

        acc = TTAAccumulator(batch, num_classes, (H, W), device)
        acc.add(logits, flip=False)        # any size, float32/float16/bfloat16; upcast, resized, softmaxed, summed
        probs = acc.probs()                # float32 (B, C, H, W): the mean (a new tensor; inplace=True reuses ours)
        labels, maxprob = acc.argmax()     # (B, H, W) uint8 (int64 if C > 256) and float32 max mean probability
    """

    def __init__(self, batch: int, num_classes: int, out_size, device: torch.device | str | None = None):
        self.batch = _check_int(batch, "batch", 1)
        self.num_classes = _check_int(num_classes, "num_classes", 1)
        self.out_size = _size2(out_size)
        self.device = torch.device(device if device is not None else "cpu")
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        H, W = self.out_size
        # Not zeroed: the first add() writes it.
        self._sum = torch.empty((self.batch, self.num_classes, H, W), dtype=torch.float32, device=self.device)
        self.count = 0
        self._consumed = False

    def reset(self) -> None:
        self.count = 0
        self._consumed = False

    def add(self, logits: torch.Tensor, flip: bool = False) -> None:
        if self._consumed:
            raise RuntimeError("TTAAccumulator: probs(inplace=True) already consumed the sum; call reset() first")
        _check_tensor(logits, "logits")
        if logits.dim() != 4:
            raise ValueError(f"logits must be (B, C, h, w), got shape {tuple(logits.shape)}")
        if logits.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"logits must be float32/float16/bfloat16, got {logits.dtype}")
        if logits.shape[0] != self.batch or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits have (B, C) = {tuple(logits.shape[:2])} but the accumulator was made for "
                             f"({self.batch}, {self.num_classes})")
        if logits.shape[2] == 0 or logits.shape[3] == 0:
            raise ValueError(f"logits are empty: {tuple(logits.shape)}")
        if logits.device != self.device:
            raise ValueError(f"logits are on {logits.device} but the accumulator is on {self.device}")
        _refuse_grad("TTAAccumulator.add", [logits])
        if _use_ext(self.device):
            torch.ops.trashseg.tta_accumulate_(self._sum, [logits], [int(bool(flip))], self.count > 0, 1.0)
        else:
            p = _ref_view_probs(logits, bool(flip), self.out_size)
            if self.count == 0:
                self._sum.copy_(p)
            else:
                self._sum.add_(p)
        self.count += 1

    def _need_views(self):
        if self.count == 0:
            raise RuntimeError("TTAAccumulator: no views were added")
        if self._consumed:
            raise RuntimeError("TTAAccumulator: probs(inplace=True) already consumed the sum; call reset() first")

    def probs(self, inplace: bool = False) -> torch.Tensor:
        """The mean probability map. inplace=True scales the internal buffer and returns it (no new map); the
        accumulator is then consumed until reset()."""
        self._need_views()
        if inplace:
            self._consumed = True
            return self._sum.mul_(1.0 / self.count)
        return self._sum * (1.0 / self.count)

    def argmax(self, dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels (B, H, W), maxprob (B, H, W) float32) from the mean, without another (B, C, H, W) map.

        dtype: torch.uint8 (default when num_classes <= 256) or torch.int64. Ties and NaN as torch.argmax."""
        self._need_views()
        if dtype is None:
            dtype = torch.uint8 if self.num_classes <= 256 else torch.int64
        if dtype not in (torch.uint8, torch.int64):
            raise TypeError(f"dtype must be torch.uint8 or torch.int64, got {dtype}")
        if dtype == torch.uint8 and self.num_classes > 256:
            raise ValueError(f"uint8 labels cannot hold {self.num_classes} classes")
        if _use_ext(self.device):
            return torch.ops.trashseg.channel_argmax(self._sum, 1.0 / self.count, dtype == torch.int64)
        values, idx = self._sum.max(dim=1)
        return idx.to(dtype), values * (1.0 / self.count)


def _ref_resize(x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """F.interpolate(bilinear, align_corners=False), except that a dimension whose size is unchanged is copied.

    F.interpolate computes 1·x + 0·x along such a dimension, which turns a ±inf logit into NaN (a class masked
    with -inf in the 1.0-scale view would be NaN everywhere, not probability 0); for finite inputs both are identical.
    Resizing one dimension only is 1-D linear interpolation along it (the same taps and weights)."""
    B, C, h, w = x.shape
    H, W = out_size
    if (h, w) == (H, W):
        return x
    if h == H:  # (B, C*h, w) -> (B, C*h, W)
        return F.interpolate(x.reshape(B, C * h, w), size=W, mode="linear", align_corners=False).reshape(B, C, H, W)
    if w == W:  # along H: the same on the transposed map
        xt = x.transpose(2, 3).reshape(B, C * w, h)
        return F.interpolate(xt, size=H, mode="linear", align_corners=False).reshape(B, C, W, H).transpose(2, 3)
    return F.interpolate(x, size=out_size, mode="bilinear", align_corners=False)


def _ref_view_probs(view: torch.Tensor, flip: bool, out_size: tuple[int, int]) -> torch.Tensor:
    p = _ref_resize(view.float(), out_size).softmax(1)
    return p.flip(-1) if flip else p


def ref_tta_merge(views: Sequence[torch.Tensor], flips: Sequence[bool], out_size) -> torch.Tensor:
    """Pure-PyTorch oracle, as mmseg does it: every view's full-size probability map, stacked, averaged."""
    out_size = _size2(out_size)
    probs = [_ref_view_probs(v, bool(f), out_size) for v, f in zip(views, flips)]
    return torch.stack(probs).mean(0)
