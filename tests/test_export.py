"""models.export: the deployable program against infer.py (`--amp none --winograd off`, one view).

make test: the torch.export program of a small random model (dynamic H, W; uint8 in and out; padding under 32 px)
and its parity with infer.py at 33×33, 517×389 and 5×7; --isa resolution; bad --ckpt. make test-heavy: the
AOTInductor package compiled for AVX2 (minutes on 2 cores), loaded by the README's standalone example in a fresh
`python -I` process (torch, numpy, cv2 only) on a demo val set against infer.py; --format onnx in onnxruntime.
"""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
SIZES = [(33, 33), (517, 389), (5, 7)]  # (H, W): stride-32 map of 1 px, a large odd size, a side under MIN_INPUT
PROB_ATOL = 1e-5  # the program's probabilities against infer.py's float32 ones (measured: 2e-7 eager, 2e-6 AOTI)
MARGIN = 1e-4  # classes are compared where infer.py's top-2 probabilities differ by more


def _model(seed=0):
    import models
    torch.manual_seed(seed)
    return models.build_model("upernet_convnext_demo", 11).eval()


def _infer_path(model, img):
    """infer.py's computation of an (H, W, 3) uint8 image: one view, fp32, no Winograd → labels, probs (C, H, W)."""
    from engine.predict import tta_accumulate
    x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W) uint8, as infer.py's loader
    with torch.no_grad():
        acc = tta_accumulate([model], x, [None], False, "none")
        return acc.argmax()[0][0], acc.probs()[0]


def _clear(probs):
    top2 = probs.topk(2, 0).values
    return top2[0] - top2[1] > MARGIN


def _palette_png(path) -> np.ndarray:
    """infer.py --save-masks writes palette PNGs: their indices are the classes (cv2 would expand the palette)."""
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im)


def _image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def program():
    from models.export import export_program
    model = _model()
    return model, export_program(model, probs=True)


def _runner(ep):
    mod = ep.module()
    return torch.no_grad()(mod)


def test_bin_pool_is_adaptive_avg_pool():
    from models.export import BinPool2d
    for s in (1, 2, 3, 6):
        for h, w in ((1, 1), (1, 5), (5, 7), (13, 4), (16, 16)):
            x = torch.randn(2, 3, h, w, dtype=torch.float64)
            torch.testing.assert_close(BinPool2d(s)(x), F.adaptive_avg_pool2d(x, s), rtol=1e-12, atol=1e-12)


def test_min_input_padding_is_forward_paddeds_rule():
    from models.segmentor import MIN_INPUT, min_input_padding
    for h, w in ((1, 1), (5, 40), (31, 32), (32, 33), (517, 389)):
        assert min_input_padding(h, w) == (max(MIN_INPUT - h, 0), max(MIN_INPUT - w, 0))


def test_program_signature_dynamic_uint8(program):
    model, ep = program
    (lo_h, hi_h), (lo_w, hi_w) = [(r.lower, r.upper) for r in ep.range_constraints.values()]
    assert lo_h == lo_w == 1 and hi_h > 2 ** 20 and hi_w > 2 ** 20  # one program for every H, W >= 1
    inp = ep.graph_signature.user_inputs
    assert len(inp) == 1
    fake = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == inp[0]).meta["val"]
    assert fake.dtype == torch.uint8 and fake.shape[2] == 3 and not isinstance(fake.shape[0], int)
    run = _runner(ep)
    for h, w in SIZES:
        labels, probs = run(torch.from_numpy(_image(h, w, 0)))
        assert labels.dtype == torch.uint8 and labels.shape == (h, w)
        assert probs.dtype == torch.float32 and probs.shape == (model.num_classes, h, w)
    # no trashseg op inside: the fused csrc ops are for TTA, not for this single view
    assert not [n for n in ep.graph.nodes if n.op == "call_function" and "trashseg" in str(n.target)]


