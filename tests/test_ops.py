"""csrc ops against their references and independent oracles (sklearn, a hand-written TTA loop).

CPU tests run both builds of the CPU kernels (AVX2 and the x86-64 baseline) where the CPU has AVX2; CUDA versions are
marked `gpu` and skip without a device (tests/conftest.py)."""
import math

import numpy as np
import pytest
import torch

from csrc import ops

GEN_SEED = 1234


def _ext_ok():
    return ops.backend()["cpu"] == "ext"


def _isas():
    if not _ext_ok():
        return [None]
    torch.ops.trashseg.cpu_isa("auto")
    return ["avx2", "baseline"] if torch.ops.trashseg.cpu_isa("") == "avx2" else ["baseline"]


@pytest.fixture(params=_isas())
def isa(request):
    if request.param is not None:
        torch.ops.trashseg.cpu_isa(request.param)
    yield request.param
    if request.param is not None:
        torch.ops.trashseg.cpu_isa("auto")


def test_extension_built():
    b = ops.backend()
    assert b["cpu"] == "ext", f"C++ ops failed to build: {b['error']}"


# ------------------------------------------------------------------------------------------------ confusion matrix

def _labels(g, C, shape, dtype, ignore_frac=0.1, ignore=255):
    t = torch.randint(0, C, shape, generator=g).to(dtype)
    if ignore_frac:
        m = torch.rand(shape, generator=g) < ignore_frac
        t[m] = ignore
    return t


CASES = [  # (B, H, W, C)
    (1, 1, 1, 1), (1, 7, 13, 2), (3, 33, 47, 11), (2, 64, 64, 11), (1, 5, 300, 40), (2, 17, 19, 150),
    (1, 1, 257, 3),
]


@pytest.mark.parametrize("B,H,W,C", CASES)
def test_confusion_labels_matches_reference(isa, B, H, W, C):
    g = torch.Generator().manual_seed(GEN_SEED + C)
    tdt = torch.uint8 if C < 255 else torch.int64
    for pdt in (torch.uint8, torch.int16, torch.int32, torch.int64) if C < 255 else (torch.int64,):
        p = torch.randint(0, C, (B, H, W), generator=g).to(pdt)
        t = _labels(g, C, (B, H, W), tdt)
        cm = ops.confusion_matrix(p, t, C)
        assert cm.dtype == torch.int64 and cm.shape == (C, C)
        assert torch.equal(cm, ops.ref_confusion_matrix(p, t, C))


