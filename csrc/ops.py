"""Fused segmentation ops: confusion matrix (+ mIoU) and multi-scale / flip TTA merging.

    from csrc import ops
    cm = ops.confusion_matrix(logits_or_labels, target, num_classes=11)   # int64 (C, C), rows = GT, cols = pred
    stats = ops.miou(cm)                                                   # iou, miou, acc, macc, class_acc
    probs = ops.tta_merge(views, flips, out_size=(H, W))                   # float32 (B, C, H, W)

    acc = ops.TTAAccumulator(batch, num_classes, (H, W), device)          # streaming: one view alive at a time
    for scale in scales: acc.add(model(resize(img, scale)), flip=False); ...
    labels, maxprob = acc.argmax()

Backends. The C++/CUDA library (csrc/*.cpp, csrc/*.cu; built by csrc/build.py on first use, cached per machine)
serves CPU tensors, and CUDA tensors when it was built with CUDA. When it cannot be built or loaded, every op
falls back to its pure-PyTorch reference (`ref_*` below) after ONE RuntimeWarning that names the failure;
`ops.backend()` says what is in use. TRASHSEG_OPS=ref forces the references.

Semantics shared by both backends:
- confusion_matrix: pixels whose target equals ignore_index are skipped (whatever the prediction there). Any other
  target outside [0, C) is an error; so is a predicted label outside [0, C) on a counted pixel. Logits are reduced by
  argmax over channels like torch.argmax: ties go to the lowest index, and a NaN counts as the maximum (the first NaN
  wins). On the CPU an error raises ValueError at once. On CUDA the kernel does not sync with the host: it counts
  offending pixels into a per-device error buffer, leaves them out of the matrix, and the ValueError is raised at the
  next `ops.check_errors()` or `ops.miou(cm)` for a CUDA cm (which reads the buffer, and so syncs, once). Call one
  of them before trusting a CUDA matrix; errors from every call on that device since the last check are reported.
- tta_merge / TTAAccumulator: views are upcast to float32, resized like F.interpolate(mode="bilinear",
  align_corners=False, antialias=False) to out_size, softmax over channels, un-flipped (flip=True: the view was
  computed on a horizontally flipped image), and averaged. NaN logits give NaN probabilities at that pixel. A
  dimension whose size is unchanged is copied, not interpolated (F.interpolate computes 1·x + 0·x there, which turns
  a ±inf logit into NaN): a -inf logit (a masked class) gives probability exactly 0, a +inf one a NaN pixel, as
  torch.softmax does; neither reaches the neighbouring pixels. The CPU and CUDA kernels and the references all copy.
- float64 logits are argmaxed in float64 (confusion_matrix).
- torch.compile: every op has a fake kernel and the wrappers do not break the graph (fullgraph=True works).
- Autograd: none of the ops has a backward. tta_merge and TTAAccumulator.add refuse views that require grad (with
  grad mode on) instead of returning outputs that silently lost it; confusion_matrix's output is integer (like
  torch.argmax), so logits that require grad are accepted.
- All index arithmetic is 64-bit; inputs may be non-contiguous (logits for the confusion matrix are made contiguous
  first; TTA views are read through their strides without a copy).
"""
from __future__ import annotations

import os
import threading
import warnings
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "confusion_matrix", "miou", "check_errors", "tta_merge", "TTAAccumulator",
    "ref_confusion_matrix", "ref_tta_merge", "backend",
]

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_WIDE_UINTS = tuple(getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n))
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_NO_VALUE = -(2 ** 63)  # error buffer: "no offending value recorded"; also ignore_index=None

# ---------------------------------------------------------------------------------------------------- backend

_state_lock = threading.Lock()
_err_lock = threading.Lock()
_err_buffers: dict[torch.device, torch.Tensor] = {}  # per device: see confusion_matrix / check_errors
_state: dict = {"loaded": False, "cpu": False, "cuda": False, "error": None, "info": None}


def _ensure_loaded() -> dict:
    if _state["loaded"]:
        return _state
    with _state_lock:
        if _state["loaded"]:
            return _state
        if os.environ.get("TRASHSEG_OPS", "").lower() == "ref":
            _state.update(loaded=True, error="TRASHSEG_OPS=ref")
            return _state
        from . import build
        errors = []
        want_cuda = build.want_cuda()
        for cuda in ([True, False] if want_cuda else [False]):
            try:
                _state["info"] = build.load(cuda=cuda)
                _state.update(cpu=True, cuda=cuda)
            except Exception as e:  # a compiler error, a missing toolchain, a load error...
                first = str(e).strip().splitlines()[-1] if str(e).strip() else ""
                errors.append(f"{'CUDA' if cuda else 'CPU'} build: {type(e).__name__}: {first}"[:500])
                continue
            if cuda:
                # A build that loads but cannot launch (made for another GPU): its CPU kernels still serve, CUDA
                # tensors take the references. Only one library may be loaded per process, so no CPU rebuild.
                try:
                    build.smoke_cuda()
                except Exception as e:
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    errors.append(f"CUDA launch: {type(e).__name__}: {first}"[:500])
                    _state["cuda"] = False
            break
        if errors:
            _state["error"] = "; ".join(errors)
            what = ("CUDA tensors" if _state["cpu"] and not _state["cuda"] else "all tensors")
            warnings.warn(f"trashseg ops: the C++/CUDA extension failed ({_state['error']}); {what} use the "
                          "pure-PyTorch reference ops (correct, slower). Rebuild with `make ext` to see the full log.",
                          RuntimeWarning, stacklevel=3)
        if _state["cpu"]:
            _register_fakes()
        _state["loaded"] = True
        return _state


