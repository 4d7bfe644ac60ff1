"""Multi-scale, flip test-time augmentation through the fused streaming merge (SPEC §4 TTA).

Only one view's logits are alive at a time: each view is resized, softmaxed, un-flipped and added into one running
float32 (B, C, H, W) accumulator by csrc's fused kernel, so memory is bounded whatever the number of views
(mmseg 1.x keeps every view's full-size map).

Two test modes, as mmseg's test_cfg: mode="whole" runs each view through the model at once; mode="slide" runs it
window by window (SPEC §4 "Slide inference": crop_size, stride), the window logits summed by csrc's
slide_accumulate_ into one float32 view-size map that is divided in place by the window count and then merged like
any view. Any image or view of >= 1 px works in both modes: inputs smaller than MIN_INPUT are padded (bottom/right,
zero after normalisation, as mmseg's data preprocessor pads) and the logits cropped back, so no pad pixel reaches the
output.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from csrc import ops
from engine import dist as D
from engine.evaluate import autocast, cpu_has_amx, resolve_amp
from models import winograd
from models.layers import bf16_matmul_weights
from models.segmentor import MIN_INPUT, min_input_padding  # noqa: F401  (MIN_INPUT: re-exported, tests use it)

TTA_SCALES = (256, 384, 512, 640)  # SPEC §4: the team's scales (step 128) × horizontal flip, for 512-px images
TTA_RATIOS = (0.5, 0.75, 1.0, 1.25)  # the same views for an image of any size: ratios of its longer side


def view_size(h: int, w: int, scale: int | float | None) -> tuple[int, int]:
    """An int s resizes the image so its longer side is s; a float r scales it by r; None keeps it. Aspect kept.

    For the competition's 512×512 images, 256/384/512/640 and 0.5/0.75/1.0/1.25 are the same s×s views the team used.
    """
    if scale is None:
        return h, w
    r = scale if isinstance(scale, float) else scale / max(h, w)
    return max(1, int(round(h * r))), max(1, int(round(w * r)))


def _view_step(model: torch.nn.Module, xv: torch.Tensor, acc: "ops.TTAAccumulator", flipped: bool,
               amp: str, channels_last: bool = False, mode: str = "whole", crop_size=None, stride=None,
               window_batch: int = 1) -> torch.Tensor:
    logits = predict_view(model, xv, amp, channels_last, mode, crop_size, stride, window_batch)  # (B, C, vh, vw)
    acc.add(logits, flip=flipped)
    return logits


_compiled_steps: dict = {}


def compiled_view_step():
    """torch.compile of one view's forward + the accumulator's fused add, one graph (the ops have fake kernels and
    no Python-side graph break). Shapes are marked dynamic after the first recompile, so the TTA scales share code."""
    if "step" not in _compiled_steps:
        _compiled_steps["step"] = torch.compile(_view_step)
    return _compiled_steps["step"]


@torch.no_grad()
def tta_accumulate(models: Sequence[torch.nn.Module], img: torch.Tensor, scales: Sequence[int | None],
                   flip: bool, amp: str = "none", channels_last: bool = False,
                   acc: "ops.TTAAccumulator | None" = None, on_view=None, mode: str = "whole",
                   crop_size=None, stride=None, window_batch: int = 1,
                   compile: bool = False) -> "ops.TTAAccumulator":
    """Feed every (model, scale, flip) view of a uint8 batch (B, 3, H, W) into one accumulator.

    Several models make a soft ensemble of teachers (each view weighs the same). `on_view(model_idx, scale, flipped,
    logits)` sees each view's logits after they are merged (infer.py uses it for the single-scale metric).
    mode="slide" slides every view (scaled, flipped) on its own with crop_size / stride (predict_view); any view size
    >= 1 px works in both modes. compile=True runs each view's forward and merge through torch.compile
    (compiled_view_step; whole mode only: the slide loop stays eager).
    """
    if compile and mode != "whole":
        raise ValueError("--compile covers whole mode only; slide mode runs eagerly")
    step = compiled_view_step() if compile else _view_step
    b, _, h, w = img.shape
    num_classes = models[0].num_classes
    if acc is None:
        acc = ops.TTAAccumulator(b, num_classes, (h, w), img.device)
    for mi, model in enumerate(models):
        x0 = model.normalize(img)  # (B, 3, H, W) float32
        for s in scales:
            vh, vw = view_size(h, w, s)
            x = x0 if (vh, vw) == (h, w) else F.interpolate(x0, size=(vh, vw), mode="bilinear", align_corners=False)
            for flipped in ((False, True) if flip else (False,)):
                xv = x.flip(-1) if flipped else x
                logits = step(model, xv, acc, flipped, amp, channels_last, mode, crop_size, stride,
                              window_batch)  # (B, C, vh, vw), already added into acc
                if on_view is not None:
                    on_view(mi, s, flipped, logits)
                del logits
    return acc


# ---------------------------------------------------------------------------------------------------- whole / slide

MODES = ("whole", "slide")
SLIDE_CROP, SLIDE_STRIDE = 512, 341  # mmseg's 512x512 configs' test_cfg (the team's ConvNeXt-XL: 640 / 426)


def forward_padded(model: torch.nn.Module, x: torch.Tensor, amp: str = "none",
                   channels_last: bool = False) -> torch.Tensor:
    """model(x) for a normalised (B, 3, h, w) input of any size >= 1: a side under MIN_INPUT is padded bottom/right
    with 0 (the mean colour after normalisation) and the logits are cropped back to (B, C, h, w) (a view, no copy)."""
    h, w = x.shape[-2:]
    ph, pw = min_input_padding(h, w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))  # (B, 3, max(h, 32), max(w, 32))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, amp):
        logits = model(x)  # (B, C, H', W')
    return logits[..., :h, :w] if (ph or pw) else logits


def slide_logits(model: torch.nn.Module, x: torch.Tensor, crop_size, stride, amp: str = "none",
                 channels_last: bool = False, window_batch: int = 1) -> torch.Tensor:
    """mmseg's slide inference of a normalised (B, 3, h, w) input: float32 (B, C, h, w) mean window logits.

    window_batch windows go through the model together (k*B images); mmseg runs one at a time (the default), which
    bounds memory by one window's activations. The sum lives in ops.SlideAccumulator (one (B, C, h, w) float32 map;
    no count plane, no padded per-window copy)."""
    b, _, h, w = x.shape
    wins = ops.slide_grid((h, w), crop_size, stride)
    sa = None
    for k in range(0, len(wins), window_batch):
        xs = [x[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in wins[k:k + window_batch]]  # each (B, 3, eh, ew)
        xw = xs[0] if len(xs) == 1 else torch.cat(xs)  # (k*B, 3, eh, ew)
        logits = forward_padded(model, xw, amp, channels_last)  # (k*B, C, eh, ew)
        if sa is None:  # C from the logits: works for wrapped (DDP, compiled) models too
            sa = ops.SlideAccumulator(b, logits.shape[1], (h, w), crop_size, stride, x.device)
        sa.add(logits)
        del xw, xs, logits
    return sa.logits()


def predict_view(model: torch.nn.Module, x: torch.Tensor, amp: str = "none", channels_last: bool = False,
                 mode: str = "whole", crop_size=None, stride=None, window_batch: int = 1) -> torch.Tensor:
    """Logits (B, C, h, w) of one normalised view in `mode` (whole: the model's dtype; slide: float32)."""
    if mode == "whole":
        return forward_padded(model, x, amp, channels_last)
    if mode == "slide":
        return slide_logits(model, x, crop_size or SLIDE_CROP, stride or SLIDE_STRIDE, amp, channels_last,
                            window_batch)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


class Predictor(torch.nn.Module):
    """model(x) in a test mode, for code that calls a model on normalised batches (train.py's validation through
    engine.evaluate): Predictor(model, "slide", 512, 341)(x) -> logits (B, C, h, w), any input size."""

    def __init__(self, model: torch.nn.Module, mode: str = "whole", crop_size=None, stride=None, amp: str = "none",
                 channels_last: bool = False):
        super().__init__()
        self.model, self.mode, self.crop_size, self.stride = model, mode, crop_size, stride
        self.amp, self.channels_last = amp, channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return predict_view(self.model, x, self.amp, self.channels_last, self.mode, self.crop_size, self.stride)


def add_mode_args(p, prefix: str = "") -> None:
    """--{prefix}mode / --{prefix}crop-size / --{prefix}stride on an argparse parser (infer, pseudo_label, train)."""
    p.add_argument(f"--{prefix}mode", default="whole", choices=MODES,
                   help="whole: each view at once; slide: windows of --crop-size every --stride px, logits averaged "
                        "where they overlap (mmseg test_cfg mode='slide')")
    p.add_argument(f"--{prefix}crop-size", type=int, nargs="+", default=None, metavar="C",
                   help=f"slide window: C or H W (default {SLIDE_CROP})")
    p.add_argument(f"--{prefix}stride", type=int, nargs="+", default=None, metavar="S",
                   help=f"slide stride: S or H W (default {SLIDE_STRIDE}; at most the window)")


def mode_kwargs(args, prefix: str = "") -> dict:
    """dict(mode=, crop_size=, stride=) from add_mode_args' flags; ValueError with the flag's name if invalid."""
    a = prefix.replace("-", "_")
    mode = getattr(args, f"{a}mode")
    crop, stride = getattr(args, f"{a}crop_size"), getattr(args, f"{a}stride")
    if mode != "slide":
        if crop or stride:
            raise ValueError(f"--{prefix}crop-size / --{prefix}stride need --{prefix}mode slide")
        return {"mode": mode}
    pair = []
    for name, v, default in (("crop-size", crop, SLIDE_CROP), ("stride", stride, SLIDE_STRIDE)):
        v = v or [default]
        if len(v) > 2 or min(v) < 1:
            raise ValueError(f"--{prefix}{name} takes one or two positive ints, got {' '.join(map(str, v))}")
        pair.append((v[0], v[-1]))
    if pair[1][0] > pair[0][0] or pair[1][1] > pair[0][1]:
        raise ValueError(f"--{prefix}stride {pair[1]} is larger than --{prefix}crop-size {pair[0]}: "
                         "pixels between windows would get no prediction")
    return {"mode": mode, "crop_size": pair[0], "stride": pair[1]}


def add_winograd_arg(p) -> None:
    p.add_argument("--winograd", default="auto", choices=["auto", "on", "off"],
                   help="Winograd 3x3 convolutions (NNPACK) for fp32 inference on the CPU: ~2x the head's speed, "
                        "relative error ~1e-5 (auto: on for fp32 CPU inference without --compile)")


def add_amp_arg(p) -> None:
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                   help="auto: bf16 on CUDA and on a CPU with AMX; on one with avx512_bf16 alone fp32 with Winograd "
                        "convolutions (as fast there, and exact), or bf16 where Winograd does not apply; else fp32")


