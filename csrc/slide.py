"""Sliding-window inference (SPEC §4 "Slide inference", mmseg's test_cfg mode='slide'): the window-sum op, its Python
API and its pure-PyTorch reference. Kernels: csrc/slide.cpp (schema + CPU), csrc/slide_cuda.cu.

Memory: a slid view holds ONE (B, C, H, W) float32 sum. The per-pixel window count is not stored: the grid is
separable, so count(y, x) = count_y(y) * count_x(x), computed in O(1) per axis by the kernels (csrc/slide.h),
where mmseg keeps a full count plane and a padded full-size copy of every window (F.pad + add).
Feeding the TTA merge: the op's finalize step divides the sum by the count in place, so the same buffer then holds
the view's logits and TTAAccumulator.add() reads it as any view (through its strides, no copy). Folding the
division into the TTA kernel instead (a per-pixel divisor) would save that one in-place pass (~1% of a window's
model time) but tie two kernels' interfaces together; the in-place pass keeps tta_accumulate_ unchanged and the
slid logits usable on their own (e.g. for the single-scale metric).
"""
from __future__ import annotations

import torch

from .backend import _FLOAT_DTYPES, _check_int, _check_tensor, _fake, _size2, _use_ext


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, (tuple, list, torch.Size)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or (h, w), got {v!r}")
        return _check_int(v[0], f"{name}[0]", 1), _check_int(v[1], f"{name}[1]", 1)
    v = _check_int(v, name, 1)
    return v, v


def _slide_args(crop, stride) -> tuple[tuple[int, int], tuple[int, int]]:
    crop, stride = _pair(crop, "crop"), _pair(stride, "stride")
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ValueError(f"stride {stride} is larger than crop {crop}: pixels between windows would get no logits")
    return crop, stride


def _grids(size: int, crop: int, stride: int) -> int:
    return max(size - crop + stride - 1, 0) // stride + 1


def slide_grid(size, crop, stride) -> list[tuple[int, int, int, int]]:
    """mmseg's window grid for an (H, W) image: [(y0, y1, x0, x1), ...] rows outer, columns inner.

    Per axis max(H - crop + stride - 1, 0) // stride + 1 windows; window i spans [i*stride, min(i*stride + crop, H))
    with its start moved back to max(end - crop, 0): every window is min(crop, H) × min(crop, W)."""
    H, W = _size2(size, "size")
    (ch, cw), (sh, sw) = _slide_args(crop, stride)
    out = []
    for i in range(_grids(H, ch, sh)):
        y1 = min(i * sh + ch, H)
        y0 = max(y1 - ch, 0)
        for j in range(_grids(W, cw, sw)):
            x1 = min(j * sw + cw, W)
            out.append((y0, y1, max(x1 - cw, 0), x1))
    return out


@_fake("trashseg::slide_accumulate_")
def _slide_accumulate_fake(out, windows, crop, stride, first, finalize):
    return None


def slide_accumulate_(out: torch.Tensor, windows: torch.Tensor, crop, stride, first: int,
                      finalize: bool) -> torch.Tensor:
    """Add grid windows first .. first+K-1 into a view's float32 logit sum `out` (B, C, H, W); returns out.

    windows: (K*B, C, min(crop, H), min(crop, W)) logits of any float dtype and strides, window k's image b at
    k*B + b. first == 0 zeroes out first. finalize=True (with the last window) divides out by each pixel's window
    count in place: out is then the view's logits, mmseg's preds / count_mat bit for bit."""
    _check_tensor(out, "out")
    _check_tensor(windows, "windows")
    if out.requires_grad or windows.requires_grad:
        raise RuntimeError("slide_accumulate_ has no autograd: call it under torch.no_grad() or pass .detach()ed "
                           "tensors")
    (ch, cw), (sh, sw) = _slide_args(crop, stride)
    first = _check_int(first, "first", 0)
    if out.dim() != 4 or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 (B, C, H, W) tensor, got {out.dtype} "
                         f"{tuple(out.shape)}")
    if windows.dim() != 4 or windows.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"windows must be float (K*B, C, h, w) logits, got {windows.dtype} {tuple(windows.shape)}")
    if windows.device != out.device:
        raise ValueError(f"windows are on {windows.device} but out is on {out.device}")
    B, C, H, W = out.shape
    eh, ew = min(ch, H), min(cw, W)
    if B == 0 or H == 0 or W == 0 or windows.shape[0] == 0 or windows.shape[0] % B or \
            tuple(windows.shape[1:]) != (C, eh, ew):
        raise ValueError(f"windows have shape {tuple(windows.shape)} but out {tuple(out.shape)} with crop "
                         f"{(ch, cw)} needs (K*{B}, {C}, {eh}, {ew})")
    K, total = windows.shape[0] // B, _grids(H, ch, sh) * _grids(W, cw, sw)
    if first + K > total:
        raise ValueError(f"windows {first}..{first + K - 1} are outside the grid of {total} windows")
    if finalize and first + K != total:
        raise ValueError(f"finalize needs the last window ({total - 1}); got windows up to {first + K - 1}")
    if _use_ext(out.device):
        torch.ops.trashseg.slide_accumulate_(out, windows, [ch, cw], [sh, sw], first, bool(finalize))
    else:
        ref_slide_accumulate_(out, windows, (ch, cw), (sh, sw), first, finalize)
    return out


