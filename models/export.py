"""A deployable model: one file that segments a photo with torch alone (no trashseg code at the other end).

    python -m models.export --ckpt runs/x/best.pt --out model.pt2                   # AOTInductor package, this CPU
    python -m models.export --ckpt runs/x/best.pt --out model.pt2 --isa avx2        # runs on any AVX2 CPU
    python -m models.export --ckpt runs/x/best.pt --out model.pt2 --device cuda     # on a GPU host: a CUDA package
    python -m models.export --ckpt runs/x/best.pt --out model.onnx --format onnx    # onnxruntime / TensorRT / OpenVINO
    python -m models.export --ckpt runs/x/best.pt --out int8.pt2 --int8 --calib-data data/   # int8 (needs torchao)

    runner = torch._inductor.aoti_load_package("model.pt2")          # torch of the version that wrote it
    labels = runner(torch.from_numpy(rgb))                            # (H, W, 3) uint8 RGB → (H, W) uint8 class ids

The program is infer.py's single view (`--amp none --winograd off`, no TTA): the mean/std normalisation, a side
under MIN_INPUT padded bottom/right with the mean colour and cropped back (models.segmentor.min_input_padding,
computed from the symbolic sizes, so one program takes every H, W >= 1), the model, the argmax as uint8, and with
--probs the softmax probabilities (C, H, W) float32 as a second output. It is a torch.export program compiled ahead of
time by AOTInductor with frozen weights; the fused csrc ops are not in it. The package is loaded and run against the
eager program on three sizes before it is written (self_check); a package that differs is not written.

CPU instruction set (--isa): inductor vectorises its kernels for one ISA and compiles the package with gcc's
-march; both default to the build machine's best (AVX-512/AMX on a recent Xeon), and such a package does not run on
an AVX2 CPU. --isa avx2 builds it for x86-64-v3 with AVX2 kernels, runnable on any AVX2+FMA CPU; the choice is
printed and written into the package's metadata (`runner.get_metadata()["trashseg_isa"]`). Convolutions and matrix
products go through oneDNN inside libtorch, which picks its kernels at run time on the machine that runs them.

int8 (--int8, CPU packages): post-training quantization (models.quant: torchao's PT2E X86InductorQuantizer, the stem
and the classifier kept fp32), activation scales observed on --calib-images images of --calib-json under
--calib-data (the training images by default; unlabelled photos of the deployment serve as well), compiled into
oneDNN's int8 kernels. The self-check then holds the package to the quantized program run eagerly (on calibration
images and crops of them: 98 % of pixels the same class) and prints its agreement with the fp32 model.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import shutil
import sys
import tempfile
import time

import torch
import torch.nn.functional as F
from torch import nn

from data.classes import CLASSES
from data.io import publish

from . import quant
from .quant import INT8_CONFIGS, quantize_int8
from .segmentor import MIN_INPUT, Segmentor, min_input_padding

FORMATS = ("aoti", "onnx")
# --isa → (inductor's name for its VecISA, gcc -march for the whole package). x86-64-v3 is AVX2 + FMA + F16C + BMI2
# (Haswell, Zen 1 and later); x86-64-v4 adds AVX-512 F/BW/CD/DQ/VL (Skylake-SP, Zen 4).
ISAS = {
    "avx2": ("avx2", "x86-64-v3"),
    "avx512": ("avx512", "x86-64-v4"),
    "avx512_vnni": ("avx512 avx512_vnni", "x86-64-v4"),
    "amx": ("avx512 avx512_vnni amx_tile", "sapphirerapids"),
}
ONNX_OPSET = 18


class BinPool2d(nn.Module):
    """nn.AdaptiveAvgPool2d(size) as two products with bin-averaging matrices built from the input's (symbolic) size.

    Bin i of n inputs averages [floor(i n / s), ceil((i + 1) n / s)), ATen's rule. ATen's adaptive pooling branches on
    the input size (a 1-px map is special-cased), which pins an exported program to inputs whose stride-32 map is
    either 1 px or larger; this form has no branch. The sum order differs from ATen's: ~1e-7 relative."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def _bins(self, n, x: torch.Tensor) -> torch.Tensor:
        s = self.size
        idx = torch.arange(s * n, device=x.device)  # one flat index, so no broadcast of a symbolic dim against 1
        i = idx // n  # (s·n,) bin
        k = idx - i * n  # (s·n,) input position (no `%`: ONNX's exporter has no remainder by a symbolic scalar)
        start, end = (i * n) // s, ((i + 1) * n + s - 1) // s
        inside = ((k >= start) & (k < end)).to(x.dtype)
        return (inside / (end - start).to(x.dtype)).view(s, n)  # (s, n), rows sum to 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s = self.size
        y = torch.mm(x.reshape(b * c * h, w), self._bins(w, x).t())  # (B·C·H, s): pooled along W
        y = torch.bmm(self._bins(h, x).unsqueeze(0).expand(b * c, s, h), y.view(b * c, h, s))  # (B·C, s, s)
        return y.view(b, c, s, s)


