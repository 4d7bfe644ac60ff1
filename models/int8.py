"""infer.py --int8: a Segmentor quantized (models.quant) and compiled ahead of time for this CPU (models.export's
program, instruction-set pinning and AOTInductor package), loaded back as a module that whole, slide and TTA
inference take where they take the model. Its own module because it needs both: models.export writes int8
packages with models.quant, and this wraps their result for in-process use."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from typing import Callable, Iterable

import torch

from csrc import ops

from .export import exportable, pinned_isa, resolve_isa, size_oblivious
from .quant import INT8_CONFIGS, quantize_int8


class Int8Segmentor(torch.nn.Module):
    """A Segmentor's eval forward as a compiled int8 package: normalised (B, 3, H, W) float32, H, W >= 32 (what
    engine.predict.forward_padded passes) → (B, C, H, W) logits. Keeps `normalize` and `num_classes`, so whole,
    slide and TTA inference take it where they take the model."""

    def __init__(self, model, runner):
        super().__init__()
        self.num_classes = model.num_classes
        self.model_name = model.model_name
        self.normalize = model.normalize
        self.runner = runner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.runner(x.contiguous())  # (B, C, H, W): the package wants the layout it was traced with


def int8_segmentor(model, calibration: Iterable[torch.Tensor], isa: str = "auto",
                   log: Callable[[str], None] = print) -> Int8Segmentor:
    """`model` (a Segmentor, ConvNeXt backbone) quantized on `calibration` (normalised (1, 3, H, W) inputs, H, W >=
    32) and compiled ahead of time for this CPU, with dynamic batch, height and width (one compile for every view
    size: minutes on 2 cores for the demo model). The package lives in a temporary folder that is removed once
    loaded."""
    net = exportable(model.cpu())
    dims = ({0: torch.export.Dim("batch", min=1), 2: torch.export.Dim("height", min=32),
             3: torch.export.Dim("width", min=32)},)
    t0 = time.time()
    with torch.no_grad(), size_oblivious():
        program = torch.export.export(net, (torch.zeros(2, 3, 64, 96),), dynamic_shapes=dims)
    quantized = quantize_int8(program, ((x,) for x in calibration), log=log)
    with torch.no_grad(), size_oblivious():
        program = torch.export.export(quantized, (torch.zeros(2, 3, 64, 96),), dynamic_shapes=dims)
    vec_isa, march = resolve_isa(isa)
    configs = dict(INT8_CONFIGS)
    if march is not None:
        configs.update({"cpp.march": march, "cpp.simdlen": vec_isa.bit_width()})
    tmpdir = tempfile.mkdtemp(prefix="trashseg-int8-")
    try:
        path = os.path.join(tmpdir, "int8.pt2")
        with torch.no_grad(), pinned_isa(vec_isa), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")  # inside inductor
            torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=configs)
        runner = torch._inductor.aoti_load_package(path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    log(f"int8: compiled for {vec_isa or 'scalar'} in {time.time() - t0:.0f} s")
    return Int8Segmentor(model, runner)


# ---------------------------------------------------------------------------------------------------- int8 head

class Int8ConvModule(torch.nn.Module):
    """A decode-head ConvModule (3×3 conv → BN → ReLU) as one oneDNN int8 convolution, for CPU inference inside the
    eager (bf16 or fp32) model (`infer.py --int8-head`). BN is folded into the weights, which are int8 with one scale
    per output channel (absmax / 127); the input, a ReLU output and so non-negative, is quantized to uint8 on every
    call with one scale from its own max (csrc quantize_u8: no calibration); the convolution accumulates in int32,
    adds the fp32 bias, applies the ReLU and writes the input's dtype (bf16 under bf16 inference), channels_last.

    On an AMX CPU the int8 convolution runs at about twice the bf16 one (AMX-int8 tiles), and the head's 3×3
    convolutions are ~88 % of ConvNeXt-T UperNet's FLOPs at 512²; elsewhere oneDNN uses VNNI or AVX2 int8 kernels."""

    def __init__(self, cm):
        super().__init__()
        conv, bn = cm.conv, cm.bn
        std = torch.sqrt(bn.running_var.double() + bn.eps)
        g = bn.weight.double() / std  # (out,) BN's per-channel gain
        w = conv.weight.double() * g[:, None, None, None]  # (out, in, kh, kw) BN folded
        b = bn.bias.double() - bn.running_mean.double() * g
        if conv.bias is not None:
            b = b + conv.bias.double() * g
        w_scale = (w.abs().amax(dim=(1, 2, 3)) / 127).clamp_min(1e-12).float()  # (out,)
        qw = torch.round(w / w_scale.double()[:, None, None, None]).clamp(-127, 127).to(torch.int8)
        self.stride, self.padding, self.dilation, self.groups = (list(conv.stride), list(conv.padding),
                                                                  list(conv.dilation), conv.groups)
        self.register_buffer("qweight", qw, persistent=False)  # the packed form is what runs; this is for tests
        self.register_buffer("w_scale", w_scale, persistent=False)
        self.register_buffer("w_zero_point", torch.zeros(w.shape[0], dtype=torch.long), persistent=False)
        self.register_buffer("bias", b.float(), persistent=False)
        # oneDNN's blocked int8 weight layout for this machine; the activation scale passed here only selects the
        # kernel (the scale of each call is passed with its input).
        self.packed = torch.ops.onednn.qconv_prepack(qw, w_scale, 1.0, 0, self.stride, self.padding, self.dilation,
                                                     self.groups, None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("Int8ConvModule runs on the CPU")
        out_dtype = torch.bfloat16 if x.dtype == torch.bfloat16 else torch.float32
        q, scale = ops.quantize_u8(x.contiguous(memory_format=torch.channels_last))  # (B, in, H, W) uint8 NHWC
        return torch.ops.onednn.qconv2d_pointwise(
            q, float(scale), 0, self.packed, self.w_scale, self.w_zero_point, self.bias, self.stride, self.padding,
            self.dilation, self.groups, 1.0, 0, out_dtype, "relu", [], "")  # (B, out, H, W), ReLU applied


def int8_head_targets(model) -> list[str]:
    """The decode head's ConvModules whose input is a ReLU output (non-negative, as quantize_u8 needs): the FPN
    convolutions (their input, laterals summed top-down, is ≥ 0) and fpn_bottleneck (the concatenated FPN outputs).
    The PPM bottleneck reads the backbone's last stage (signed) and stays as it is."""
    head = model.decode_head
    return [f"decode_head.fpn_convs.{i}" for i in range(len(head.fpn_convs))] + ["decode_head.fpn_bottleneck"]


def use_int8_head(model) -> int:
    """Swap int8_head_targets(model) for Int8ConvModule in place (eval mode: BN's running statistics are folded);
    the number swapped. Inference only: the swapped modules have no parameters and no backward."""
    n = 0
    for name in int8_head_targets(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        cm = parent.get_submodule(child)
        if isinstance(cm, Int8ConvModule):
            continue
        new = Int8ConvModule(cm)
        if child.isdigit():
            parent[int(child)] = new
        else:
            setattr(parent, child, new)
        n += 1
    return n