@pytest.mark.parametrize("B,H,W,C", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_confusion_logits_matches_reference(isa, B, H, W, C, dtype):
    g = torch.Generator().manual_seed(GEN_SEED + 7 * C)
    x = torch.randn(B, C, H, W, generator=g).to(dtype)
    t = _labels(g, C, (B, H, W), torch.uint8 if C < 255 else torch.int32)
    assert torch.equal(ops.confusion_matrix(x, t, C), ops.ref_confusion_matrix(x, t, C))


def test_confusion_logits_ties_and_nan(isa):
    g = torch.Generator().manual_seed(5)
    C = 6
    # quantised logits: many exact ties, which must go to the lowest index like torch.argmax
    x = torch.randint(0, 3, (2, C, 37, 41), generator=g).float()
    x[0, 3, :5, :5] = float("nan")   # NaN counts as the max, first NaN wins
    x[0, 1, :3, :3] = float("nan")
    x[1, :, :4, :4] = float("-inf")  # all -inf: index 0
    x[1, 4, 10:12, 10:12] = float("inf")
    t = _labels(g, C, (2, 37, 41), torch.uint8)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        xx = x.to(dt)
        assert torch.equal(ops.confusion_matrix(xx, t, C), ops.ref_confusion_matrix(xx, t, C))


def test_confusion_noncontiguous(isa):
    g = torch.Generator().manual_seed(9)
    C = 11
    x = torch.randn(2, 40, 30, C, generator=g).permute(0, 3, 1, 2)  # channels-last memory
    t = _labels(g, C, (2, 30, 40), torch.uint8).transpose(1, 2)      # (2, 40, 30) transposed view
    assert not x.is_contiguous() and not t.is_contiguous()
    assert torch.equal(ops.confusion_matrix(x, t, C), ops.ref_confusion_matrix(x, t, C))
    p = torch.randint(0, C, (2, 80, 60), generator=g)[:, ::2, ::2]
    assert torch.equal(ops.confusion_matrix(p, t, C), ops.ref_confusion_matrix(p, t, C))


def test_confusion_against_sklearn(isa):
    from sklearn.metrics import confusion_matrix as sk_cm
    g = torch.Generator().manual_seed(11)
    C = 11
    x = torch.randn(3, C, 45, 61, generator=g)
    t = _labels(g, C, (3, 45, 61), torch.uint8, ignore_frac=0.2)
    keep = (t != 255).reshape(-1).numpy()
    pred = x.argmax(1).reshape(-1).numpy()[keep]
    gt = t.reshape(-1).numpy()[keep]
    expected = sk_cm(gt, pred, labels=list(range(C)))
    assert np.array_equal(ops.confusion_matrix(x, t, C).numpy(), expected)
    assert np.array_equal(ops.confusion_matrix(x.argmax(1), t, C).numpy(), expected)


def test_confusion_ignore_index_variants(isa):
    g = torch.Generator().manual_seed(13)
    C = 5
    t8 = torch.randint(-1, C, (2, 20, 20), generator=g).to(torch.int8)
    p = torch.randint(0, C, (2, 20, 20), generator=g)
    assert torch.equal(ops.confusion_matrix(p, t8, C, ignore_index=-1), ops.ref_confusion_matrix(p, t8, C, -1))
    # an in-range ignore_index drops that class's rows
    t = torch.randint(0, C, (2, 20, 20), generator=g)
    cm = ops.confusion_matrix(p, t, C, ignore_index=0)
    assert cm[0].sum() == 0 and torch.equal(cm, ops.ref_confusion_matrix(p, t, C, 0))
    # None: nothing ignored
    assert int(ops.confusion_matrix(p, t, C, ignore_index=None).sum()) == t.numel()
    # a bad prediction on an ignored pixel is not an error
    t2 = t.clone()
    t2[0, 0, 0] = 255
    p2 = p.clone()
    p2[0, 0, 0] = 99
    assert torch.equal(ops.confusion_matrix(p2, t2, C), ops.ref_confusion_matrix(p2, t2, C))


def test_confusion_large_parallel(isa):
    # enough pixels for every thread to take a chunk (exercises the merge of per-thread histograms)
    g = torch.Generator().manual_seed(17)
    C = 11
    p = torch.randint(0, C, (4, 256, 256), generator=g, dtype=torch.int64)
    t = _labels(g, C, (4, 256, 256), torch.uint8)
    p[:, :100] = 0  # long runs of one bin
    t[:, :100] = 0
    assert torch.equal(ops.confusion_matrix(p, t, C), ops.ref_confusion_matrix(p, t, C))


def test_confusion_empty():
    cm = ops.confusion_matrix(torch.zeros(0, 4, 4, dtype=torch.long), torch.zeros(0, 4, 4, dtype=torch.uint8), 3)
    assert torch.equal(cm, torch.zeros(3, 3, dtype=torch.long))


@pytest.mark.parametrize("fn", [ops.confusion_matrix, ops.ref_confusion_matrix])
def test_confusion_out_of_range_errors(fn):
    C = 4
    p = torch.zeros(1, 3, 3, dtype=torch.long)
    t = torch.zeros(1, 3, 3, dtype=torch.uint8)
    t[0, 1, 1] = 7
    with pytest.raises(ValueError, match="target"):
        fn(p, t, C)
    t[0, 1, 1] = 0
    p[0, 2, 2] = 4
    with pytest.raises(ValueError, match="pred"):
        fn(p, t, C)
    p[0, 2, 2] = -1
    with pytest.raises(ValueError, match="pred"):
        fn(p, t, C)


def test_confusion_argument_errors():
    t = torch.zeros(2, 4, 4, dtype=torch.uint8)
    with pytest.raises(ValueError, match="target"):
        ops.confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), t[0], 3)
    with pytest.raises(TypeError, match="target"):
        ops.confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), t.float(), 3)
    with pytest.raises(TypeError, match="target"):
        ops.confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), t.bool(), 3)
    with pytest.raises(ValueError, match="shape"):
        ops.confusion_matrix(torch.zeros(2, 4, 5, dtype=torch.long), t, 3)
    with pytest.raises(ValueError, match="channels"):
        ops.confusion_matrix(torch.zeros(2, 4, 4, 4), t, 3)
    with pytest.raises(ValueError, match="shape"):
        ops.confusion_matrix(torch.zeros(1, 3, 4, 4), t, 3)
    with pytest.raises(TypeError, match="pred"):
        ops.confusion_matrix(torch.zeros(2, 4, 4), t, 3)  # float labels
    with pytest.raises(TypeError, match="pred"):
        ops.confusion_matrix(torch.zeros(2, 3, 4, 4, dtype=torch.long), t, 3)  # integer logits
    with pytest.raises(ValueError, match="pred"):
        ops.confusion_matrix(torch.zeros(4, 4, dtype=torch.long), t, 3)
    with pytest.raises(ValueError, match="num_classes"):
        ops.confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), t, 0)
    with pytest.raises(TypeError, match="num_classes"):
        ops.confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long), t, 3.0)
    with pytest.raises(TypeError, match="pred"):
        ops.confusion_matrix(np.zeros((2, 4, 4)), t, 3)
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            ops.confusion_matrix(torch.zeros(2, 4, 4, dtype=torch.long, device="cuda"), t, 3)


