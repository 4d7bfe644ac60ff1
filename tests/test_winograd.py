"""models/winograd.py: NNPACK's Winograd 3x3 convolutions for fp32 CPU inference, against the direct convolution
(F.conv2d) as the oracle; exact fallback wherever it must not apply; infer.py's --winograd end to end."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import winograd
from models.winograd import WinogradConv2d, use_winograd

from helpers import read_masks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
needs_nnpack = pytest.mark.skipif(not winograd.available(), reason="this torch has no NNPACK for this CPU")


@pytest.fixture
def calls(monkeypatch):
    """How many times the NNPACK kernel ran (so a test cannot pass on the fallback alone)."""
    n = [0]
    real = torch._nnpack_spatial_convolution

    def counting(*a, **k):
        n[0] += 1
        return real(*a, **k)
    monkeypatch.setattr(torch, "_nnpack_spatial_convolution", counting)
    return n


def _conv(cin, cout, bias, padding=1, **kw):
    torch.manual_seed(cin * 31 + cout)
    c = nn.Conv2d(cin, cout, 3, padding=padding, bias=bias, **kw)
    w = WinogradConv2d(cin, cout, 3, padding=padding, bias=bias, **kw)
    w.load_state_dict(c.state_dict())
    return c, w


@needs_nnpack
@pytest.mark.parametrize("shape,cout,bias,padding", [
    ((1, 512, 64, 64), 512, False, 1),   # the UperNet head's fpn_convs
    ((2, 96, 33, 47), 64, True, 1),      # batch, odd sizes, bias
    ((3, 3, 5, 4), 2, True, 1),          # tiny
    ((1, 16, 1, 1), 8, False, 1),        # 1x1 map: only the centre tap sees data
    ((1, 16, 2, 3), 11, True, 1),
    ((2, 8, 9, 7), 4, False, 0),         # valid convolution
    ((1, 8, 6, 6), 4, True, 2),
])
def test_matches_direct_convolution(shape, cout, bias, padding, calls):
    c, w = _conv(shape[1], cout, bias, padding)
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = F.conv2d(x, c.weight, c.bias, padding=padding)  # (B, cout, h, w)
        got = w(x)
    assert calls[0] == 1
    assert got.shape == ref.shape
    # Winograd rounds differently from the direct sum: ~1e-5 of the largest output (measured 4e-6 .. 1.3e-5)
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    with torch.no_grad():  # a channels_last input (infer.py --channels-last) reads the same
        got_cl = w(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got_cl, got, atol=0, rtol=0)


@needs_nnpack
def test_falls_back_exactly_where_it_must_not_apply(calls):
    """Gradients wanted, autocast, float64, torch.compile: the module is nn.Conv2d, bit for bit, and trains."""
    c, w = _conv(8, 4, True)
    x = torch.randn(2, 8, 9, 9)
    assert torch.equal(w(x), c(x))  # grad enabled, parameters require grad
    w(x).sum().backward()
    assert w.weight.grad is not None and w.weight.grad.abs().sum() > 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(w(x), c(x))
    with torch.no_grad():
        assert torch.equal(w.double()(x.double()), c.double()(x.double()))
    assert calls[0] == 0


@needs_nnpack
def test_compiled_model_traces_the_plain_convolution():
    """Under torch.compile the Winograd branch is not taken (inductor compiles a plain convolution): no graph
    break, and the compiled result is the eager direct one."""
    c, w = _conv(8, 4, True)
    x = torch.randn(1, 8, 12, 12)
    with torch.no_grad():
        got = torch.compile(w, fullgraph=True, backend="aot_eager")(x)
        torch.testing.assert_close(got, c(x), atol=1e-6, rtol=1e-6)


def test_use_winograd_swaps_only_plain_3x3_and_back():
    torch.manual_seed(0)
    m = models.build_model("upernet_convnext_demo", 11).eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    plain = [n for n, mod in m.named_modules() if type(mod) is nn.Conv2d]
    want = [n for n, mod in m.named_modules() if type(mod) is nn.Conv2d and mod.kernel_size == (3, 3)
            and mod.stride == (1, 1) and mod.groups == 1 and mod.dilation == (1, 1)]
    assert want and len(want) < len(plain)  # the head's 3x3 convs; not the stem, downsamplers, 7x7 dw or 1x1
    assert use_winograd(m) == len(want)
    assert sorted(n for n, mod in m.named_modules() if type(mod) is WinogradConv2d) == sorted(want)
    after = m.state_dict()
    assert list(after) == list(before) and all(torch.equal(before[k], after[k]) for k in before)
    assert use_winograd(m) == 0  # idempotent
    assert use_winograd(m, False) == len(want)
    assert [n for n, mod in m.named_modules() if type(mod) is nn.Conv2d] == plain


@needs_nnpack
def test_whole_model_agrees_with_direct(calls):
    torch.manual_seed(0)
    m = models.build_model("upernet_convnext_demo", 11).eval()
    x = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        ref = m(x)  # (2, 11, 160, 224)
        use_winograd(m)
        got = m(x)
    assert calls[0] > 0
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert (got.argmax(1) == ref.argmax(1)).float().mean() >= 0.999


@needs_nnpack
@pytest.mark.slow
@pytest.mark.heavy  # make test checks Winograd against the direct convolution on every layer shape above
def test_infer_winograd_on_off_end_to_end(tmp_path, demo_data):
    """infer.py --winograd on and off from one trained checkpoint: the masks agree; `on` where it cannot apply
    exits 2 with one line."""
    data = Path(demo_data(train=4, val=3, test=1, extra=0, size=64, seed=5, fresh=True))
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    r = subprocess.run([PY, "train.py", "--data-root", str(data), "--out", str(tmp_path / "run"), "--model",
                        "upernet_convnext_demo", "--crop-size", "64", "--batch-size", "2", "--workers", "0",
                        "--warmup-iters", "1", "--lr", "2e-3", "--iters", "20", "--val-json", "",
                        "--log-interval", "20", "--no-progress"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    masks = {}
    for mode in ("on", "off"):
        out = tmp_path / f"masks_{mode}"
        r = subprocess.run([PY, "infer.py", "--ckpt", str(tmp_path / "run" / "best.pt"), "--data-root", str(data),
                            "--json", "val.json", "--out", "", "--save-masks", str(out), "--winograd", mode,
                            "--amp", "none", "--tta", "--workers", "0"], cwd=ROOT, capture_output=True, text=True,
                           env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        masks[mode] = read_masks(out)
    assert masks["on"].size == masks["off"].size == 3 * 64 * 64
    agree = float((masks["on"] == masks["off"]).mean())
    print(f"argmax agreement Winograd vs direct (20-iteration model, 3 val images, TTA): {agree:.5f}")
    assert agree >= 0.999, agree
    r = subprocess.run([PY, "infer.py", "--ckpt", str(tmp_path / "run" / "best.pt"), "--data-root", str(data),
                        "--json", "val.json", "--out", "", "--winograd", "on", "--amp", "bf16"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == \
        ["error: --winograd on: --amp resolves to bf16, not fp32"], r.stderr[-2000:]
