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