def test_confusion_direct_op_checks():
    # the C++ entry point validates too (someone may call torch.ops.trashseg.* directly)
    if not _ext_ok():
        pytest.skip("extension not built")
    err = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="channels"):
        torch.ops.trashseg.confusion_matrix(torch.zeros(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.uint8), 3, 255,
                                            err)
    with pytest.raises(TypeError):
        torch.ops.trashseg.confusion_matrix(torch.zeros(1, 3, 3), torch.zeros(1, 3, 3, dtype=torch.uint8), 3, 255, err)


# ------------------------------------------------------------------------------------------------ miou

def test_miou_hand_computed():
    # classes: 0 present, 1 present, 2 absent everywhere (NaN), 3 only predicted (IoU 0, class_acc NaN)
    cm = torch.tensor([[5, 1, 0, 2],
                       [0, 3, 0, 0],
                       [0, 0, 0, 0],
                       [0, 0, 0, 0]], dtype=torch.int64)
    r = ops.miou(cm)
    iou = r["iou"]
    assert iou.dtype == torch.float64
    assert iou[0].item() == pytest.approx(5 / 8)   # TP 5, FN 3, FP 0
    assert iou[1].item() == pytest.approx(3 / 4)   # TP 3, FN 0, FP 1
    assert math.isnan(iou[2].item())
    assert iou[3].item() == 0.0                      # TP 0, FP 2
    assert r["miou"] == pytest.approx((5 / 8 + 3 / 4 + 0) / 3)
    assert r["acc"] == pytest.approx(8 / 11)
    assert r["class_acc"][0].item() == pytest.approx(5 / 8) and r["class_acc"][1].item() == 1.0
    assert math.isnan(r["class_acc"][2].item()) and math.isnan(r["class_acc"][3].item())
    assert r["macc"] == pytest.approx((5 / 8 + 1) / 2)


def test_miou_empty_and_errors():
    r = ops.miou(torch.zeros(3, 3, dtype=torch.long))
    assert math.isnan(r["miou"]) and math.isnan(r["acc"]) and math.isnan(r["macc"])
    with pytest.raises(ValueError):
        ops.miou(torch.zeros(3, 4, dtype=torch.long))


# ------------------------------------------------------------------------------------------------ TTA

def _views(g, B, C, sizes, dtype=torch.float32, scale=1.0):
    return [(torch.randn(B, C, h, w, generator=g) * scale).to(dtype) for h, w in sizes]


TTA_CASES = [  # (B, C, out, view sizes)
    (1, 1, (9, 7), [(9, 7), (4, 3)]),
    (2, 11, (33, 47), [(10, 13), (33, 47), (80, 70), (5, 200)]),   # up, same, down, mixed
    (1, 11, (64, 64), [(32, 32), (48, 48), (64, 64), (80, 80)]),   # the 0.5..1.25 scale ladder
    (2, 3, (65, 64), [(20, 30), (130, 129)]),
    (1, 33, (20, 25), [(7, 9), (41, 50)]),
    (1, 150, (12, 17), [(5, 6), (24, 35), (12, 17)]),
    (3, 2, (1, 5), [(1, 1), (3, 8)]),
]