def add_inference_args(p) -> None:
    """The inference flags infer.py and pseudo_label.py share: the views (--tta, --scales, --flip, read by
    tta_views), the test mode (add_mode_args), batching (--batch-size, --workers), precision and kernels (--amp,
    --compile, --winograd, checked by inference_settings and apply_winograd) and --device."""
    p.add_argument("--tta", action="store_true",
                   help=f"views at {TTA_RATIOS} × the longer side (256..640 for 512 px) × horizontal flip")
    p.add_argument("--scales", type=int, nargs="+", default=None,
                   help="explicit longer-side sizes of the views (instead of --tta's ratios)")
    p.add_argument("--flip", action="store_true", help="add horizontally flipped views")
    add_mode_args(p)  # --mode whole|slide --crop-size --stride (mmseg test_cfg)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    add_amp_arg(p)
    p.add_argument("--compile", action="store_true", help="torch.compile each view's forward with the fused merge")
    add_winograd_arg(p)
    add_channels_last_arg(p)
    p.add_argument("--device", default="auto")


def tta_views(args) -> tuple[list, bool]:
    """(scales, flip) of add_inference_args' flags: --scales, else --tta's TTA_RATIOS, else the image as it is
    ([None]); flipped views with --flip or --tta."""
    return list(args.scales or (TTA_RATIOS if args.tta else [None])), bool(args.flip or args.tta)


