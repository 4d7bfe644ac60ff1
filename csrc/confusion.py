"""The fused confusion matrix (argmax + bincount in one pass), its deferred CUDA error check, mIoU from the matrix,
and the pure-PyTorch reference (csrc/ops.py has the semantics)."""
from __future__ import annotations

import warnings

import torch

from .backend import (_FLOAT_DTYPES, _INT_DTYPES, _NO_VALUE, _WIDE_UINTS, _check_int, _check_tensor, _err_buffers,
                      _err_lock, _ext_for, _fake, _use_ext)


def _check_confusion_args(pred, target, num_classes, ignore_index):
    _check_tensor(pred, "pred")
    _check_tensor(target, "target")
    num_classes = _check_int(num_classes, "num_classes", 1)
    ignore_index = _NO_VALUE if ignore_index is None else _check_int(ignore_index, "ignore_index")
    if target.dim() != 3:
        raise ValueError(f"target must be (B, H, W), got shape {tuple(target.shape)}")
    if target.dtype not in _INT_DTYPES + _WIDE_UINTS:
        raise TypeError(f"target must have an integer dtype, got {target.dtype}")
    if pred.device != target.device:
        raise ValueError(f"pred is on {pred.device} but target is on {target.device}")
    if pred.dim() == 3:
        if pred.dtype not in _INT_DTYPES + _WIDE_UINTS:
            raise TypeError(f"pred labels (B, H, W) must have an integer dtype, got {pred.dtype} "
                            "(pass logits as (B, C, H, W))")
        if pred.shape != target.shape:
            raise ValueError(f"pred labels have shape {tuple(pred.shape)} but target has {tuple(target.shape)}")
    elif pred.dim() == 4:
        if pred.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"pred logits (B, C, H, W) must be float32/float16/bfloat16, got {pred.dtype}")
        if pred.shape[1] != num_classes:
            raise ValueError(f"pred logits have {pred.shape[1]} channels but num_classes={num_classes}")
        if (pred.shape[0],) + tuple(pred.shape[2:]) != tuple(target.shape):
            raise ValueError(f"pred logits have shape {tuple(pred.shape)} but target has {tuple(target.shape)} "
                             "(batch and spatial sizes must match)")
    else:
        raise ValueError(f"pred must be labels (B, H, W) or logits (B, C, H, W), got shape {tuple(pred.shape)}")
    return num_classes, ignore_index