@pytest.mark.parametrize("B,C,out,sizes", TTA_CASES)
def test_tta_merge_matches_reference(isa, B, C, out, sizes):
    g = torch.Generator().manual_seed(GEN_SEED + C + len(sizes))
    for scale in (1.0, 8.0):
        views = _views(g, B, C, sizes, scale=scale)
        flips = [i % 2 == 1 for i in range(len(views))]
        got = ops.tta_merge(views, flips, out)
        ref = ops.ref_tta_merge(views, flips, out)
        assert got.dtype == torch.float32 and got.shape == (B, C) + out
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_tta_merge_low_precision_views(isa, dtype):
    g = torch.Generator().manual_seed(21)
    views = _views(g, 2, 11, [(16, 16), (24, 24), (40, 40)], dtype=dtype, scale=3.0)
    flips = [False, True, False]
    torch.testing.assert_close(ops.tta_merge(views, flips, (32, 32)), ops.ref_tta_merge(views, flips, (32, 32)),
                               rtol=0, atol=1e-5)
    mixed = [views[0], views[1].float(), views[2].half()]
    torch.testing.assert_close(ops.tta_merge(mixed, flips, (32, 32)), ops.ref_tta_merge(mixed, flips, (32, 32)),
                               rtol=0, atol=1e-5)


def test_tta_merge_noncontiguous_views(isa):
    g = torch.Generator().manual_seed(23)
    C = 11
    cl = torch.randn(2, 24, 20, C, generator=g).permute(0, 3, 1, 2)             # channels-last
    sliced = torch.randn(2, C, 60, 90, generator=g)[:, :, ::2, ::3]              # strided rows and columns
    tr = torch.randn(2, C, 30, 26, generator=g).transpose(2, 3)                  # W stride > H stride
    half_cl = torch.randn(2, 16, 18, C, generator=g).half().permute(0, 3, 1, 2)
    views = [cl, sliced, tr, half_cl]
    assert not any(v.is_contiguous() for v in views)
    flips = [True, False, True, False]
    torch.testing.assert_close(ops.tta_merge(views, flips, (28, 31)), ops.ref_tta_merge(views, flips, (28, 31)),
                               rtol=0, atol=1e-5)


def _hand_tta(views, flips, out_size):
    """Independent oracle: plain Python/NumPy loops, float64, written from the definition (half-pixel centres,
    clamp at 0, edge replicate), not from F.interpolate."""
    H, W = out_size
    B, C = views[0].shape[:2]
    acc = np.zeros((B, C, H, W))
    for v, flip in zip(views, flips):
        a = v.double().numpy()
        h, w = a.shape[2:]
        for y in range(H):
            sy = max((y + 0.5) * h / H - 0.5, 0.0)
            y0 = min(int(math.floor(sy)), h - 1)
            y1 = min(y0 + 1, h - 1)
            ly = sy - y0
            for x in range(W):
                xs = W - 1 - x if flip else x
                sx = max((xs + 0.5) * w / W - 0.5, 0.0)
                x0 = min(int(math.floor(sx)), w - 1)
                x1 = min(x0 + 1, w - 1)
                lx = sx - x0
                val = ((1 - ly) * ((1 - lx) * a[:, :, y0, x0] + lx * a[:, :, y0, x1])
                       + ly * ((1 - lx) * a[:, :, y1, x0] + lx * a[:, :, y1, x1]))  # (B, C)
                e = np.exp(val - val.max(1, keepdims=True))
                acc[:, :, y, x] += e / e.sum(1, keepdims=True)
    return torch.from_numpy(acc / len(views))


def test_tta_merge_hand_written_oracle(isa):
    g = torch.Generator().manual_seed(29)
    views = _views(g, 2, 5, [(6, 7), (13, 11), (20, 19)], scale=2.0)
    flips = [False, True, True]
    got = ops.tta_merge(views, flips, (13, 15))
    torch.testing.assert_close(got.double(), _hand_tta(views, flips, (13, 15)), rtol=0, atol=1e-5)


def test_tta_merge_nan_logits(isa):
    v = torch.randn(1, 3, 4, 4)
    v[0, 1, 0, 0] = float("nan")
    got = ops.tta_merge([v], [False], (4, 4))
    ref = ops.ref_tta_merge([v], [False], (4, 4))
    assert torch.equal(torch.isnan(got), torch.isnan(ref))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5, equal_nan=True)


def _nonfinite_views(C):
    """Two views (one flipped) with -inf / +inf / NaN logits, to be merged at exactly half size: every bilinear tap
    then has weight 0.5, so no 0 * inf = NaN arises in the resize itself (F.interpolate would make it too)."""
    g = torch.Generator().manual_seed(59)
    v = torch.randn(2, C, 20, 24, generator=g)
    v[0, 0] = float("-inf")                 # a masked class everywhere in image 0: probability 0, no NaN
    v[1, 2, 6:10, 4:8] = float("-inf")
    v[1, :, 0:4, 0:4] = float("-inf")       # all classes -inf: NaN, as torch.softmax
    v[1, 5, 12:14, 2:4] = float("inf")      # +inf: NaN at those pixels, as torch.softmax
    v[1, 3, 16:18, 16:18] = float("nan")
    return [v, v.clone()], [False, True], (10, 12)


