"""int8 inference (models.quant): torchao's PT2E quantization is the oracle of what a quantized layer is; these
tests hold our use of it (which layers stay fp32, calibration, the CLIs' refusals) and, in make test-heavy, the
compiled int8 programs of models.export --int8 and infer.py --int8 against the fp32 model on a demo val set.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

quant = pytest.importorskip("models.quant")
if quant.available():
    pytest.skip(quant.available(), allow_module_level=True)


def _model(seed=0):
    import models
    torch.manual_seed(seed)
    return models.build_model("upernet_convnext_demo", 11).eval()


def _conv_weights(gm) -> dict[str, str]:
    """module path of every convolution in a quantized GraphModule → 'int8' (its weight is dequantized from an int8
    per-channel tensor) or 'fp32' (a float parameter)."""
    out = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target is torch.ops.aten.conv2d.default:
            path = list(n.meta["nn_module_stack"].values())[-1][0]
            w = n.args[1]
            out[path] = "int8" if "dequantize_per_channel" in str(getattr(w, "target", "")) else "fp32"
    return out


def test_every_conv_int8_but_the_stem_and_the_classifier():
    from models.export import exportable
    from models.quant import quantize_int8
    net = exportable(_model())
    g = torch.Generator().manual_seed(0)
    calib = [(torch.randn(1, 3, 64, 96, generator=g),) for _ in range(3)]
    with torch.no_grad():
        ep = torch.export.export(net, calib[0])
    lines = []
    q = quantize_int8(ep, iter(calib), log=lines.append)
    kinds = _conv_weights(q)
    fp32 = sorted(k for k, v in kinds.items() if v == "fp32")
    assert fp32 == ["backbone.downsample_layers.0.0", "decode_head.conv_seg"], kinds
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for k, m in net.named_modules()
                  if not k.startswith("auxiliary_head"))  # the auxiliary head is for training only
    assert len(kinds) == n_convs and list(kinds.values()).count("int8") == n_convs - 2
    assert lines == ["int8: calibrated on 3 input(s); fp32 kept: stem, classifier"]
    # The quantized program computes the same function up to int8 rounding: its logits track the fp32 ones.
    x = torch.randn(1, 3, 64, 96, generator=g)
    with torch.no_grad():
        want, got = net(x), q(x)
    rel = (got - want).norm() / want.norm()
    assert rel < 0.1, rel
    with pytest.raises(ValueError, match="at least one input"):
        quantize_int8(ep, [])


def test_export_cli_refuses_int8_misuse(tmp_path, capsys):
    """--int8 with ONNX or CUDA, without --calib-data, or with a data root that is not there: exit 2, one line,
    before any compile; nothing written."""
    from models.export import get_args_parser, main
    ck = tmp_path / "model.pt"
    torch.save({"model": _model().state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    pkg = str(tmp_path / "m.pt2")
    cases = [["--out", str(tmp_path / "m.onnx"), "--format", "onnx", "--int8", "--calib-data", str(tmp_path)],
             ["--out", pkg, "--int8", "--device", "cuda", "--calib-data", str(tmp_path)],
             ["--out", pkg, "--int8"],
             ["--out", pkg, "--int8", "--calib-data", str(tmp_path / "nowhere")]]
    for extra in cases:
        assert main(get_args_parser().parse_args(["--ckpt", str(ck), *extra])) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "nowhere" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_infer_refuses_int8_with_autocast_compile_or_winograd(tmp_path, demo_data):
    data = demo_data()
    ck = tmp_path / "model.pt"
    torch.save({"model": _model().state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    for extra, says in ((["--amp", "bf16"], "--amp bf16"), (["--compile"], "--compile"),
                        (["--winograd", "on"], "--winograd on")):
        r = subprocess.run([PY, "infer.py", "--ckpt", str(ck), "--data-root", data, "--json", "val.json", "--out", "",
                            "--int8", "--workers", "0", *extra], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert r.returncode != 0 and f"error: --int8: {says}" in r.stderr and "Traceback" not in r.stderr, r.stderr


# ----------------------------------------------------------------------- heavy: the compiled int8 programs (minutes)

@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data):
    """A demo model trained long enough to have decisive classes, and infer.py's fp32 masks of demo val."""
    tmp = tmp_path_factory.mktemp("int8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    demo = Path(demo_data(train=16, val=6, test=2, extra=0, size=96, seed=4))
    r = subprocess.run([PY, "train.py", "--data-root", str(demo), "--out", str(tmp / "run"), "--model",
                        "upernet_convnext_demo", "--iters", "120", "--crop-size", "64", "--batch-size", "4",
                        "--workers", "0", "--lr", "2e-3", "--warmup-iters", "1", "--eval-interval", "1000",
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = tmp / "run" / "last.pt"
    r = subprocess.run([PY, "infer.py", "--ckpt", str(ck), "--data-root", str(demo), "--json", "val.json", "--out", "",
                        "--amp", "none", "--winograd", "off", "--workers", "0", "--save-masks", str(tmp / "fp32")],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"demo": demo, "ck": ck, "tmp": tmp}


def _agreement(a: Path, b: Path) -> float:
    """Share of pixels with the same class in two folders of label PNGs (palette or grayscale: PIL reads indices)."""
    from PIL import Image
    same = total = 0
    for f in sorted(a.rglob("*.png")):
        with Image.open(f) as im_a, Image.open(b / f.relative_to(a)) as im_b:
            x, y = np.asarray(im_a), np.asarray(im_b)
        same += int((x == y).sum())
        total += x.size
    assert total > 0
    return same / total


@pytest.mark.heavy
def test_infer_int8_agrees_with_fp32(trained):
    """infer.py --int8 (calibrated on the set itself, compiled for this CPU): the class maps of demo val agree with
    the fp32 ones on 97 % of pixels (measured: 99 % on the full demo model)."""
    out = trained["tmp"] / "int8"
    r = subprocess.run([PY, "infer.py", "--ckpt", str(trained["ck"]), "--data-root", str(trained["demo"]), "--json",
                        "val.json", "--out", "", "--int8", "--workers", "0", "--save-masks", str(out)],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "int8: quantizing upernet_convnext_demo on 6 image(s)" in r.stdout
    assert _agreement(out, trained["tmp"] / "fp32") >= 0.97


@pytest.mark.heavy
@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform != "linux", reason="x86 Linux packages")
def test_export_int8_package_in_a_fresh_process(trained):
    """models.export --int8 for AVX2: the package, loaded by a process that imports neither this project nor
    torchao, labels demo val as infer.py's fp32 masks on 97 % of pixels; its metadata says int8."""
    pkg = trained["tmp"] / "int8.pt2"
    r = subprocess.run([PY, "-m", "models.export", "--ckpt", str(trained["ck"]), "--out", str(pkg), "--int8",
                        "--calib-data", str(trained["demo"]), "--isa", "avx2"],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "self-check of the int8 package" in r.stdout
    code = f"""
import json, os, sys, cv2, numpy as np, torch
runner = torch._inductor.aoti_load_package({str(pkg)!r})
assert runner.get_metadata()["trashseg_precision"] == "int8"
root = {str(trained['demo'])!r}
out = {str(trained['tmp'] / 'pkg')!r}
for im in json.load(open(os.path.join(root, "val.json")))["images"]:
    rgb = cv2.cvtColor(cv2.imread(os.path.join(root, im["file_name"])), cv2.COLOR_BGR2RGB)
    labels = runner(torch.from_numpy(rgb)).numpy()
    dst = os.path.join(out, os.path.splitext(im["file_name"])[0] + ".png")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    cv2.imwrite(dst, labels)
assert not any(m.startswith(("trashseg", "models", "torchao")) for m in sys.modules)
"""
    r = subprocess.run([PY, "-I", "-c", code], cwd=str(trained["tmp"]), capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert _agreement(trained["tmp"] / "pkg", trained["tmp"] / "fp32") >= 0.97
