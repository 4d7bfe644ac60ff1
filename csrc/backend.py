"""The ops' backend: loading the C++/CUDA library (csrc/build.py) once per process, the pure-PyTorch fallback with
its one warning, the fake-kernel table, and which implementation serves a device (csrc/ops.py has the semantics)."""
from __future__ import annotations

import os
import threading
import warnings

import torch

_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_WIDE_UINTS = tuple(getattr(torch, n) for n in ("uint16", "uint32", "uint64") if hasattr(torch, n))
_FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
_NO_VALUE = -(2 ** 63)  # error buffer: "no offending value recorded"; also ignore_index=None

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