@pytest.mark.parametrize("C", [11, 40])  # 40 > 32: the CUDA kernel's online-softmax path
def test_tta_merge_nonfinite_logits(isa, C):
    views, flips, out = _nonfinite_views(C)
    got, ref = ops.tta_merge(views, flips, out), ops.ref_tta_merge(views, flips, out)
    assert not torch.isnan(ref[0]).any() and torch.equal(torch.isnan(got), torch.isnan(ref))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5, equal_nan=True)


def test_tta_merge_argument_errors():
    v = torch.randn(2, 3, 8, 8)
    with pytest.raises(TypeError, match="views"):
        ops.tta_merge(v, [False], (8, 8))
    with pytest.raises(ValueError, match="empty"):
        ops.tta_merge([], [], (8, 8))
    with pytest.raises(ValueError, match="flips"):
        ops.tta_merge([v, v], [False], (8, 8))
    with pytest.raises(TypeError, match="flips"):
        ops.tta_merge([v], False, (8, 8))
    with pytest.raises(ValueError, match=r"views\[1\]"):
        ops.tta_merge([v, torch.randn(3, 3, 8, 8)], [False, False], (8, 8))
    with pytest.raises(ValueError, match=r"views\[1\]"):
        ops.tta_merge([v, torch.randn(2, 3, 8)], [False, False], (8, 8))
    with pytest.raises(TypeError, match=r"views\[0\]"):
        ops.tta_merge([v.long()], [False], (8, 8))
    with pytest.raises(ValueError, match="out_size"):
        ops.tta_merge([v], [False], (8, 0))
    with pytest.raises(ValueError, match="out_size"):
        ops.tta_merge([v], [False], (8, 8, 8))
    assert ops.tta_merge([v], [False], 8).shape == (2, 3, 8, 8)


