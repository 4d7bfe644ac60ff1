"""csrc ops under torch.compile (fake kernels, no graph break) and the kernels' awkward-input defects (issue 16).

Every comparison is against eager or the pure-PyTorch reference (F.interpolate + softmax, torch.argmax). The CPU
cases run both builds of the CPU kernels; the CUDA ones are marked `gpu` and skip without a device."""
import os
import subprocess
import sys

import pytest
import torch

from csrc import ops
from test_ops import isa  # noqa: F401  (the fixture: each CPU kernel build, restored to auto after)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

gpu = pytest.mark.gpu
DEVICES = ["cpu", pytest.param("cuda", marks=gpu)]


# ------------------------------------------------------------------------------------------------ torch.compile

def _steps():
    def metric(logits, target):  # validation: the fused argmax + confusion matrix from the model's logits
        return ops.confusion_matrix(logits * 2.0, target, 5)

    def merge(a, b):  # the TTA merge of two views, one flipped
        return ops.tta_merge([a, b.float()], [False, True], (8, 8))

    def stream(acc, a, b):  # the streaming accumulator: two adds and the read-out
        acc.add(a)
        acc.add(b, flip=True)
        return acc.argmax()
    return metric, merge, stream


@pytest.mark.heavy  # make test keeps a compiled step: test_compiled_view_step_and_validation_step_equal_eager
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_equals_eager(device):
    """fullgraph=True fails on any graph break (the first-call load, the error-buffer lock) and on an op without a
    fake kernel; inductor then runs the real kernels inside its graph."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 8, 8, generator=g).to(device)
    target = torch.randint(0, 5, (2, 8, 8), generator=g).to(device)
    target[0, 0, 0] = 255
    a = torch.randn(2, 5, 4, 4, generator=g).to(device)
    b = torch.randn(2, 5, 8, 8, generator=g).to(device, torch.bfloat16)
    metric, merge, stream = _steps()
    for fn, args in ((metric, (logits, target)), (merge, (a, b))):
        got = torch.compile(fn, fullgraph=True)(*args)
        assert torch.equal(got, fn(*args)), fn.__name__
    acc_c = ops.TTAAccumulator(2, 5, (8, 8), device)
    acc_e = ops.TTAAccumulator(2, 5, (8, 8), device)
    lab_c, p_c = torch.compile(stream, fullgraph=True)(acc_c, a, b)
    lab_e, p_e = stream(acc_e, a, b)
    assert acc_c.count == acc_e.count == 2
    assert torch.equal(lab_c, lab_e) and torch.equal(p_c, p_e)
    assert torch.equal(acc_c.probs(), acc_e.probs())


def test_fake_kernels_shapes():
    """Each op's fake kernel gives the real kernel's output shapes and dtypes (what the compiled graph assumes)."""
    if ops.backend()["cpu"] != "ext":
        pytest.skip("extension not built")
    from torch._subclasses.fake_tensor import FakeTensorMode
    x = torch.randn(2, 3, 5, 7)
    t = torch.randint(0, 3, (2, 5, 7), dtype=torch.uint8)
    err = ops._error_buffer(torch.device("cpu"))
    real = [torch.ops.trashseg.confusion_matrix(x, t, 3, 255, err), *torch.ops.trashseg.channel_argmax(x, 0.5, False),
            *torch.ops.trashseg.channel_argmax(x, 0.5, True)]
    with FakeTensorMode() as mode:
        fx, ft, fe = mode.from_tensor(x), mode.from_tensor(t), mode.from_tensor(err)
        fake = [torch.ops.trashseg.confusion_matrix(fx, ft, 3, 255, fe),
                *torch.ops.trashseg.channel_argmax(fx, 0.5, False), *torch.ops.trashseg.channel_argmax(fx, 0.5, True)]
        assert torch.ops.trashseg.tta_accumulate_(mode.from_tensor(torch.empty(2, 3, 4, 4)), [fx], [1], False, 1.0) \
            is None
    for r, f in zip(real, fake):
        assert (r.shape, r.dtype) == (f.shape, f.dtype)


# ------------------------------------------------------------------------------------------------ defects

def _nonfinite_view(B, C, h, w, dtype=torch.float32):
    g = torch.Generator().manual_seed(7)
    v = torch.randn(B, C, h, w, generator=g)
    v[0, 0, 1, 1] = float("inf")    # +inf: that pixel's softmax is NaN (inf - inf), as torch gives
    v[0, 1, 2, 2] = float("nan")
    v[-1, 2, 3, 0] = float("-inf")  # -inf: probability exactly 0 there
    v[:, C - 1] = float("-inf")     # a masked class: probability exactly 0 everywhere
    return v.to(dtype)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=gpu)])
def test_tta_same_size_views_copy_nonfinite(device, isa):
    """A view already at the output size (in H, in W or both) is copied as F.interpolate copies it: a non-finite
    logit stays at its pixel (a weight-0 tap must not carry it to its neighbours: 0 * inf = NaN), and -inf gives
    probability exactly 0 (it gave 8e-39 on the CPU)."""
    H, W = 6, 5
    for h, w in ((H, W), (H, 9), (4, W), (4, 3)):
        for dtype in (torch.float32, torch.bfloat16):
            v = _nonfinite_view(2, 4, h, w, dtype).to(device)
            for flip in (False, True):
                ref = ops.ref_tta_merge([v], [flip], (H, W))
                got = ops.tta_merge([v], [flip], (H, W))
                torch.testing.assert_close(got, ref, equal_nan=True, atol=0, rtol=2e-5, msg=f"{h}x{w} {flip}")
                acc = ops.TTAAccumulator(2, 4, (H, W), device)
                acc.add(v, flip=flip)
                acc.add(v, flip=not flip)
                ref2 = ops.ref_tta_merge([v, v], [flip, not flip], (H, W))
                torch.testing.assert_close(acc.probs(), ref2, equal_nan=True, atol=0, rtol=2e-5)
    # the merged map's argmax is not swamped: only the pixels torch makes NaN are NaN
    v = _nonfinite_view(1, 4, H, W).to(device)
    got = ops.tta_merge([v], [False], (H, W))
    assert int(got.isnan().any(1).sum()) == 2


@pytest.mark.parametrize("device", DEVICES)
def test_confusion_float64_logits_compare_in_float64(device, isa):
    """[1, 1 + 1e-12] is class 1 in float64 (a float32 round made it a tie, won by class 0)."""
    x = torch.ones(1, 2, 3, 4, dtype=torch.float64)
    x[:, 1] += 1e-12
    x[0, 0, 1, 2] += 2e-12  # one pixel where class 0 wins by as little
    t = torch.zeros(1, 3, 4, dtype=torch.long)
    ref = ops.ref_confusion_matrix(x, t, 2)
    assert ref.tolist() == [[1, 11], [0, 0]]
    got = ops.confusion_matrix(x.to(device), t.to(device), 2)
    assert got.cpu().tolist() == ref.tolist()
    # strided float64 (the CUDA kernel's unvectorised path) and a width that is not a multiple of the vector
    xs = torch.ones(2, 2, 5, 7, dtype=torch.float64)
    xs[:, 1] += 1e-12
    got = ops.confusion_matrix(xs.to(device), torch.ones(2, 5, 7, dtype=torch.long, device=device), 2)
    assert got.cpu().tolist() == [[0, 0], [0, 70]]


def test_ops_refuse_inputs_that_require_grad():
    """No backward is defined: refuse with a clear message instead of returning outputs without a grad_fn."""
    v = torch.randn(1, 3, 4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="requires grad.*no backward"):
        ops.tta_merge([v], [False], (5, 5))
    acc = ops.TTAAccumulator(1, 3, (5, 5))
    with pytest.raises(RuntimeError, match="requires grad"):
        acc.add(v)
    with torch.no_grad():  # inference: accepted
        ops.tta_merge([v], [False], (5, 5))
        acc.add(v)
    ops.tta_merge([v.detach()], [False], (5, 5))
    # the confusion matrix is integer-valued (like torch.argmax): logits that require grad are accepted
    cm = ops.confusion_matrix(v, torch.zeros(1, 4, 4, dtype=torch.long), 3)
    assert int(cm.sum()) == 16


def test_build_cache_key_includes_gpu_architectures(monkeypatch):
    from csrc import build
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST", raising=False)
    h100 = build.cuda_arch_key()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (8, 0) if i == 0 else (9, 0))
    mixed = build.cuda_arch_key()
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0+PTX")
    arch = build.cuda_arch_key()
    assert h100 == "sm90" and mixed == "sm80-sm90" and arch == "sm80-sm90_arch9.0.PTX"


def test_stale_cuda_build_falls_back_with_one_warning():
    """A CUDA build that loads but cannot launch ("no kernel image": made for another GPU) leaves CUDA tensors to the
    references with the one warning, as a failed build does; the CPU kernels of the loaded library still serve."""
    code = r"""