def winograd_applies(args) -> bool:
    """Whether --winograd would swap the convolutions of fp32 CPU inference (not off, no --compile, NNPACK here)."""
    return args.winograd != "off" and not getattr(args, "compile", False) and winograd.available()


def apply_winograd(nets: Sequence[torch.nn.Module], args, device: torch.device, amp: str) -> bool:
    """--winograd: swap the models' 3x3 convolutions to models.winograd's NNPACK path where it applies (fp32, CPU,
    eager); whether it did. `on` where it cannot apply ends the script with one line (exit 2 via cli_errors)."""
    if args.winograd == "off":
        return False
    why = ("the device is not the CPU" if device.type != "cpu" else
           f"--amp resolves to {amp}, not fp32" if amp != "none" else
           "--compile lets inductor compile the convolutions" if getattr(args, "compile", False) else
           "this torch has no NNPACK for this CPU" if not winograd.available() else "")
    if why:
        if args.winograd == "on":
            raise SystemExit(f"error: --winograd on: {why}")
        return False
    for net in nets:
        winograd.use_winograd(net)
    return True


def add_channels_last_arg(p) -> None:
    p.add_argument("--channels-last", nargs="?", const="on", default="auto", choices=["auto", "on", "off"],
                   help="channels_last memory format (auto: for bf16 inference on the CPU, where oneDNN's bf16 "
                        "convolutions run NHWC; --channels-last alone: on)")


