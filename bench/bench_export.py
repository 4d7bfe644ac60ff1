"""The deployable artifact (models.export: AOTInductor package) against eager fp32 inference as infer.py runs it.

    OMP_NUM_THREADS=1 python bench/bench_export.py                          # demo model and ConvNeXt-T, 512², batch 1
    OMP_NUM_THREADS=1 python bench/bench_export.py --models upernet_convnext_demo --iters 5
    OMP_NUM_THREADS=1 python bench/bench_export.py --int8                   # + the int8 package (needs torchao)

Per model (random weights, seed 0): compiles the package once (cached under .cache/bench_export/, keyed by model,
ISA and torch version; --rebuild recompiles), then times, interleaved, one (512, 512, 3) uint8 image through
  - the artifact: uint8 image in, uint8 class map out (normalisation, padding, argmax inside);
  - infer.py's eager path: tta_accumulate (one view, no flip, fp32) and its fused argmax, with Winograd 3×3
    convolutions (infer.py's default on an fp32 CPU) and without them (--winograd off: the same arithmetic as the
    artifact, so the class maps are compared);
and prints the medians, eager / artifact ratios, and the artifact's agreement with the eager class map. With --int8
also the int8 package (models.export --int8, calibrated on 8 random images: its speed is what this measures; its
accuracy is measured on demo val with a trained model, README "int8").
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import models  # noqa: E402
from bench_models import time_interleaved  # noqa: E402
from engine.predict import tta_accumulate  # noqa: E402
from models import winograd  # noqa: E402
from models.export import write_aoti  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def package_for(name: str, isa: str, rebuild: bool, int8: bool = False) -> str:
    path = os.path.join(ROOT, ".cache", "bench_export", f"{name}_{isa}{'_int8' if int8 else ''}_torch{torch.__version__}.pt2")
    if rebuild or not os.path.exists(path):
        torch.manual_seed(0)
        t = time.time()
        g = torch.Generator().manual_seed(2)
        calib = [torch.randint(0, 256, (256, 256, 3), dtype=torch.uint8, generator=g) for _ in range(8)] if int8 else None
        write_aoti(models.build_model(name).eval(), path, isa=isa, log=lambda s: print(f"# {name}: {s}"), calib=calib)
        print(f"# {name}: package built in {time.time() - t:.0f} s", flush=True)
    return path


def bench_one(name: str, args: argparse.Namespace) -> dict:
    path = package_for(name, args.isa, args.rebuild)
    runner = torch._inductor.aoti_load_package(path)
    runner8 = torch._inductor.aoti_load_package(package_for(name, args.isa, args.rebuild, True)) if args.int8 else None
    torch.manual_seed(0)
    eager = models.build_model(name).eval()  # the same weights the package was built from (seed 0)
    wino = copy.deepcopy(eager)
    winograd.use_winograd(wino)
    g = torch.Generator().manual_seed(1)
    img = torch.randint(0, 256, (args.size, args.size, 3), dtype=torch.uint8, generator=g)  # (H, W, 3)
    batch = img.permute(2, 0, 1).unsqueeze(0).contiguous()  # (1, 3, H, W): what infer.py's loader gives

    def infer_path(model):
        return tta_accumulate([model], batch, [None], False, "none").argmax()[0][0]  # (H, W)

    with torch.no_grad():
        lab_art, lab_eager = runner(img), infer_path(eager)
        agree = (lab_art.long() == lab_eager.long()).float().mean().item()
        arms = {"artifact": lambda: runner(img), "eager fp32": lambda: infer_path(eager),
                "eager fp32 + Winograd": lambda: infer_path(wino)}
        if runner8 is not None:
            arms["artifact int8"] = lambda: runner8(img)
        t = time_interleaved(arms, args.iters, args.warmup)
    meta = runner.get_metadata()
    for k, v in t.items():
        print(f"{name:24s} {k:24s} {v:8.3f} s/image", flush=True)
    print(f"{name:24s} eager / artifact: {t['eager fp32'] / t['artifact']:.2f}x (without Winograd), "
          f"{t['eager fp32 + Winograd'] / t['artifact']:.2f}x (infer.py's default); "
          f"class map agreement {agree:.4f}; package ISA {meta.get('trashseg_isa')}", flush=True)
    if runner8 is not None:
        print(f"{name:24s} int8 artifact: {t['eager fp32'] / t['artifact int8']:.2f}x eager fp32, "
              f"{t['eager fp32 + Winograd'] / t['artifact int8']:.2f}x infer.py's default, "
              f"{t['artifact'] / t['artifact int8']:.2f}x the fp32 artifact", flush=True)
    return t


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("bench_export", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["upernet_convnext_demo", "upernet_convnext_tiny"])
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--isa", default="auto", help="models.export --isa for the packages")
    p.add_argument("--rebuild", action="store_true", help="recompile the cached packages")
    p.add_argument("--int8", action="store_true", help="also time the int8 package (models.export --int8)")
    return p


def main(args: argparse.Namespace) -> int:
    print(f"# {cpu_model()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}; {args.size}x{args.size}, "
          f"batch 1, fp32; medians of {args.iters} interleaved runs")
    for name in args.models:
        bench_one(name, args)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