class Deployable(nn.Module):
    """(H, W, 3) uint8 RGB → (H, W) uint8 class map [, (C, H, W) float32 probabilities]: infer.py's single view."""

    def __init__(self, model: Segmentor, probs: bool = False):
        super().__init__()
        self.model = exportable(model)
        self.probs = probs

    def forward(self, img: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        h, w = img.shape[0], img.shape[1]
        x = self.model.normalize(img.permute(2, 0, 1).unsqueeze(0))  # (1, 3, H, W) float32
        ph, pw = min_input_padding(h, w)
        x = F.pad(x, (0, pw, 0, ph))  # (1, 3, max(H, 32), max(W, 32)): 0 is the mean colour after normalisation
        logits = self.model(x)[:, :, :h, :w]  # (1, C, H, W)
        labels = logits.argmax(1)[0].to(torch.uint8)  # (H, W)
        if not self.probs:
            return labels
        return labels, logits.softmax(1)[0]  # (C, H, W)


def check_exportable(model: Segmentor) -> None:
    """ValueError unless one program can take every input size: ConvNeXt backbones only."""
    if type(model.backbone).__name__ != "ConvNeXt":
        # Swin's window padding, shift masks and patch merging branch on the input size (models/swin.py): a program
        # would hold for one residue of H and W modulo the window and the merges only.
        raise ValueError(f"{model.model_name}: only ConvNeXt backbones export with dynamic height and width "
                         "(Swin's window padding branches on the input size)")


def exportable(model: Segmentor) -> Segmentor:
    """An eval-mode copy of `model` with its adaptive pools (UPerHead's PPM) as BinPool2d."""
    check_exportable(model)
    m = copy.deepcopy(model).eval()
    for ppm in m.decode_head.psp_modules:
        ppm[0] = BinPool2d(ppm[0].output_size)
    return m


def example_input(device: str | torch.device = "cpu") -> torch.Tensor:
    # Every stage at least 2 px and H != W, so nothing is specialised to a 1-px map or a square image.
    return torch.zeros(64, 96, 3, dtype=torch.uint8, device=device)


def dynamic_shapes() -> tuple[dict]:
    return ({0: torch.export.Dim("height", min=1), 1: torch.export.Dim("width", min=1)},)


@contextlib.contextmanager
def size_oblivious():
    """Trace so that one graph holds for every H, W >= 1: a broadcast, view or contiguity check on a symbolic size
    does not specialise the program to that size being 1 or not (backed_size_oblivious). Likewise the memory format
    a fake convolution reports: torch asks ATen's channels-last test (torch._subclasses.fake_impls.conv), which looks
    at whether spatial sizes are 1 (ConvNeXt-T's stage-4 depthwise convolution: a guard H // 32 > 1); it answers from
    the example's sizes without recording a guard. A layout is metadata here: the graph's ops do not depend on it
    and AOTInductor chooses its own."""
    from torch.fx.experimental import _config as fx_config
    determine = torch._C._conv_determine_backend_memory_format

    def unguarded(input, weight, backend):
        env = getattr(getattr(input, "fake_mode", None), "shape_env", None)
        with env.suppress_guards() if env is not None else contextlib.nullcontext():
            return determine(input, weight, backend)

    torch._C._conv_determine_backend_memory_format = unguarded
    try:
        with fx_config.patch(backed_size_oblivious=True):
            yield
    finally:
        torch._C._conv_determine_backend_memory_format = determine


def export_program(model: Segmentor, probs: bool = False, device: str | torch.device = "cpu"):
    """torch.export.ExportedProgram of Deployable(model) with dynamic height and width on `device`."""
    dep = Deployable(model, probs).to(device).eval()
    with torch.no_grad(), size_oblivious():
        return torch.export.export(dep, (example_input(device),), dynamic_shapes=dynamic_shapes())


# ------------------------------------------------------------------------------------------------ CPU instruction set

def _host_isas() -> list:
    from torch._inductor import cpu_vec_isa
    return cpu_vec_isa.valid_vec_isa_list()


def resolve_isa(name: str) -> tuple[object, str | None]:
    """(inductor VecISA, gcc -march or None for torch's default) for --isa on this machine. ValueError if the machine
    (CPU, or its compiler in inductor's build check) lacks it: a package is compiled and checked where it is built."""
    from torch._inductor import cpu_vec_isa
    host = _host_isas()
    if name == "auto":
        isa = cpu_vec_isa.pick_vec_isa()
        by_str = {v[0]: (k, v[1]) for k, v in ISAS.items()}
        return isa, by_str.get(str(isa), (None, None))[1]
    if name not in ISAS:
        raise ValueError(f"--isa {name}: choose from auto, {', '.join(ISAS)}")
    want, march = ISAS[name]
    for isa in host:
        if str(isa) == want:
            return isa, march
    has = ", ".join(k for k, v in ISAS.items() if any(str(i) == v[0] for i in host)) or "none of them"
    raise ValueError(f"--isa {name}: this machine cannot build it (its CPU and compiler support: {has}); "
                     "build on a machine that has it, or choose a lower ISA")


def isa_name(isa) -> str:
    """--isa's name for an inductor VecISA ("scalar": no vector ISA; another architecture's: inductor's name)."""
    if not isa:
        return "scalar"
    return {v[0]: k for k, v in ISAS.items()}.get(str(isa), str(isa).replace(" ", "+"))


@contextlib.contextmanager
def pinned_isa(isa):
    """Inductor picks its vector ISA from valid_vec_isa_list() (the host's ISAs, best first) on every call of
    pick_vec_isa(); with the list narrowed to `isa` its kernels, its build flags and the package's AOTI_CPU_ISA all
    follow (torch/_inductor/cpu_vec_isa.py). cpp.simdlen alone would pick AMX over plain AVX-512 (same width)."""
    from torch._inductor import cpu_vec_isa
    orig = cpu_vec_isa.valid_vec_isa_list
    cpu_vec_isa.valid_vec_isa_list = lambda: [isa]
    try:
        yield
    finally:
        cpu_vec_isa.valid_vec_isa_list = orig


# ------------------------------------------------------------------------------------------------------------ writers

def metadata(model: Segmentor, probs: bool, device: str, isa: str, march: str | None,
             precision: str = "fp32") -> dict[str, str]:
    """What a user of the file needs to know, as AOTInductor metadata (string → string)."""
    return {
        "trashseg_model": model.model_name,
        "trashseg_classes": json.dumps(list(CLASSES) if model.num_classes == len(CLASSES) else
                                       [str(i) for i in range(model.num_classes)]),
        "trashseg_input": "(H, W, 3) uint8 RGB, any H, W >= 1",
        "trashseg_outputs": "labels (H, W) uint8" + (", probs (C, H, W) float32" if probs else ""),
        "trashseg_device": device,
        "trashseg_isa": isa,
        "trashseg_march": march or "native",
        "trashseg_torch": torch.__version__,
        "trashseg_min_input": str(MIN_INPUT),
        "trashseg_precision": precision,
    }


def write_aoti(model: Segmentor, out: str, probs: bool = False, device: str = "cpu", isa: str = "auto",
               log=print, calib: list[torch.Tensor] | None = None) -> dict[str, str]:
    """Export and AOT-compile Deployable(model) into the package `out` (.pt2, written atomically); its metadata.
    With `calib` ((H, W, 3) uint8 images) the program is quantized to int8 first (models.quant; CPU only)."""
    vec_isa, march = resolve_isa(isa)
    name = isa_name(vec_isa)
    meta = metadata(model, probs, device, name, march, "int8" if calib else "fp32")
    # Frozen weights (constants folded, BatchNorm folded into the convolutions), but no oneDNN weight prepacking: in
    # torch 2.14.1, with dynamic H, W, a prepacked convolution (mkldnn._convolution_pointwise) returns an NCHW output
    # where the compiled program expects channels-last strides (AOTI_RUNTIME_CHECK_INPUTS=1 reports it at ConvNeXt's
    # first depthwise convolution), and the LayerNorm after it reads garbage. Static shapes, or no prepacking, are
    # right; tests/test_export.py's heavy tests hold the package to infer.py.
    configs = {"freezing": True, "cpp.weight_prepack": False, "aot_inductor.metadata": meta}
    if march is not None:
        configs.update({"cpp.march": march, "cpp.simdlen": vec_isa.bit_width()})
    if calib:
        # int8 convolutions are oneDNN qconv (prepacked, channels-last by construction): the fp32 prepacking issue
        # above does not arise for them; the self-check below runs every size class through the package.
        configs.update(INT8_CONFIGS)
    hint = isa == "auto" and name in ("avx512", "avx512_vnni", "amx")  # a package older x86 CPUs cannot run
    log(f"CPU instruction set: {name} (-march={march or 'native'})"
        + ("; the build machine's best: --isa avx2 builds a package that any AVX2 CPU runs" if hint else ""))
    t0 = time.time()
    ep = export_program(model, probs, device)
    log(f"torch.export: {time.time() - t0:.1f} s")
    reference = None
    if calib:
        reference = quantize_int8(ep, ((img,) for img in calib), prefix="model.", log=log)
        with torch.no_grad(), size_oblivious():
            ep = torch.export.export(reference, (example_input(device),), dynamic_shapes=dynamic_shapes())
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    # The archive's top folder is named after the file it is written to: a temp folder keeps the final name.
    tmpdir = tempfile.mkdtemp(dir=d, prefix=".export-")
    tmp = os.path.join(tmpdir, os.path.basename(out))
    t0 = time.time()
    try:
        # Two compiles at once share inductor's cache, where the kernel files of one model are the same for any
        # weights: one process packaged another's half-written kernel_metadata.json (an unloadable package). The
        # lock serialises exports on this machine and keeps the cache.
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        from torch.utils._filelock import FileLock
        with FileLock(os.path.join(cache_dir(), "trashseg_export.lock")), torch.no_grad(), pinned_isa(vec_isa):
            torch._inductor.aoti_compile_and_package(ep, package_path=tmp, inductor_configs=configs)
        log(f"AOTInductor compile: {time.time() - t0:.1f} s")
        runner = torch._inductor.aoti_load_package(tmp)
        log(self_check(runner, model, probs, device) if reference is None else
            self_check_int8(runner, reference, model, calib, probs))
        publish(tmp, out)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return meta


def self_check(runner, model: Segmentor, probs: bool, device: str = "cpu") -> str:
    """The freshly compiled package against the eager program on three sizes (a 1-px stride-32 map, the example's
    size, a side under MIN_INPUT): RuntimeError unless the class maps agree wherever the top-2 probabilities differ
    by 1e-3 and the probabilities by 1e-4 (1e-3 on CUDA: TF32 convolutions); a line saying so otherwise."""
    ref = Deployable(model, probs=True).to(device).eval()
    g = torch.Generator().manual_seed(0)
    worst, tol = 0.0, 1e-4 if device == "cpu" else 1e-3
    for h, w in ((33, 33), (64, 96), (5, 7)):
        img = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).to(device)
        with torch.no_grad():
            want_labels, want_probs = ref(img)
            got = runner(img)
        labels, got_probs = got if probs else (got, None)
        top2 = want_probs.topk(2, 0).values
        clear = top2[0] - top2[1] > 1e-3
        if labels.dtype != torch.uint8 or labels.shape != (h, w) or not torch.equal(labels[clear], want_labels[clear]):
            raise RuntimeError(f"self-check: the compiled package's class map at {h}x{w} differs from the eager "
                               "program's; the package is not written")
        if got_probs is not None:
            worst = max(worst, (got_probs - want_probs).abs().max().item())
    if worst > tol:
        raise RuntimeError(f"self-check: probabilities differ from the eager program's by {worst:.1e} (> {tol:.0e}); "
                           "the package is not written")
    return "self-check against the eager program (33x33, 64x96, 5x7): class maps agree" + \
        (f", probabilities within {worst:.1e}" if probs else "")


