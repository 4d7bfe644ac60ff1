"""Sliding-window inference (SPEC §4 "Slide inference"): csrc's slide_accumulate_ on every backend, engine.predict's
slide / padded whole modes, and infer.py end to end, each against a plain slide loop written here from the formula."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from csrc import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
CUDA = torch.cuda.is_available()


def plain_grid(H, W, ch, cw, sh, sw):
    """The formula, written out: grids = max(H - C + S - 1, 0) // S + 1; end = min(i*S + C, H); start = max(end - C, 0)."""
    boxes = []
    for i in range(max(H - ch + sh - 1, 0) // sh + 1):
        for j in range(max(W - cw + sw - 1, 0) // sw + 1):
            y2, x2 = min(i * sh + ch, H), min(j * sw + cw, W)
            boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
    return boxes


def plain_slide(fn, x, H, W, crop, stride):
    """mmseg's loop: each window through fn, F.pad to full size and add, a count plane, divide. (B, C, H, W) f32."""
    preds, count = 0, torch.zeros(1, 1, H, W)
    for y1, y2, x1, x2 in plain_grid(H, W, crop[0], crop[1], stride[0], stride[1]):
        out = fn(None if x is None else x[..., y1:y2, x1:x2], (y1, y2, x1, x2)).float()
        preds = preds + F.pad(out, (x1, W - x2, y1, H - y2))
        count[..., y1:y2, x1:x2] += 1
    return preds / count


# sizes: odd, non-square, smaller than the window, stride == crop, stride 1, windows larger on one axis only
CASES = [(7, 5, (3, 3), (2, 2)), (50, 37, (16, 16), (11, 11)), (10, 9, (32, 32), (20, 20)),
         (33, 64, (32, 32), (32, 32)), (23, 17, (8, 5), (1, 3)), (9, 70, (12, 20), (5, 7))]


def _backends():
    out = [pytest.param("ext", marks=pytest.mark.skipif(ops.backend()["cpu"] != "ext", reason="ext not built")),
           "ref", pytest.param("cuda", marks=pytest.mark.gpu)]
    return out


def _run(backend, out, wins, crop, stride, first, finalize):
    if backend == "ref":
        return ops.ref_slide_accumulate_(out, wins, crop, stride, first, finalize)
    return ops.slide_accumulate_(out, wins, crop, stride, first, finalize)


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_op_matches_plain_loop(backend, dtype):
    dev = "cuda" if backend == "cuda" else "cpu"
    g = torch.Generator().manual_seed(1)
    B, C = 2, 3
    for H, W, crop, stride in CASES:
        boxes = plain_grid(H, W, *crop, *stride)
        eh, ew = min(crop[0], H), min(crop[1], W)
        wins = (torch.randn(len(boxes), B, C, eh, ew, generator=g) * 4).to(dtype)  # (n, B, C, eh, ew)
        want = plain_slide(lambda _x, box: wins[boxes.index(box)], None, H, W, crop, stride)
        for step in (1, 3):  # one window per call, and several stacked as (k*B, ...)
            out = torch.full((B, C, H, W), float("nan"), device=dev)  # poisoned: every element must be written
            for k in range(0, len(boxes), step):
                w = wins[k:k + step].reshape(-1, C, eh, ew).to(dev)
                _run(backend, out, w, crop, stride, k, k + step >= len(boxes))
            # same add order and one division: the same bits as the plain loop
            assert torch.equal(out.cpu(), want), (H, W, crop, stride, step)


@pytest.mark.parametrize("backend", _backends())
def test_op_reads_strided_windows(backend):
    dev = "cuda" if backend == "cuda" else "cpu"
    g = torch.Generator().manual_seed(2)
    H, W, crop, stride = 41, 29, (16, 16), (10, 10)
    n = len(plain_grid(H, W, 16, 16, 10, 10))
    base = torch.randn(n, 16, 16, 5, generator=g)
    wins = base.permute(0, 3, 1, 2).to(dev)  # channels_last-like strides, as the model's output can be
    flipped = torch.randn(n, 5, 16, 32, generator=g).to(dev)[..., ::2]  # a column stride of 2
    for w in (wins, flipped):
        assert not w.is_contiguous()
        out = torch.empty(1, 5, H, W, device=dev)
        _run(backend, out, w, crop, stride, 0, True)
        ref = torch.empty(1, 5, H, W)
        ops.ref_slide_accumulate_(ref, w.cpu().contiguous(), crop, stride, 0, True)
        assert torch.equal(out.cpu(), ref)


def test_op_bad_input():
    out = torch.zeros(1, 2, 20, 20)
    w = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="larger than crop"):
        ops.slide_accumulate_(out, w, 8, 9, 0, False)
    with pytest.raises(ValueError, match="needs"):
        ops.slide_accumulate_(out, torch.zeros(1, 2, 8, 7), 8, 4, 0, False)
    with pytest.raises(ValueError, match="finalize needs the last window"):
        ops.slide_accumulate_(out, w, 8, 4, 0, True)
    with pytest.raises(ValueError, match="outside the grid"):
        ops.slide_accumulate_(out, w, 8, 4, 25, False)
    with pytest.raises(RuntimeError, match="no autograd"):
        ops.slide_accumulate_(out, w.clone().requires_grad_(), 8, 4, 0, False)
    if ops.backend()["cpu"] == "ext":  # the C++ checks guard direct calls too
        with pytest.raises(ValueError, match="larger than crop"):
            torch.ops.trashseg.slide_accumulate_(out, w, [8, 8], [9, 9], 0, False)
        with pytest.raises(ValueError, match="outside the grid"):
            torch.ops.trashseg.slide_accumulate_(out, w, [8, 8], [4, 4], 25, False)
    sa = ops.SlideAccumulator(1, 2, (20, 20), 8, 4)
    with pytest.raises(RuntimeError, match="windows added"):
        sa.logits()


@pytest.mark.skipif(ops.backend()["cpu"] != "ext", reason="ext not built")
def test_op_fake_for_compile():
    """The registered fake lets torch.compile trace the op: under FakeTensorMode it runs without touching data."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    ops.slide_accumulate_(torch.zeros(1, 3, 11, 9), torch.zeros(4, 3, 8, 8), 8, 4, 0, True)  # loads, registers
    with FakeTensorMode():
        out = torch.empty(2, 3, 11, 9)
        w = torch.empty(2 * 4, 3, 8, 8)
        assert ops.slide_accumulate_(out, w, 8, 4, 0, True) is out
    assert torch._library.simple_registry.singleton.find("trashseg::slide_accumulate_").fake_impl.kernel is not None


# ---------------------------------------------------------------------------------------------------- engine

class TinySeg(torch.nn.Module):
    """A stand-in segmentor whose output depends on position and neighbourhood (a 5x5 conv), any input size."""

    def __init__(self, num_classes=5):
        super().__init__()
        torch.manual_seed(0)
        self.num_classes = num_classes
        self.conv = torch.nn.Conv2d(3, num_classes, 5, padding=2)

    def normalize(self, x):
        return (x.float() - 100.0) / 50.0

    def forward(self, x):
        return self.conv(x)


def test_slide_logits_matches_plain_loop():
    from engine.predict import slide_logits
    m = TinySeg().eval()
    g = torch.Generator().manual_seed(3)
    for H, W, crop, stride, wb in [(75, 53, (40, 40), (27, 27), 1), (75, 53, (40, 32), (21, 13), 4),
                                   (30, 90, (64, 64), (42, 42), 2)]:
        x = torch.randn(2, 3, H, W, generator=g)
        with torch.no_grad():
            got = slide_logits(m, x, crop, stride, window_batch=wb)
            want = plain_slide(lambda xw, _box: m(xw), x, H, W, crop, stride)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_small_inputs_are_padded_and_cropped():
    """A view under 32 px runs padded bottom/right with 0 and comes back at its own size; the backbone that needs
    32 px (ConvNeXt) runs on any size."""
    import models
    from engine.predict import MIN_INPUT, forward_padded, predict_view
    m = models.build_model("upernet_convnext_demo", 11).eval()
    g = torch.Generator().manual_seed(4)
    for h, w in [(5, 40), (31, 7)]:
        x = torch.randn(1, 3, h, w, generator=g)
        with torch.no_grad():
            got = forward_padded(m, x)
            xp = torch.zeros(1, 3, max(h, MIN_INPUT), max(w, MIN_INPUT))
            xp[..., :h, :w] = x
            want = m(xp)[..., :h, :w]
            assert got.shape == (1, 11, h, w)
            torch.testing.assert_close(got, want)
            s = predict_view(m, x, mode="slide", crop_size=(16, 16), stride=(16, 16))  # windows < 32 px padded
            assert s.shape == (1, 11, h, w) and torch.isfinite(s).all()


# ---------------------------------------------------------------------------------------------------- end to end

def _write_images(root):
    """Shapes and formats: grayscale PNG, RGBA PNG, RGB JPEG, tiny (< 32 px) and thin images, non-square, odd."""
    rng = np.random.default_rng(7)
    specs = [("gray.png", (40, 57), 1), ("rgba.png", (30, 37), 4), ("rgb.jpg", (71, 53), 3),
             ("tiny.png", (13, 20), 3), ("thin.png", (9, 100), 3)]
    images = []
    os.makedirs(os.path.join(root, "imgs"), exist_ok=True)
    for i, (name, (h, w), ch) in enumerate(specs):
        base = cv2.resize(rng.integers(0, 256, (max(h // 8, 2), max(w // 8, 2), ch), dtype=np.uint8), (w, h))
        arr = base if ch > 1 else base.reshape(h, w)
        cv2.imwrite(os.path.join(root, "imgs", name), arr)
        images.append({"id": i + 1, "file_name": f"imgs/{name}", "height": h, "width": w})
    with open(os.path.join(root, "shapes.json"), "w") as f:
        json.dump({"images": images, "categories": [{"id": 1, "name": "Paper"}]}, f)
    return images


def _read_rgb(path):
    """Independent of data.io: gray → 3 equal channels, RGBA → its colour channels."""
    a = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return np.ascontiguousarray(a[:, :, 2::-1] if a.shape[2] >= 3 else a)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    import models
    tmp = tmp_path_factory.mktemp("slide")
    images = _write_images(str(tmp))
    torch.manual_seed(0)
    model = models.build_model("upernet_convnext_demo", 11).eval()
    ck = tmp / "model.pt"
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    return str(tmp), str(ck), model, images


def _independent(model, img_u8, crop, stride, scales, flip):
    """Plain slide + TTA: every view resized, slid with the plain loop (windows < 32 px padded, cropped back),
    logits resized to the image, softmax, un-flip, mean."""
    x = model.normalize(torch.from_numpy(img_u8).permute(2, 0, 1)[None])
    h, w = img_u8.shape[:2]

    def run(xw, _box):
        eh, ew = xw.shape[-2:]
        xp = F.pad(xw, (0, max(32 - ew, 0), 0, max(32 - eh, 0)))
        return model(xp)[..., :eh, :ew]

    total, n = 0, 0
    with torch.no_grad():
        for s in scales:
            r = 1.0 if s is None else s / max(h, w)
            vh, vw = max(1, round(h * r)), max(1, round(w * r))
            xv = x if (vh, vw) == (h, w) else F.interpolate(x, size=(vh, vw), mode="bilinear", align_corners=False)
            for fl in ([False, True] if flip else [False]):
                lg = plain_slide(run, xv.flip(-1) if fl else xv, vh, vw, crop, stride)
                p = F.interpolate(lg, size=(h, w), mode="bilinear", align_corners=False).softmax(1)
                total = total + (p.flip(-1) if fl else p)
                n += 1
    return (total / n)[0].numpy()


@pytest.mark.parametrize("extra,scales,flip", [([], [None], False), (["--scales", "40", "80", "--flip"], [40, 80], True)],
                         ids=["slide", "slide+tta"])
def test_infer_slide_any_image(shapes, tmp_path, extra, scales, flip):
    root, ck, model, images = shapes
    from data.probs import load_probs
    crop, stride = (48, 48), (32, 32)
    r = subprocess.run([PY, "infer.py", "--ckpt", ck, "--data-root", root, "--json", "shapes.json", "--out", "",
                        "--mode", "slide", "--crop-size", "48", "--stride", "32", "--batch-size", "2",
                        "--save-probs", str(tmp_path / "p"), "--probs-size", "0", "--probs-dtype", "float16",
                        "--workers", "0", *extra], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    for rec in images:
        img = _read_rgb(os.path.join(root, rec["file_name"]))
        got, size = load_probs(str(tmp_path / "p"), rec["file_name"])
        assert size == (rec["height"], rec["width"]) and got.shape[1:] == size
        want = _independent(model, img, crop, stride, scales, flip)
        np.testing.assert_allclose(got.astype(np.float32), want, atol=2e-3)  # float16 storage


def test_whole_mode_any_image_and_bad_flags(shapes, tmp_path):
    root, ck, model, images = shapes
    from data.probs import load_probs
    r = subprocess.run([PY, "infer.py", "--ckpt", ck, "--data-root", root, "--json", "shapes.json", "--out", "",
                        "--save-probs", str(tmp_path / "p"), "--probs-size", "0", "--probs-dtype", "float16",
                        "--workers", "0"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]  # the 13x20 and 9x150 images crashed ConvNeXt before
    for rec in images[3:]:
        img = _read_rgb(os.path.join(root, rec["file_name"]))
        got, _ = load_probs(str(tmp_path / "p"), rec["file_name"])
        big = max(rec["height"], rec["width"], 1000)  # one window = the whole image, padded to 32
        np.testing.assert_allclose(got.astype(np.float32), _independent(model, img, (big, big), (big, big),
                                                                        [None], False), atol=2e-3)
    r = subprocess.run([PY, "infer.py", "--ckpt", ck, "--data-root", root, "--json", "shapes.json", "--out", "",
                        "--mode", "slide", "--crop-size", "32", "--stride", "40"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 2 and "larger than --crop-size" in r.stderr


# ---------------------------------------------------------------------------------------------------- memory

_MEM_SCRIPT = r"""
import resource, sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from engine.predict import tta_accumulate
from tests.test_slide import TinySeg
H, W, crop, stride = {H}, {W}, {crop}, {stride}
m = TinySeg(11).eval()
img = torch.randint(0, 256, (1, 3, H, W), dtype=torch.uint8)
tta_accumulate([m], img[..., :64, :64], [None], False, mode="slide", crop_size=crop, stride=stride)  # warm
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = rss()
acc = tta_accumulate([m], img, [None], False, mode="slide", crop_size=crop, stride=stride)
labels, _ = acc.argmax()
# VmHWM: this process's own peak RSS (ru_maxrss would also count the parent's RSS at fork: pytest's, in make test)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print(int(hwm.split()[1]) * 1024 - base)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_slide_peak_memory_is_bounded():
    """Peak memory of a slid view: the TTA sum + ONE view sum + the normalised image + O(window), whatever the
    number of windows (here 1600x1200 with 128-px windows: 221 windows at stride 96, 768 at stride 48).
    mmseg's loop (F.pad per window + count plane) needs a third full-size map, which this bound leaves no room for."""
    H, W = 1200, 1600
    fmap = 11 * H * W * 4  # one (1, C, H, W) float32 map: 84 MB
    peaks = []
    for stride in (96, 48):
        code = _MEM_SCRIPT.format(root=ROOT, H=H, W=W, crop=128, stride=stride)
        r = subprocess.run([PY, "-c", code], cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        peaks.append(int(r.stdout.strip().splitlines()[-1]))
    bound = 2 * fmap + 3 * H * W * 4 + fmap // 4  # two maps + the normalised image + a quarter map of slack
    assert max(peaks) < bound, (peaks, bound)
    assert abs(peaks[1] - peaks[0]) < fmap // 8, peaks  # 4x the windows, the same peak


# ---------------------------------------------------------------------------------------------------- train / pseudo

@pytest.mark.bf16_heavy
def test_train_val_mode_slide_and_pseudo_label_slide(tmp_path, cpu_bf16, demo_data):
    """train.py --val-mode slide scores what infer.py --mode slide --eval scores; pseudo_label.py --mode slide labels
    the argmax of the plain fp32 slide loop (--amp none pins fp32 on every CPU)."""
    import infer
    import models
    import pseudo_label
    from PIL import Image
    run = tmp_path / "run"
    demo = Path(demo_data(train=4, val=2, test=2, extra=0, size=80, seed=3, fresh=True))
    slide = ["--crop-size", "48", "--stride", "32"]
    r = subprocess.run([PY, "train.py", "--data-root", str(demo), "--out", str(run), "--model", "upernet_convnext_demo",
                        "--crop-size", "64", "--batch-size", "2", "--workers", "0", "--iters", "2", "--no-progress",
                        "--val-mode", "slide", "--val-crop-size", "48", "--val-stride", "32", "--amp", "none"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    val = [json.loads(ln) for ln in open(run / "metrics.jsonl") if '"miou"' in ln][-1]
    ck = str(run / "best.pt")
    res = infer.main(infer.get_args_parser().parse_args(
        ["--ckpt", ck, "--data-root", str(demo), "--json", "val.json", "--out", "", "--eval", "--workers", "0",
         "--mode", "slide", *slide, "--amp", "none"]))
    assert abs(res["tta"]["miou"] - val["miou"]) < 1e-6, (res["tta"]["miou"], val["miou"])

    out = tmp_path / "pl"
    pseudo_label.main(pseudo_label.get_args_parser().parse_args(
        ["--ckpt", ck, "--data-root", str(demo), "--json", "test.json", "--out", str(out), "--threshold", "0",
         "--workers", "0", "--mode", "slide", *slide, "--amp", "none"]))
    doc = json.load(open(out / "pseudo.json"))
    assert doc["info"]["test_mode"] == {"mode": "slide", "crop_size": [48, 48], "stride": [32, 32]}
    model = models.load_model(ck, map_location="cpu").eval()
    for rec in doc["images"]:
        img = _read_rgb(os.path.join(str(demo), rec["file_name"]))
        want = _independent(model, img, (48, 48), (32, 32), [None], False)  # (C, H, W)
        got = np.array(Image.open(out / rec["mask_file"]))  # palette indices = class ids
        top2 = np.sort(want, 0)[-2:]
        sure = top2[1] - top2[0] > 1e-4
        assert np.array_equal(got[sure], want.argmax(0)[sure])