import warnings, torch
import csrc.build as b
real_load = b.load
b.want_cuda = lambda: True
b.load = lambda cuda=None, verbose=False: real_load(cuda=False)  # this machine has no GPU: load the CPU library
def stale():
    raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
b.smoke_cuda = stale
from csrc import ops
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    be = ops.backend()
    t = torch.randint(0, 3, (1, 5, 5))
    ops.confusion_matrix(t, t, 3)
msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
assert len(msgs) == 1 and "no kernel image" in msgs[0] and "CUDA tensors" in msgs[0], msgs
assert be["cpu"] == "ext" and be["cuda"] == "ref", be
print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


def test_check_errors_waits_for_every_stream(monkeypatch):
    """check_errors reads the buffer after the whole device is idle, not just the current stream (kernels queued on
    another stream could otherwise write after the read and the clear)."""
    events = []
    dev = torch.device("cuda", 0)
    buf = torch.tensor([2, 300, 0, ops._NO_VALUE])  # stands in for the device buffer; the sync is what is checked
    monkeypatch.setitem(ops._err_buffers, dev, buf)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: events.append(("sync", torch.device(d))))
    with pytest.raises(ValueError, match="target has 2 pixel"):
        ops.check_errors(dev)
    assert events and events[0] == ("sync", dev)
    assert buf.tolist() == [0, ops._NO_VALUE, 0, ops._NO_VALUE]