class SlideAccumulator:
    """One slid view: a float32 (B, C, H, W) logit sum fed window by window, in grid order.

        sa = SlideAccumulator(batch, num_classes, (H, W), crop=512, stride=341, device=dev)
        for y0, y1, x0, x1 in sa.windows:              # mmseg's grid (slide_grid), rows outer
            sa.add(model(img[..., y0:y1, x0:x1]))      # (B, C, y1-y0, x1-x0); or k windows stacked as (k*B, ...)
        logits = sa.logits()                           # (B, C, H, W) float32 = sum / count, the buffer itself

    The last add() divides by the count in place (slide_accumulate_'s finalize): no second full-size map exists."""

    def __init__(self, batch: int, num_classes: int, size, crop, stride, device: torch.device | str | None = None):
        self.batch = _check_int(batch, "batch", 1)
        self.num_classes = _check_int(num_classes, "num_classes", 1)
        self.size = _size2(size, "size")
        self.crop, self.stride = _slide_args(crop, stride)
        self.windows = slide_grid(self.size, self.crop, self.stride)
        self.device = torch.device(device if device is not None else "cpu")
        # Not zeroed here: the first add() (first == 0) zeroes it in the same op.
        self._sum = torch.empty((self.batch, self.num_classes) + self.size, dtype=torch.float32,
                                device=self.device)
        self.next = 0

    @property
    def done(self) -> bool:
        return self.next == len(self.windows)

    def add(self, logits: torch.Tensor) -> None:
        """Logits of the next k windows, (k*B, C, h, w), window-major."""
        if self.done:
            raise RuntimeError("SlideAccumulator: every window was already added")
        _check_tensor(logits, "logits")
        if logits.dim() != 4 or logits.shape[0] % self.batch:
            raise ValueError(f"logits must be (k*{self.batch}, C, h, w), got {tuple(logits.shape)}")
        k = logits.shape[0] // self.batch
        slide_accumulate_(self._sum, logits, self.crop, self.stride, self.next,
                          self.next + k == len(self.windows))
        self.next += k

    def logits(self) -> torch.Tensor:
        if not self.done:
            raise RuntimeError(f"SlideAccumulator: {self.next} of {len(self.windows)} windows added")
        return self._sum


def ref_slide_accumulate_(out: torch.Tensor, windows: torch.Tensor, crop, stride, first: int,
                          finalize: bool) -> torch.Tensor:
    """Pure-PyTorch oracle, mmseg's way: slice-add each window into out, a full count plane, then out / count."""
    (ch, cw), (sh, sw) = _slide_args(crop, stride)
    B, _, H, W = out.shape
    grid = slide_grid((H, W), (ch, cw), (sh, sw))
    if first == 0:
        out.zero_()
    for k in range(windows.shape[0] // B):
        y0, y1, x0, x1 = grid[first + k]
        out[:, :, y0:y1, x0:x1] += windows[k * B:(k + 1) * B].float()
    if finalize:
        count = torch.zeros((H, W), dtype=torch.float32, device=out.device)
        for y0, y1, x0, x1 in grid:
            count[y0:y1, x0:x1] += 1
        out.div_(count)
    return out