def self_check_int8(runner, reference, model: Segmentor, calib: list[torch.Tensor], probs: bool) -> str:
    """The int8 package against the quantized program run eagerly (its reference: the same quantize / dequantize
    steps, ATen's fp32 kernels between them) on three calibration images, a 33x33 crop, a 517x389 resize and a 5x7
    crop of the first: RuntimeError unless 98 % of all these pixels get the same class; a line with that share and
    the package's agreement with the fp32 model otherwise. Rounding of int8 activations differs between oneDNN and
    the reference, so pixels near a class boundary may flip; a wrong layout or kernel flips whole regions."""
    fp32 = Deployable(model, probs=False).eval()
    first = calib[0]
    views = list(calib[:3]) + [first[:33, :33], first[:5, :7]]
    big = F.interpolate(first.permute(2, 0, 1)[None].float(), size=(517, 389), mode="bilinear", align_corners=False)
    views.append(big[0].round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous())  # (517, 389, 3)
    same = same_fp32 = total = 0
    with torch.no_grad():
        for img in views:
            got = runner(img)
            labels = got[0] if probs else got
            want = reference(img)
            want = want[0] if probs else want
            if labels.dtype != torch.uint8 or labels.shape != img.shape[:2]:
                raise RuntimeError(f"self-check: the int8 package returned {labels.dtype} {tuple(labels.shape)} for "
                                   f"a {tuple(img.shape[:2])} image; the package is not written")
            same += (labels == want).sum().item()
            same_fp32 += (labels == fp32(img)).sum().item()
            total += labels.numel()
    if same < 0.98 * total:
        raise RuntimeError(f"self-check: the int8 package gives {same / total:.1%} of pixels the class the quantized "
                           "program gives (< 98 %); the package is not written")
    return (f"self-check of the int8 package ({len(views)} images, 33x33 to 517x389): {same / total:.2%} of pixels "
            f"as the quantized program, {same_fp32 / total:.2%} as the fp32 model")