@gpu
def test_cuda_ops_on_a_side_stream():
    """The kernels launch on the current stream (here a side stream), give the reference's results there, and an
    error recorded on the side stream is seen by check_errors() called from the default stream while the side
    stream is still busy (the buffer must be read on the stream the kernel ran on, after it has run)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 11, 64, 64, generator=g)
    t = torch.randint(0, 11, (2, 64, 64), generator=g)
    v = [torch.randn(2, 11, 32, 32, generator=g), torch.randn(2, 11, 64, 64, generator=g)]
    ops.check_errors()
    side = torch.cuda.Stream()
    xc, tc, vc = x.cuda(), t.cuda(), [a.cuda() for a in v]
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # keep the side stream busy (~25 ms) so its kernels run late
        cm = ops.confusion_matrix(xc, tc, 11)
        merged = ops.tta_merge(vc, [False, True], (64, 64))
        bad = tc.clone()
        bad[0, 0, 0] = 40
        ops.confusion_matrix(xc, bad, 11)
    with pytest.raises(ValueError, match="value 40"):
        ops.check_errors()
    torch.cuda.current_stream().wait_stream(side)
    assert torch.equal(cm.cpu(), ops.ref_confusion_matrix(x, t, 11))
    torch.testing.assert_close(merged.cpu(), ops.ref_tta_merge(v, [False, True], (64, 64)), atol=2e-6, rtol=1e-5)


class _TinySeg(torch.nn.Module):
    """A stand-in segmentation model (one conv) so the compile test stays small; infer.py compiles the real one."""
    num_classes = 5

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)

    def normalize(self, img):
        return img.float() / 255.0  # (B, 3, H, W)

    def forward(self, x):
        return self.conv(x)  # (B, 5, H, W)


def test_compiled_view_step_and_validation_step_equal_eager():
    """--compile's paths (engine.predict: forward + fused TTA add; engine.evaluate: forward + fused confusion
    matrix) give eager's results."""
    from engine.dist import DistInfo
    from engine.evaluate import evaluate
    from engine.predict import tta_accumulate
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = _TinySeg().eval()
    img = torch.randint(0, 256, (1, 3, 12, 10), dtype=torch.uint8)
    eager = tta_accumulate([model], img, [None], True)
    comp = tta_accumulate([model], img, [None], True, compile=True)
    # inductor fuses the model's arithmetic differently: equal to float rounding (the ops alone are bitwise equal,
    # test_compile_fullgraph_equals_eager)
    torch.testing.assert_close(comp.probs(), eager.probs(), atol=1e-6, rtol=1e-5)
    assert comp.count == eager.count == 2
    batches = [{"image": img, "mask": torch.randint(0, 5, (1, 12, 10))} for _ in range(2)]
    info = DistInfo()  # one process, CPU
    r_e = evaluate(model, batches, 5, torch.device("cpu"), info, normalize=model.normalize)
    r_c = evaluate(model, batches, 5, torch.device("cpu"), info, normalize=model.normalize, compile=True)
    assert torch.equal(r_e["cm"], r_c["cm"]) and int(r_c["cm"].sum()) == 2 * 12 * 10
