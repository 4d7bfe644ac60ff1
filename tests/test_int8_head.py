"""infer.py --int8-head: csrc's quantize_u8 against its pure-PyTorch reference (bit for bit), oneDNN's int8
convolution (models.int8.Int8ConvModule) against the same integer arithmetic done by hand in float64, the swapped
model against the fp32 one, and the CLI. Needs no torchao (oneDNN's int8 ops are in torch itself)."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from csrc import ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

if not hasattr(torch.ops.onednn, "qconv2d_pointwise"):
    pytest.skip("this torch has no oneDNN int8 convolution", allow_module_level=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantize_u8_matches_reference(dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(2, 37, 11, 13, generator=g)).to(dtype)
    cases = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
             "strided": x[:, ::2, :, 1:]}  # not dense: copied first
    tie = torch.arange(0, 256, 0.25) * 0.5  # every half step of the scale (max 127.875: scale 127.875 / 255)
    cases["ties"] = tie.to(dtype)
    special = torch.tensor([float("nan"), -3.0, 0.0, 0.5, 2.0, 1e-8]).to(dtype)
    cases["nan_negative"] = special
    cases["zeros"] = torch.zeros(3, 4, dtype=dtype)  # max 0: scale 1, every q 0
    for name, t in cases.items():
        q, s = ops.quantize_u8(t)
        qr, sr = ops.ref_quantize_u8(t)
        assert q.dtype == torch.uint8 and s.dtype == torch.float32 and s.dim() == 0, name
        assert torch.equal(q, qr) and torch.equal(s, sr), (name, (q.int() - qr.int()).abs().max())
        if name != "strided":
            assert q.stride() == t.stride(), name  # channels_last stays channels_last
    q, s = ops.quantize_u8(special)
    m = float(special.float()[1:].max())
    assert abs(float(s) - m / 255) < 1e-9 * m and q.tolist() == [0, 0, 0, round(0.5 / float(s)), 255, 0]
    assert ops.quantize_u8(cases["zeros"])[1].item() == 1.0
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        ops.quantize_u8(torch.zeros(3, dtype=torch.int32))


def _conv_module(cin, cout, seed):
    from models.upernet import ConvModule
    torch.manual_seed(seed)
    cm = ConvModule(cin, cout, 3, padding=1).eval()
    with torch.no_grad():
        cm.bn.running_mean.uniform_(-0.3, 0.3)
        cm.bn.running_var.uniform_(0.5, 2.0)
        cm.bn.weight.uniform_(0.5, 1.5)
        cm.bn.bias.uniform_(-0.2, 0.2)
    return cm


def test_int8_conv_module_is_the_integer_arithmetic_and_near_fp32():
    """The int8 convolution's output is relu(x_scale * w_scale[o] * sum(q_x * q_w) + b) (int32 accumulation), computed
    here in float64 from the module's own int8 weights and quantize_u8's input; and BN folding plus 8-bit rounding
    keep it within 2 % of the fp32 ConvModule's largest output."""
    from models.int8 import Int8ConvModule
    cm = _conv_module(24, 16, 0)
    m8 = Int8ConvModule(cm)
    x = torch.relu(torch.randn(2, 24, 9, 14))
    with torch.no_grad():
        got = m8(x)  # (2, 16, 9, 14) float32
        want32 = cm(x)
        q, s = ops.quantize_u8(x)
        acc = F.conv2d(q.double(), m8.qweight.double(), padding=1)  # the int32 sums, exact in float64
        hand = torch.relu(acc * (float(s) * m8.w_scale.double())[None, :, None, None]
                          + m8.bias.double()[None, :, None, None])
        assert got.dtype == torch.float32 and got.shape == want32.shape
        assert (got.double() - hand).abs().max() < 1e-5 * hand.abs().max()
        assert (got - want32).abs().max() < 0.02 * want32.abs().max()
        got16 = m8(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))  # bf16 in, bf16 out
        assert got16.dtype == torch.bfloat16
        assert (got16.float() - want32).abs().max() < 0.03 * want32.abs().max()


def test_use_int8_head_swaps_the_fpn_convs_and_bottleneck():
    import copy
    import models
    from models.int8 import Int8ConvModule, use_int8_head
    torch.manual_seed(0)
    net = models.build_model("upernet_convnext_demo", 11).eval()
    q = copy.deepcopy(net)
    assert use_int8_head(q) == 4 and use_int8_head(q) == 0  # 3 FPN convolutions + fpn_bottleneck, once
    swapped = {n for n, m in q.named_modules() if isinstance(m, Int8ConvModule)}
    assert swapped == {"decode_head.fpn_convs.0", "decode_head.fpn_convs.1", "decode_head.fpn_convs.2",
                       "decode_head.fpn_bottleneck"}
    assert type(q.decode_head.bottleneck).__name__ == "ConvModule"  # reads the signed backbone features
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want = net(x)
        got = q(x)
    assert (got - want).abs().max() < 0.05 * want.abs().max()


def test_infer_int8_head_cli(tmp_path, demo_data):
    """infer.py --int8-head --eval runs end to end (the swap printed) and scores within 0.05 mIoU of fp32 on a tiny
    random-weight model (a trained model's cost is in the README); it refuses --int8 and --compile."""
    import models
    data = demo_data(train=2, val=3, test=2, extra=0, size=64, seed=5)
    torch.manual_seed(0)
    ck = tmp_path / "model.pt"
    torch.save({"model": models.build_model("upernet_convnext_demo", 11).state_dict(),
                "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    base = [PY, "infer.py", "--ckpt", str(ck), "--data-root", data, "--json", "val.json", "--out", "", "--workers",
            "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = {}
    for name, extra in (("fp32", ["--amp", "none", "--winograd", "off"]), ("int8", ["--int8-head", "--eval"])):
        r = subprocess.run(base + extra + (["--eval"] if name == "fp32" else []) + ["--save-masks",
                           str(tmp_path / name)], cwd=ROOT, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr[-3000:]
        res[name] = r.stdout
    assert "int8 head: 4 convolutions of upernet_convnext_demo's decode head in int8" in res["int8"]
    for extra, says in ((["--int8"], "--int8 quantizes the whole model"), (["--compile"], "--compile")):
        r = subprocess.run(base + ["--int8-head", *extra], cwd=ROOT, capture_output=True, text=True, env=env)
        assert r.returncode != 0 and f"error: --int8-head: {says}" in r.stderr and "Traceback" not in r.stderr, \
            r.stderr[-2000:]
    import numpy as np
    from PIL import Image
    same = total = 0
    for rec in json.load(open(os.path.join(data, "val.json")))["images"]:
        stem = os.path.splitext(rec["file_name"])[0] + ".png"
        a = np.array(Image.open(tmp_path / "fp32" / stem))
        b = np.array(Image.open(tmp_path / "int8" / stem))
        same += int((a == b).sum())
        total += a.size
    assert same / total > 0.9, same / total  # random weights: small margins; most pixels keep their class