# Fake (meta) kernels: shapes and dtypes of each op's outputs, so torch.compile / FakeTensor can trace the ops
# without running them. Every op registers its own, next to its wrapper, with @_fake("trashseg::name"); a fake is
# attached when the library (which defines the schemas) loads, or at once if it is already loaded. A mutating op
# returning () has one too (it returns None).
_FAKES: dict[str, object] = {}


def _fake(qualname: str):
    def deco(fn):
        with _state_lock:
            _FAKES[qualname] = fn
            if _state["cpu"]:
                torch.library.register_fake(qualname, fn)
        return fn
    return deco


def _register_fakes() -> None:
    """Called once, by _ensure_loaded under _state_lock, when the library has loaded."""
    for name, fn in _FAKES.items():
        torch.library.register_fake(name, fn)


@torch.compiler.assume_constant_result
def _ext_for(device: str) -> bool:
    """Whether the C++/CUDA library serves tensors on `device` ("cpu", "cuda:0"). Loads it on the first call and
    creates the device's confusion-matrix error buffer.

    torch.compile runs this eagerly while tracing and treats the answer as a constant: the first-call build, the
    locks and the buffer's creation stay out of the graph (no graph break); the graph then only reads the buffer
    from _err_buffers (it becomes a graph input that the op mutates)."""
    s = _ensure_loaded()
    d = torch.device(device)
    use = bool(s.get(d.type, False)) if d.type in ("cpu", "cuda") else False
    if use and d not in _err_buffers:
        with _err_lock:
            if d not in _err_buffers:
                _err_buffers[d] = torch.tensor([0, _NO_VALUE, 0, _NO_VALUE], dtype=torch.int64, device=d)
    return use


def backend() -> dict:
    """Which implementation serves each device: {'cpu': 'ext'|'ref', 'cuda': 'ext'|'ref', 'error': str|None}."""
    s = _ensure_loaded()
    return {"cpu": "ext" if s["cpu"] else "ref", "cuda": "ext" if s["cuda"] else "ref", "error": s["error"],
            "cpu_isa": torch.ops.trashseg.cpu_isa("") if s["cpu"] else None}


def _use_ext(device: torch.device) -> bool:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _ext_for(str(device))


def _refuse_grad(op: str, tensors) -> None:
    """The ops have no backward: refuse, rather than return outputs that silently lost requires_grad."""
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(f"ops.{op}: an input requires grad but this op has no backward; pass .detach()ed "
                           "tensors or run it under torch.no_grad() (ref_* are the differentiable references)")


# ---------------------------------------------------------------------------------------------------- checks

def _check_tensor(x, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_int(v, name: str, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
            v = int(v)
        else:
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def _size2(out_size, name: str = "out_size") -> tuple[int, int]:
    if isinstance(out_size, int) and not isinstance(out_size, bool):
        out_size = (out_size, out_size)
    if isinstance(out_size, torch.Size):
        out_size = tuple(out_size)
    if not isinstance(out_size, (tuple, list)) or len(out_size) != 2:
        raise ValueError(f"{name} must be (H, W) or an int, got {out_size!r}")
    return _check_int(out_size[0], f"{name}[0]", 1), _check_int(out_size[1], f"{name}[1]", 1)


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


# ---------------------------------------------------------------------------------------------------- confusion

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


# ---------------------------------------------------------------------------------------------------- TTA

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


# ---------------------------------------------------------------------------------------------------- references

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


# ---------------------------------------------------------------------------------------------------- slide
# Sliding-window inference (SPEC §4 "Slide inference", mmseg's test_cfg mode='slide'): the window-sum op and its
# Python API. Kernels: csrc/slide.cpp (schema + CPU), csrc/slide_cuda.cu; reference: ref_slide_accumulate_ below.
#
# Memory: a slid view holds ONE (B, C, H, W) float32 sum. The per-pixel window count is not stored: the grid is
# separable, so count(y, x) = count_y(y) * count_x(x), computed in O(1) per axis by the kernels (csrc/slide.h),
# where mmseg keeps a full count plane and a padded full-size copy of every window (F.pad + add).
# Feeding the TTA merge: the op's finalize step divides the sum by the count in place, so the same buffer then holds
# the view's logits and TTAAccumulator.add() reads it as any view (through its strides, no copy). Folding the
# division into the TTA kernel instead (a per-pixel divisor) would save that one in-place pass (~1% of a window's
# model time) but tie two kernels' interfaces together; the in-place pass keeps tta_accumulate_ unchanged and the
# slid logits usable on their own (e.g. for the single-scale metric).

__all__ += ["slide_grid", "slide_accumulate_", "SlideAccumulator", "ref_slide_accumulate_"]


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