def apply_inference_layout(nets: Sequence[torch.nn.Module], args, device: torch.device, amp: str) -> bool:
    """--channels-last for inference: puts the models in channels_last where it applies and says whether it does
    (the inputs then go channels_last too): `on` everywhere; `auto` for eager bf16 inference on the CPU, where the
    convolution and linear weights are also cast to bf16 once (models.layers.bf16_matmul_weights: the values
    autocast would compute on every call). oneDNN's bf16 convolutions (AMX) run NHWC: on an AMX Xeon ConvNeXt-T
    UperNet at 512² takes 0.40 s this way against 0.60 s in NCHW with per-call casts (README "Per CPU kind"). Not
    with --compile (inductor picks layouts) or --int8."""
    mode = getattr(args, "channels_last", "auto")
    cpu_bf16 = (device.type == "cpu" and amp == "bf16" and mode != "off" and not getattr(args, "compile", False)
                and not getattr(args, "int8", False))
    on = cpu_bf16 or mode == "on"
    for net in nets:
        if on:
            net.to(memory_format=torch.channels_last)
        if cpu_bf16:
            bf16_matmul_weights(net)
    return on


def int8_model(model: torch.nn.Module, ds, n: int, log=print) -> torch.nn.Module:
    """infer.py --int8: `model` quantized and compiled (models.int8.int8_segmentor), calibrated on the first n
    readable images of `ds` at their own size (a side under MIN_INPUT padded as forward_padded pads it)."""
    from data.coco.checks import DataError
    from models.int8 import int8_segmentor
    calib = []
    for i in range(len(ds)):
        if len(calib) == n:
            break
        try:
            img = torch.from_numpy(ds.load_image(i)).permute(2, 0, 1)[None]  # (1, 3, H, W) uint8
        except DataError:  # unreadable: the loop skips or stops on it later, as without --int8
            continue
        x = model.normalize(img)
        ph, pw = min_input_padding(*x.shape[-2:])
        calib.append(F.pad(x, (0, pw, 0, ph)))  # (1, 3, max(H, 32), max(W, 32))
    if not calib:
        raise SystemExit("error: --int8: no readable image to calibrate on")
    if D.is_main():
        log(f"int8: quantizing {getattr(model, 'model_name', 'the model')} on {len(calib)} image(s), then compiling")
    return int8_segmentor(model, calib, log=log if D.is_main() else (lambda _: None))


def inference_amp(args, device: torch.device) -> tuple[str, str]:
    """(amp, why) of --amp for inference on this process's machine: auto is bf16 on CUDA and on a CPU with AMX; on
    one with avx512_bf16 alone fp32 with Winograd 3x3 convolutions where they apply, as fast as bf16 or faster there
    (Zen 4, 512²: ConvNeXt-T 1.24-1.30 vs 1.34-1.38 s, Swin-T 1.36 vs 1.48 s) and exact; else bf16 where bf16 is
    native, fp32 elsewhere. `why` explains an fp32 choice on the CPU."""
    amp = resolve_amp(args.amp, device)
    if args.amp == "auto" and amp == "bf16" and device.type == "cpu" and not cpu_has_amx() and winograd_applies(args):
        return "none", " with Winograd convolutions (native bf16 but no AMX: fp32 is as fast there, and exact)"
    return amp, " (this CPU has no native bf16)"


def inference_settings(args, device: torch.device) -> tuple[str, dict]:
    """infer.py's and pseudo_label.py's --amp, --mode / --crop-size / --stride and --compile (absent: off; the
    report has no --compile), checked:
    (amp, mode kwargs for tta_accumulate). A bad combination ends the script with one line (exit 2 via cli_errors)."""
    amp, why = inference_amp(args, device)
    amp = D.from_main(amp)  # rank 0's choice on every rank (nodes may differ)
    if args.amp == "auto" and D.is_main():
        print(f"--amp auto: {'bf16' if amp == 'bf16' else 'fp32'} on {device.type}"
              + (why if device.type == "cpu" and amp == "none" else ""))
    try:
        mode = mode_kwargs(args)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if getattr(args, "compile", False) and mode["mode"] != "whole":
        raise SystemExit("error: --compile covers --mode whole only (the slide loop runs eagerly)")
    return amp, mode