def write_onnx(model: Segmentor | None, out: str, probs: bool = False, program=None, log=print) -> None:
    """The same program as ONNX (torch.onnx's dynamo exporter, opset ONNX_OPSET), height and width dynamic: exported
    from `model`, or converted from export_program()'s `program` (no second trace)."""
    names = ["labels", "probs"] if probs else ["labels"]
    d = os.path.dirname(os.path.abspath(out))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".export-", suffix=".onnx")
    os.close(fd)
    t0 = time.time()
    try:
        with torch.no_grad(), size_oblivious():
            if program is None:
                onnx_prog = torch.onnx.export(Deployable(model, probs).eval(), (example_input(),), dynamo=True,
                                              dynamic_shapes=dynamic_shapes(), input_names=["image"],
                                              output_names=names, opset_version=ONNX_OPSET, verbose=False)
            else:
                onnx_prog = torch.onnx.export(program, (), dynamo=True, input_names=["image"], output_names=names,
                                              opset_version=ONNX_OPSET, verbose=False)
        onnx_prog.save(tmp)
        publish(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    log(f"ONNX export: {time.time() - t0:.1f} s")


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m models.export", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--ckpt", required=True, help="a train.py checkpoint (best.pt) or a models.convert file")
    p.add_argument("--out", required=True, help="the artifact: .pt2 (aoti) or .onnx")
    p.add_argument("--format", default="aoti", choices=FORMATS)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                   help="aoti: the device the package runs on (cuda: compile on a GPU host)")
    p.add_argument("--isa", default="auto", choices=["auto", *ISAS],
                   help="aoti: CPU instruction set of the package (auto: the build machine's best)")
    p.add_argument("--probs", action="store_true", help="a second output: softmax probabilities (C, H, W) float32")
    p.add_argument("--int8", action="store_true",
                   help="aoti, CPU: int8 post-training quantization (needs torchao), calibrated on --calib-data")
    p.add_argument("--calib-data", help="--int8: the data root whose images calibrate the activation scales")
    p.add_argument("--calib-json", default="train.json", help="--int8: the image list under --calib-data")
    p.add_argument("--calib-images", type=int, default=32, help="--int8: how many of its images (the first N)")
    return p


