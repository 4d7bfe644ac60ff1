"""Print a registry model's parameter count and FLOPs (torch.utils.flop_counter) at 512×512.

    python -m models upernet_convnext_tiny [--size 512] [--num-classes 11]
    python -m models --list

The model is built on the 'meta' device, so even ConvNeXt-XL costs no memory or time. FLOPs count a multiply-add as
two; mmseg/fvcore tables quote multiply-adds ("GFLOPs" there ≈ GMACs here / 1).
"""
from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from . import MODELS, build_model


def count(name: str, size: int = 512, num_classes: int = 11) -> tuple[int, int]:
    """(parameters, forward FLOPs for one size×size image in eval mode)."""
    with torch.device("meta"):
        model = build_model(name, num_classes).eval()
        x = torch.empty(1, 3, size, size)
    params = sum(p.numel() for p in model.parameters())
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return params, fc.get_total_flops()


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m models", description="parameters and FLOPs of registry models")
    p.add_argument("names", nargs="*", help="registry names (default: all)")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--num-classes", type=int, default=11)
    p.add_argument("--list", action="store_true", help="only list the registry names")
    return p


def main(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(MODELS))
        return 0
    names = args.names or list(MODELS)
    bad = [n for n in names if n not in MODELS]
    if bad:
        print(f"error: unknown model(s) {bad}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    print(f"{'model':28s} {'params (M)':>11s} {f'GFLOPs @{args.size}':>13s} {'GMACs':>8s}")
    for n in names:
        params, flops = count(n, args.size, args.num_classes)
        print(f"{n:28s} {params / 1e6:11.2f} {flops / 1e9:13.1f} {flops / 2e9:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