def test_program_matches_infer_py(program, tmp_path):
    """infer.py itself (--amp none --winograd off, masks and float16 probabilities saved) on images of SIZES."""
    model, ep = program
    import infer
    from data.probs import load_probs
    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    ck = tmp_path / "model.pt"
    torch.save({"model": model.state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    images = []
    for i, (h, w) in enumerate(SIZES):
        name = f"img/{h}x{w}.png"
        cv2.imwrite(str(root / name), cv2.cvtColor(_image(h, w, i), cv2.COLOR_RGB2BGR))  # lossless
        images.append({"id": i + 1, "file_name": name, "width": w, "height": h})
    (root / "test.json").write_text(json.dumps({"images": images, "categories": [{"id": 1, "name": "Paper"}]}))
    infer.main(infer.get_args_parser().parse_args([
        "--ckpt", str(ck), "--data-root", str(root), "--json", "test.json", "--out", "", "--amp", "none",
        "--winograd", "off", "--workers", "0", "--save-masks", str(tmp_path / "masks"),
        "--save-probs", str(tmp_path / "probs"), "--probs-size", "0", "--probs-dtype", "float16"]))
    run = _runner(ep)
    for i, (h, w) in enumerate(SIZES):
        img = _image(h, w, i)
        labels, probs = run(torch.from_numpy(img))
        saved, size = load_probs(str(tmp_path / "probs"), f"img/{h}x{w}.png")
        assert size == (h, w)
        np.testing.assert_allclose(probs.numpy(), saved, atol=1e-3)  # float16 storage
        ref_labels, ref_probs = _infer_path(model, img)  # the same computation in float32
        torch.testing.assert_close(probs, ref_probs, atol=PROB_ATOL, rtol=0)
        mask = _palette_png(tmp_path / "masks" / "img" / f"{h}x{w}.png")
        clear = _clear(ref_probs).numpy()
        assert clear.mean() > 0.9
        assert np.array_equal(labels.numpy()[clear], mask[clear])
        assert np.array_equal(mask, ref_labels.numpy())


x86 = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction sets")


@x86
def test_isa_resolution_and_pinning():
    from torch._inductor import cpu_vec_isa

    from models.export import ISAS, isa_name, pinned_isa, resolve_isa
    host = [str(i) for i in cpu_vec_isa.valid_vec_isa_list()]
    for name, (inductor_name, march) in ISAS.items():
        if inductor_name in host:
            isa, m = resolve_isa(name)
            assert (str(isa), m, isa_name(isa)) == (inductor_name, march, name)
            with pinned_isa(isa):
                assert str(cpu_vec_isa.pick_vec_isa()) == inductor_name  # what codegen and the build flags use
        else:
            with pytest.raises(ValueError, match=f"--isa {name}: this machine cannot build it"):
                resolve_isa(name)
    assert str(cpu_vec_isa.pick_vec_isa()) == host[0]  # unpinned again


def test_cli_refuses_before_compiling(tmp_path, capsys):
    """An ISA this machine lacks, a wrong extension, CUDA without a GPU: exit 2 with one line, nothing written."""
    from torch._inductor import cpu_vec_isa

    from models.export import ISAS, get_args_parser, main
    ck = tmp_path / "model.pt"
    torch.save({"model": _model().state_dict(), "model_name": "upernet_convnext_demo", "num_classes": 11}, ck)
    host = [str(i) for i in cpu_vec_isa.valid_vec_isa_list()]
    lacking = [k for k, (name, _) in ISAS.items() if name not in host]
    cases = [["--out", str(tmp_path / "m.onnx")], ["--out", str(tmp_path / "m.pt2"), "--format", "onnx"]]
    if lacking and platform.machine() in ("x86_64", "AMD64"):
        cases.append(["--out", str(tmp_path / "m.pt2"), "--isa", lacking[-1]])
    if not torch.cuda.is_available():
        cases.append(["--out", str(tmp_path / "m.pt2"), "--device", "cuda"])
    for extra in cases:
        assert main(get_args_parser().parse_args(["--ckpt", str(ck), *extra])) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_swin_is_refused_with_a_reason():
    import models
    from models.export import check_exportable
    with torch.device("meta"):
        swin = models.build_model("upernet_swin_tiny")
    with pytest.raises(ValueError, match="only ConvNeXt backbones"):
        check_exportable(swin)


def test_bad_ckpt_exits_2_with_one_line(tmp_path, capsys):
    from models.export import get_args_parser, main
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    for ck in (tmp_path / "missing.pt", text, foreign):
        assert main(get_args_parser().parse_args(["--ckpt", str(ck), "--out", str(tmp_path / "m.pt2")])) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {ck}") and err.count("\n") == 1, err
    assert not list(tmp_path.glob("*.pt2"))
    r = subprocess.run([PY, "-m", "models.export", "--ckpt", str(text), "--out", str(tmp_path / "m.pt2")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr


# ------------------------------------------------------------------------------------ heavy: the compiled package

def readme_example() -> str:
    """The standalone example in README.md (the python block that loads a package)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    (code,) = [b for b in blocks if "aoti_load_package(" in b and "import cv2" in b]
    return code


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data):
    """A tiny model trained briefly (decisive classes) on a small demo set; infer.py's masks and float16
    probabilities of its val images (--amp none --winograd off)."""
    tmp = tmp_path_factory.mktemp("export")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    demo = Path(demo_data(train=8, val=6, test=2, extra=2, size=96, seed=4))
    run = tmp / "run"
    r = subprocess.run([PY, "train.py", "--data-root", str(demo), "--out", str(run), "--model", "upernet_convnext_demo",
                        "--iters", "30", "--crop-size", "64", "--batch-size", "4", "--workers", "0", "--lr", "2e-3",
                        "--warmup-iters", "1", "--eval-interval", "1000", "--no-progress"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ck = run / "last.pt"
    r = subprocess.run([PY, "infer.py", "--ckpt", str(ck), "--data-root", str(demo), "--json", "val.json", "--out", "",
                        "--amp", "none", "--winograd", "off", "--workers", "0", "--save-masks", str(tmp / "masks"),
                        "--save-probs", str(tmp / "probs"), "--probs-size", "0", "--probs-dtype", "float16"],
                       cwd=ROOT, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return {"demo": demo, "ck": ck, "masks": tmp / "masks", "probs": tmp / "probs", "tmp": tmp}


@pytest.fixture(scope="module")
def package(trained):
    """The trained model's package through the CLI: --probs, and for AVX2 on x86 (minutes on 2 cores)."""
    pkg = trained["tmp"] / "model.pt2"
    isa = ["--isa", "avx2"] if platform.machine() in ("x86_64", "AMD64") else []
    r = subprocess.run([PY, "-m", "models.export", "--ckpt", str(trained["ck"]), "--out", str(pkg), "--probs", *isa],
                       cwd=ROOT, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "CPU instruction set: " in r.stdout
    return {**trained, "pkg": pkg}


@pytest.mark.heavy
def test_package_in_a_fresh_process_matches_infer_py_on_demo_val(package):
    """The README example, run by `python -I` outside the repository: no trashseg module can be (or is) imported."""
    tmp, demo = package["tmp"], package["demo"]
    val = json.loads((demo / "val.json").read_text())
    photos = tmp / "photos"
    for im in val["images"]:
        dst = photos / im["file_name"]
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo / im["file_name"], dst)
    (tmp / "segment_folder.py").write_text(readme_example())
    check = ("import runpy, sys\n"
             f"sys.argv = ['segment_folder.py', {str(package['pkg'])!r}, {str(photos)!r}, {str(tmp / 'out')!r}]\n"
             f"runpy.run_path({str(tmp / 'segment_folder.py')!r}, run_name='__main__')\n"
             "own = [m for m in sys.modules if m.split('.')[0] in "
             "('models', 'engine', 'csrc', 'data', 'infer', 'train')]\n"
             "assert not own, own\n"
             "assert not any('trashseg_ops' in str(getattr(m, '__file__', '')) for m in sys.modules.values())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([PY, "-I", "-c", check], cwd=tmp, capture_output=True, text=True,
                       env={**env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    from data.probs import load_probs
    n_clear = n = 0
    for im in val["images"]:
        stem = os.path.splitext(im["file_name"])[0]
        got = cv2.imread(str(tmp / "out" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        want = _palette_png(package["masks"] / f"{stem}.png")
        probs, _ = load_probs(str(package["probs"]), im["file_name"])
        top2 = np.sort(probs, 0)[-2:]
        clear = top2[1] - top2[0] > 2e-3  # float16 storage: a margin of 2e-3 is beyond its rounding
        assert got.shape == want.shape == (im["height"], im["width"])
        assert np.array_equal(got[clear], want[clear])
        n_clear, n = n_clear + clear.sum(), n + clear.size
    assert n_clear / n > 0.95


@pytest.mark.heavy
def test_package_probabilities_sizes_and_metadata(package):
    import models
    from models.segmentor import MIN_INPUT
    runner = torch._inductor.aoti_load_package(str(package["pkg"]))
    meta = runner.get_metadata()
    assert meta["trashseg_model"] == "upernet_convnext_demo" and meta["trashseg_device"] == "cpu"
    assert json.loads(meta["trashseg_classes"])[0] == "Background" and meta["trashseg_min_input"] == str(MIN_INPUT)
    if platform.machine() in ("x86_64", "AMD64"):
        assert meta["trashseg_isa"] == "avx2" and meta["trashseg_march"] == "x86-64-v3"
        assert meta["AOTI_CPU_ISA"] == "AVX2"  # inductor's own record follows the pin
    model = models.load_model(str(package["ck"])).eval()
    for i, (h, w) in enumerate(SIZES + [(96, 96)]):
        img = _image(h, w, 10 + i)
        labels, probs = runner(torch.from_numpy(img))
        ref_labels, ref_probs = _infer_path(model, img)
        assert labels.dtype == torch.uint8 and labels.shape == (h, w)
        torch.testing.assert_close(probs, ref_probs, atol=PROB_ATOL, rtol=0)
        clear = _clear(ref_probs)
        assert torch.equal(labels[clear], ref_labels.to(torch.uint8)[clear])


@pytest.mark.heavy
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or shutil.which("objdump") is None,
                    reason="x86 disassembly")
def test_avx2_package_has_no_avx512_instructions(package, tmp_path):
    import zipfile
    with zipfile.ZipFile(package["pkg"]) as z:
        sos = [n for n in z.namelist() if n.endswith(".so")]
        assert sos
        for n in sos:
            z.extract(n, tmp_path)
            dis = subprocess.run(["objdump", "-d", str(tmp_path / n)], capture_output=True, text=True).stdout
            assert "ymm" in dis and "zmm" not in dis  # AVX2 vectors, no AVX-512 register anywhere


@pytest.mark.heavy
def test_onnx_cli_in_onnxruntime(trained, tmp_path):
    """--format onnx (about half a minute here: torch.export, decompositions, translation), run by onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    import models
    out = tmp_path / "model.onnx"
    r = subprocess.run([PY, "-m", "models.export", "--ckpt", str(trained["ck"]), "--out", str(out), "--format",
                        "onnx", "--probs"], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (inp,), outs = sess.get_inputs(), sess.get_outputs()
    assert inp.name == "image" and inp.type == "tensor(uint8)" and inp.shape[2] == 3
    assert isinstance(inp.shape[0], str) and isinstance(inp.shape[1], str)  # symbolic height and width
    assert [(o.name, o.type) for o in outs] == [("labels", "tensor(uint8)"), ("probs", "tensor(float)")]
    model = models.load_model(str(trained["ck"])).eval()
    for i, (h, w) in enumerate(SIZES):
        img = _image(h, w, 30 + i)
        labels, probs = sess.run(None, {"image": img})
        ref_labels, ref_probs = _infer_path(model, img)
        assert labels.shape == (h, w) and probs.shape == (model.num_classes, h, w)
        np.testing.assert_allclose(probs, ref_probs.numpy(), atol=PROB_ATOL)
        clear = _clear(ref_probs).numpy()
        assert np.array_equal(labels[clear], ref_labels.numpy()[clear])


@pytest.mark.heavy
def test_convnext_tiny_program_matches_infer_path():
    """The real-size backbone traces too (its stage-4 depthwise convolution met ATen's channels-last size test)."""
    from models.export import export_program
    import models
    torch.manual_seed(0)
    model = models.build_model("upernet_convnext_tiny").eval()
    run = _runner(export_program(model, probs=True))
    for i, (h, w) in enumerate([(33, 33), (70, 45), (5, 7)]):
        img = _image(h, w, 40 + i)
        labels, probs = run(torch.from_numpy(img))
        ref_labels, ref_probs = _infer_path(model, img)
        torch.testing.assert_close(probs, ref_probs, atol=PROB_ATOL, rtol=0)
        clear = _clear(ref_probs)
        assert torch.equal(labels[clear], ref_labels.to(torch.uint8)[clear])


@pytest.mark.heavy
@pytest.mark.gpu
def test_cuda_package(tmp_path):
    import models
    from models.export import write_aoti
    model = _model(1).cuda()
    pkg = tmp_path / "model.cuda.pt2"
    write_aoti(model, str(pkg), probs=True, device="cuda", isa="auto")
    runner = torch._inductor.aoti_load_package(str(pkg))
    assert runner.get_metadata()["trashseg_device"] == "cuda"
    cpu_model = models.build_model("upernet_convnext_demo", 11).eval()
    cpu_model.load_state_dict(model.state_dict())
    for i, (h, w) in enumerate(SIZES):
        img = _image(h, w, 20 + i)
        labels, probs = runner(torch.from_numpy(img).cuda())
        ref_labels, ref_probs = _infer_path(cpu_model, img)
        # cuDNN convolutions run in TF32 by default (torch.backends.cudnn.allow_tf32): ~1e-3 relative
        torch.testing.assert_close(probs.cpu(), ref_probs, atol=2e-3, rtol=0)
        top2 = ref_probs.topk(2, 0).values
        clear = top2[0] - top2[1] > 1e-2
        assert torch.equal(labels.cpu()[clear], ref_labels.to(torch.uint8)[clear])