def calibration_images(root: str, json_file: str, n: int) -> list[torch.Tensor]:
    """The first n images of a COCO list under a data root, as (H, W, 3) uint8 RGB tensors (labels not needed)."""
    from data.coco.dataset import CocoSegDataset
    ds = CocoSegDataset(root, json_file)
    if len(ds) == 0:
        raise ValueError(f"{json_file}: no images to calibrate on")
    return [torch.from_numpy(ds.load_image(i)) for i in range(min(n, len(ds)))]


def main(args: argparse.Namespace) -> int:
    from . import load_model
    try:
        model = load_model(args.ckpt, map_location="cpu").eval()
        check_exportable(model)
    except Exception as e:  # missing, unreadable, not a torch file, not a trashseg checkpoint, a Swin model
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        first = first[len(f"{args.ckpt}: "):] if first.startswith(f"{args.ckpt}: ") else first
        known = isinstance(e, (OSError, ValueError, KeyError))
        print(f"error: {args.ckpt}: {first if known else f'not a trashseg checkpoint ({type(e).__name__}: {first})'}",
              file=sys.stderr)
        return 2
    ext = {"aoti": ".pt2", "onnx": ".onnx"}[args.format]
    if not args.out.endswith(ext):
        print(f"error: --out {args.out}: a {args.format} artifact's name ends in {ext}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device here (AOTInductor compiles for the GPU it runs on)",
              file=sys.stderr)
        return 2
    if args.format == "onnx" and (args.device != "cpu" or args.isa != "auto"):
        print("error: --device / --isa apply to --format aoti (an ONNX runtime picks its own kernels)",
              file=sys.stderr)
        return 2
    if args.int8 and (args.format != "aoti" or args.device != "cpu"):
        print("error: --int8 builds CPU packages (--format aoti --device cpu): oneDNN's x86 int8 kernels",
              file=sys.stderr)
        return 2
    if args.int8 and not args.calib_data:
        print("error: --int8 needs --calib-data ROOT (images to observe the activation ranges on)", file=sys.stderr)
        return 2
    calib = None
    if args.int8:
        why = quant.available()
        if why:
            print(f"error: --int8: {why}", file=sys.stderr)
            return 2
        try:
            calib = calibration_images(args.calib_data, args.calib_json, args.calib_images)
        except (OSError, ValueError) as e:  # a missing root or list, an invalid COCO file (DataError), no images
            print(f"error: --calib-data {args.calib_data}: {str(e).splitlines()[0]}", file=sys.stderr)
            return 2
    if args.format == "aoti":
        try:
            resolve_isa(args.isa)
        except ValueError as e:  # an ISA this machine cannot build
            print(f"error: {e}", file=sys.stderr)
            return 2
    print(f"{args.ckpt}: {model.model_name}, {model.num_classes} classes; {platform.machine()}, "
          f"torch {torch.__version__}")
    if args.format == "onnx":
        write_onnx(model, args.out, args.probs)
    else:
        write_aoti(model.to(args.device), args.out, args.probs, args.device, args.isa, calib=calib)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