def test_tta_accumulator_streaming(isa):
    g = torch.Generator().manual_seed(31)
    B, C, out = 2, 11, (40, 36)
    sizes = [(20, 18), (30, 27), (40, 36), (50, 45)]
    views = [v for v in _views(g, B, C, sizes, scale=2.0) for _ in range(2)]
    flips = [False, True] * 4
    views[3] = views[3].bfloat16()
    acc = ops.TTAAccumulator(B, C, out, "cpu")
    for v, f in zip(views, flips):
        acc.add(v, flip=f)
    assert acc.count == 8
    ref = ops.ref_tta_merge(views, flips, out)
    torch.testing.assert_close(acc.probs(), ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(acc.probs(), ops.tta_merge(views, flips, out), rtol=0, atol=1e-6)
    labels, maxprob = acc.argmax()
    assert labels.dtype == torch.uint8 and labels.shape == (B,) + out and maxprob.dtype == torch.float32
    probs = acc.probs()
    assert torch.equal(labels.long(), probs.argmax(1))
    assert torch.equal(maxprob, probs.max(1).values)
    l64, _ = acc.argmax(dtype=torch.int64)
    assert l64.dtype == torch.int64 and torch.equal(l64, labels.long())
    p = acc.probs(inplace=True)
    torch.testing.assert_close(p, probs, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="consumed"):
        acc.add(views[0])
    acc.reset()
    acc.add(views[0], flip=True)
    torch.testing.assert_close(acc.probs(), ops.ref_tta_merge(views[:1], [True], out), rtol=0, atol=1e-5)


def test_tta_accumulator_argmax_ties_and_many_classes(isa):
    acc = ops.TTAAccumulator(1, 4, (3, 3))
    acc.add(torch.zeros(1, 4, 3, 3))  # all probabilities equal: label 0
    labels, maxprob = acc.argmax()
    assert labels.eq(0).all() and torch.allclose(maxprob, torch.full((1, 3, 3), 0.25))
    acc = ops.TTAAccumulator(1, 300, (2, 2))
    v = torch.randn(1, 300, 2, 2)
    acc.add(v)
    labels, _ = acc.argmax()
    assert labels.dtype == torch.int64 and torch.equal(labels, v.argmax(1))
    with pytest.raises(ValueError):
        acc.argmax(dtype=torch.uint8)


def test_tta_accumulator_errors():
    acc = ops.TTAAccumulator(2, 3, (8, 8))
    with pytest.raises(RuntimeError, match="no views"):
        acc.probs()
    with pytest.raises(RuntimeError, match="no views"):
        acc.argmax()
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        acc.add(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        acc.add(torch.randn(2, 4, 8, 8))
    with pytest.raises(TypeError, match="logits"):
        acc.add(torch.zeros(2, 3, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        acc.add(torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match="num_classes"):
        ops.TTAAccumulator(2, 0, (8, 8))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="cuda"):
            acc.add(torch.randn(2, 3, 8, 8, device="cuda"))


# ------------------------------------------------------------------------------------------------ fallback

def test_fallback_warns_once_and_uses_references(tmp_path):
    import subprocess
    import sys
    code = r"""
import warnings, torch
import csrc.build as b
def boom(*a, **k):
    raise RuntimeError("simulated compiler failure")
b.load = boom
from csrc import ops
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    t = torch.randint(0, 3, (1, 5, 5))
    cm = ops.confusion_matrix(t, t, 3)
    ops.tta_merge([torch.randn(1, 3, 4, 4)], [False], (5, 5))
    acc = ops.TTAAccumulator(1, 3, (5, 5)); acc.add(torch.randn(1, 3, 2, 2)); acc.argmax()
msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
assert len(msgs) == 1 and "simulated compiler failure" in msgs[0], msgs
assert int(cm.trace()) == 25
assert ops.backend()["cpu"] == "ref"
print("OK")
"""
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "OK" in r.stdout, r.stdout + r.stderr


# ------------------------------------------------------------------------------------------------ CUDA

cuda = pytest.mark.gpu


@cuda
def test_cuda_extension_built():
    assert ops.backend()["cuda"] == "ext", ops.backend()["error"]


@cuda
@pytest.mark.parametrize("B,H,W,C", CASES + [(2, 31, 29, 300)])
def test_cuda_confusion_matches_reference(B, H, W, C):
    g = torch.Generator().manual_seed(GEN_SEED + C)
    t = _labels(g, C, (B, H, W), torch.uint8 if C < 255 else torch.int64)
    for pred in [torch.randint(0, C, (B, H, W), generator=g)] + \
            [torch.randn(B, C, H, W, generator=g).to(dt) for dt in (torch.float32, torch.float16, torch.bfloat16)]:
        expected = ops.ref_confusion_matrix(pred, t, C)
        got = ops.confusion_matrix(pred.cuda(), t.cuda(), C)
        assert got.device.type == "cuda"
        assert torch.equal(got.cpu(), expected)
        # non-contiguous and int32 labels
        got2 = ops.confusion_matrix(pred.cuda().transpose(-1, -2).contiguous().transpose(-1, -2),
                                    t.cuda().int(), C)
        assert torch.equal(got2.cpu(), expected)
    ops.check_errors("cuda")


@cuda
def test_cuda_confusion_ties_nan_and_unaligned():
    g = torch.Generator().manual_seed(3)
    C = 6
    x = torch.randint(0, 3, (2, C, 37, 41), generator=g).float()
    x[0, 3, :5, :5] = float("nan")
    t = _labels(g, C, (2, 37, 41), torch.uint8)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        xx = x.to(dt)
        assert torch.equal(ops.confusion_matrix(xx.cuda(), t.cuda(), C).cpu(), ops.ref_confusion_matrix(xx, t, C))
    # a storage offset that breaks 16-byte alignment -> scalar path
    big = torch.randn(1 * C * 64 * 64 + 1, generator=g)
    xu = big[1:].view(1, C, 64, 64)
    tu = _labels(g, C, (1, 64, 64), torch.uint8)
    assert torch.equal(ops.confusion_matrix(xu.cuda(), tu.cuda(), C).cpu(), ops.ref_confusion_matrix(xu, tu, C))


@cuda
def test_cuda_confusion_deferred_errors():
    C = 4
    p = torch.zeros(1, 8, 8, dtype=torch.long, device="cuda")
    t = torch.zeros(1, 8, 8, dtype=torch.uint8, device="cuda")
    t[0, 0, :3] = 9
    cm = ops.confusion_matrix(p, t, C)   # no raise, no host sync
    assert int(cm.sum()) == 61           # the bad pixels are left out
    with pytest.raises(ValueError, match="3 pixel"):
        ops.miou(cm)
    ops.check_errors()                   # cleared by the raise
    p[0, 1, 1] = 7
    ops.confusion_matrix(p, torch.zeros_like(t), C)
    with pytest.raises(ValueError, match="pred"):
        ops.check_errors("cuda")


@cuda
@pytest.mark.parametrize("B,C,out,sizes", TTA_CASES + [(2, 20, (40, 44), [(20, 22), (50, 60)])])
def test_cuda_tta_matches_reference(B, C, out, sizes):
    g = torch.Generator().manual_seed(GEN_SEED + C)
    views = [v.cuda() for v in _views(g, B, C, sizes, scale=4.0)]
    flips = [i % 2 == 0 for i in range(len(views))]
    got = ops.tta_merge(views, flips, out)
    torch.testing.assert_close(got, ops.ref_tta_merge(views, flips, out), rtol=0, atol=1e-5)
    acc = ops.TTAAccumulator(B, C, out, "cuda")
    for v, f in zip(views, flips):
        acc.add(v.half() if C == 11 else v, flip=f)
    ref = ops.ref_tta_merge([v.half() if C == 11 else v for v in views], flips, out)
    torch.testing.assert_close(acc.probs(), ref, rtol=0, atol=1e-5)
    labels, maxprob = acc.argmax()
    probs = acc.probs()
    assert torch.equal(labels.long(), probs.argmax(1)) and torch.equal(maxprob, probs.max(1).values)


@cuda
def test_cuda_tta_many_views_and_strides():
    g = torch.Generator().manual_seed(41)
    C = 11
    views = [torch.randn(2, C, 8 + i, 9 + 2 * i, generator=g).cuda() for i in range(19)]  # > 16: two launches
    views[3] = views[3].contiguous(memory_format=torch.channels_last)
    views[5] = views[5].bfloat16()
    views[7] = torch.randn(2, C, 40, 40, generator=g).cuda()[:, :, ::2, ::3]
    flips = [i % 3 == 0 for i in range(19)]
    torch.testing.assert_close(ops.tta_merge(views, flips, (21, 23)), ops.ref_tta_merge(views, flips, (21, 23)),
                               rtol=0, atol=1e-5)


@cuda
@pytest.mark.parametrize("tdt", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_cuda_confusion_label_dtypes(tdt):
    # every integer dtype the front passes, as pred labels and as target (ignore_index 100 fits them all)
    g = torch.Generator().manual_seed(47)
    C = 7
    t = torch.randint(0, C, (2, 19, 23), generator=g)
    t[torch.rand(t.shape, generator=g) < 0.1] = 100
    t = t.to(tdt)
    for pdt in (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64):
        p = torch.randint(0, C, (2, 19, 23), generator=g).to(pdt)
        got = ops.confusion_matrix(p.cuda(), t.cuda(), C, ignore_index=100)
        assert torch.equal(got.cpu(), ops.ref_confusion_matrix(p, t, C, 100)), (pdt, tdt)
    if tdt.is_signed:  # a negative ignore_index
        t2 = t.clone()
        t2[t2 == 100] = -1
        got = ops.confusion_matrix(p.cuda(), t2.cuda(), C, ignore_index=-1)
        assert torch.equal(got.cpu(), ops.ref_confusion_matrix(p, t2, C, -1))
    ops.check_errors("cuda")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_cuda_confusion_vector_path_ties_nan(dtype):
    # H * W % 8 == 0 and a fresh (aligned) allocation: the 16-byte loads (VEC = 16 / itemsize), with ties, NaN, inf
    g = torch.Generator().manual_seed(53)
    C = 6
    x = torch.randint(0, 3, (2, C, 32, 40), generator=g).float()
    x[0, 3, :5, :5] = float("nan")
    x[0, 1, :3, :3] = float("nan")
    x[1, :, :4, :4] = float("-inf")
    x[1, 4, 10:12, 10:12] = float("inf")
    x = x.to(dtype)
    t = _labels(g, C, (2, 32, 40), torch.uint8)
    assert torch.equal(ops.confusion_matrix(x.cuda(), t.cuda(), C).cpu(), ops.ref_confusion_matrix(x, t, C))
    # 150 classes (shared-memory opt-in histogram) and 300 (global histogram) through the vector path
    for C in (150, 300):
        x = torch.randn(1, C, 16, 24, generator=g).to(dtype)
        t = _labels(g, C, (1, 16, 24), torch.int16)
        assert torch.equal(ops.confusion_matrix(x.cuda(), t.cuda(), C).cpu(), ops.ref_confusion_matrix(x, t, C))
    ops.check_errors("cuda")


@cuda
def test_cuda_empty_inputs():
    # zero pixels must not launch a 0-block grid (a CUDA error)
    cm = ops.confusion_matrix(torch.zeros(0, 4, 4, dtype=torch.long, device="cuda"),
                              torch.zeros(0, 4, 4, dtype=torch.uint8, device="cuda"), 3)
    assert torch.equal(cm.cpu(), torch.zeros(3, 3, dtype=torch.long))
    cm = ops.confusion_matrix(torch.zeros(2, 3, 0, 4, device="cuda"), torch.zeros(2, 0, 4, dtype=torch.uint8,
                                                                                    device="cuda"), 3)
    assert torch.equal(cm.cpu(), torch.zeros(3, 3, dtype=torch.long))
    labels, maxval = torch.ops.trashseg.channel_argmax(torch.zeros(0, 3, 4, 4, device="cuda"), 1.0, False)
    assert labels.shape == (0, 4, 4) and maxval.shape == (0, 4, 4)
    out = torch.empty(0, 3, 4, 4, device="cuda")
    torch.ops.trashseg.tta_accumulate_(out, [torch.zeros(0, 3, 2, 2, device="cuda")], [0], False, 1.0)
    torch.cuda.synchronize()


@cuda
@pytest.mark.parametrize("C", [11, 40])  # 40 > 32: the online-softmax path (tta_kernel<0>)
def test_cuda_tta_nonfinite_logits(C):
    views, flips, out = _nonfinite_views(C)
    views = [v.cuda() for v in views]
    got, ref = ops.tta_merge(views, flips, out), ops.ref_tta_merge(views, flips, out)
    assert not torch.isnan(ref[0]).any() and torch.equal(torch.isnan(got), torch.isnan(ref))
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5, equal_nan=True)


@cuda
def test_cuda_tta_accumulator_argmax_dtypes():
    # channel_argmax: int64 labels (asked for, and forced by C > 256), vector (H * W % 4 == 0) and scalar paths
    g = torch.Generator().manual_seed(61)
    for C, out in [(11, (6, 8)), (11, (5, 7)), (300, (6, 8)), (300, (3, 5))]:
        acc = ops.TTAAccumulator(2, C, out, "cuda")
        acc.add(torch.randn(2, C, 4, 5, generator=g).cuda())
        acc.add(torch.randn(2, C, 9, 9, generator=g).cuda().half(), flip=True)
        probs = acc.probs()
        for dt in ((torch.uint8, torch.int64) if C <= 256 else (torch.int64,)):
            labels, maxprob = acc.argmax(dtype=dt)
            assert labels.dtype == dt and labels.shape == (2,) + out
            assert torch.equal(labels.long(), probs.argmax(1)) and torch.equal(maxprob, probs.max(1).values)


@cuda
def test_cuda_int64_indexing():
    # more than 2^31 output elements and pixels: offsets must not wrap
    free, _ = torch.cuda.mem_get_info()
    if free < 24 * 2 ** 30:
        pytest.skip("needs ~24 GB of free GPU memory")
    C, H, W = 2, 33000, 33000                      # 2.18e9 output elements
    v = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]], [[1.0, 0.0], [0.5, -1.0]]]], device="cuda")
    out = ops.tta_merge([v], [True], (H, W))
    for y, x in [(0, 0), (H - 1, W - 1), (H // 2, 12345), (H - 7, 3)]:
        sy = max((y + 0.5) * 2 / H - 0.5, 0.0)
        xs = W - 1 - x
        sx = max((xs + 0.5) * 2 / W - 0.5, 0.0)
        y0, x0 = min(int(sy), 1), min(int(sx), 1)
        ly, lx = sy - y0, sx - x0
        a = v[0].double().cpu()
        val = (1 - ly) * ((1 - lx) * a[:, y0, x0] + lx * a[:, y0, min(x0 + 1, 1)]) + \
            ly * ((1 - lx) * a[:, min(y0 + 1, 1), x0] + lx * a[:, min(y0 + 1, 1), min(x0 + 1, 1)])
        torch.testing.assert_close(out[0, :, y, x].double().cpu(), val.softmax(0), rtol=0, atol=1e-5)
    del out
    n = 2 ** 31 + 4096
    t = torch.zeros(1, 1, n, dtype=torch.uint8, device="cuda")
    p = torch.zeros(1, 1, n, dtype=torch.uint8, device="cuda")
    t[0, 0, -5:] = 1
    p[0, 0, -3:] = 2
    cm = ops.confusion_matrix(p, t, 3).cpu()
    assert cm[0, 0] == n - 5 and cm[1, 0] == 2 and cm[1, 2] == 3 and int(cm.sum()) == n