def _error_buffer(device: torch.device) -> torch.Tensor:
    """The device's error buffer, made by _ext_for (every op entry calls _use_ext first)."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    buf = _err_buffers.get(device)
    if buf is None:  # only outside the ops' entry points (they call _use_ext first, which makes it)
        _ext_for(str(device))
        buf = _err_buffers[device]
    return buf


def check_errors(device: torch.device | str | None = None) -> None:
    """Raise ValueError if a CUDA confusion_matrix call since the last check met an out-of-range label.

    Reads (and so syncs with) the per-device error buffer, then clears it. device=None checks every device used.
    CPU calls raise immediately and never leave anything here."""
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    with _err_lock:
        items = [(d, b) for d, b in _err_buffers.items() if device is None or d == device]
    for d, buf in items:
        if d.type == "cuda":
            # Kernels may have been queued on any stream (not only the current one): wait for all of them, so
            # none writes the buffer after it is read and cleared.
            torch.cuda.synchronize(d)
        tcount, tval, pcount, pval = buf.tolist()
        if tcount == 0 and pcount == 0:
            continue
        buf.copy_(torch.tensor([0, _NO_VALUE, 0, _NO_VALUE], dtype=torch.int64))
        if d.type == "cuda":
            torch.cuda.synchronize(d)  # the clear lands before kernels queued on other streams may write again
        parts = []
        if tcount:
            parts.append(f"target has {tcount} pixel(s) outside [0, num_classes) that are not ignore_index "
                         f"(e.g. value {tval})")
        if pcount:
            parts.append(f"pred has {pcount} label(s) outside [0, num_classes) (e.g. value {pval})")
        raise ValueError(f"confusion_matrix on {d}: " + "; ".join(parts) +
                         "; those pixels were left out of the matrix")


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int | None = 255) -> torch.Tensor:
    """int64 (C, C) confusion matrix on pred's device; rows = ground truth, cols = prediction.

    pred: labels (B, H, W) of any integer dtype, or logits (B, C, H, W) float32/float16/bfloat16 (argmax fused).
    target: (B, H, W) integer labels; ignore_index pixels are skipped (None: skip nothing). See the module docstring
    for out-of-range labels (ValueError; deferred to check_errors()/miou() on CUDA)."""
    C, ignore = _check_confusion_args(pred, target, num_classes, ignore_index)
    if not _use_ext(target.device):
        return ref_confusion_matrix(pred, target, C, ignore)
    if target.dtype in _WIDE_UINTS:
        target = target.to(torch.int64)
    if pred.dim() == 3 and pred.dtype in _WIDE_UINTS:
        pred = pred.to(torch.int64)
    return torch.ops.trashseg.confusion_matrix(pred, target, C, ignore, _error_buffer(target.device))


@_fake("trashseg::confusion_matrix")
def _confusion_matrix_fake(pred, target, num_classes, ignore_index, errors):
    return target.new_empty((num_classes, num_classes), dtype=torch.int64)


def miou(cm: torch.Tensor) -> dict:
    """Metrics from a (C, C) confusion matrix (rows GT, cols prediction), computed in float64 on the CPU.

    iou: (C,) float64, NaN where TP + FP + FN == 0; miou: nanmean of iou; acc: pixel accuracy; class_acc: (C,)
    per-class recall, NaN where the class has no ground-truth pixel; macc: nanmean of class_acc.
    For a CUDA cm this first calls check_errors(cm.device)."""
    _check_tensor(cm, "cm")
    if cm.dim() != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be square (C, C), got shape {tuple(cm.shape)}")
    if cm.device.type != "cpu":
        check_errors(cm.device)
    m = cm.detach().to("cpu", torch.float64)
    tp = m.diagonal()
    gt = m.sum(1)
    pr = m.sum(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        iou = tp / (gt + pr - tp)  # 0/0 -> NaN for classes absent from both
        class_acc = tp / gt
        total = m.sum()
        acc = float(tp.sum() / total) if total > 0 else float("nan")
    return {"iou": iou, "miou": float(torch.nanmean(iou)), "acc": acc,
            "macc": float(torch.nanmean(class_acc)), "class_acc": class_acc}


def ref_confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                         ignore_index: int | None = 255) -> torch.Tensor:
    """Pure-PyTorch oracle: argmax (for logits), drop ignore_index pixels, one bincount. Raises ValueError (with a
    host sync) on out-of-range labels, as the CPU kernel does."""
    C = int(num_classes)
    if pred.dim() == 4:
        pred = pred.argmax(1)
    t = target.reshape(-1).to(torch.int64)
    p = pred.reshape(-1).to(torch.int64)
    if ignore_index is not None:
        keep = t != ignore_index
        t, p = t[keep], p[keep]
    if t.numel():
        bad_t = (t < 0) | (t >= C)
        bad_p = ~bad_t & ((p < 0) | (p >= C))
        nt, np_ = int(bad_t.sum()), int(bad_p.sum())
        if nt or np_:
            parts = []
            if nt:
                parts.append(f"target has {nt} pixel(s) outside [0, {C}) that are not ignore_index={ignore_index} "
                             f"(e.g. value {int(t[bad_t][0])})")
            if np_:
                parts.append(f"pred has {np_} label(s) outside [0, {C}) (e.g. value {int(p[bad_p][0])})")
            raise ValueError("confusion_matrix: " + "; ".join(parts))
    return torch.bincount(t * C + p, minlength=C * C).reshape(C, C)
