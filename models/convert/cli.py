"""The command line: python -m models.convert SRC DST --model NAME | SRC --inspect (models/convert/__init__.py)."""
from __future__ import annotations

import argparse
import sys

import torch

from data.classes import NUM_CLASSES
from engine.checkpoint import atomic_save

from .. import MODELS, build_model
from ..registry import BACKBONES
from .common import ConversionError
from .read import read_checkpoint
from .source import LAYOUTS, Source, dropped_summary, parse
from .target import fit

DESCRIPTION = ("Convert published checkpoints into this toolkit's layout (mmseg names), strictly, checked against the "
               "target model.")


def inspect(source: Source, info: dict | None = None) -> str:
    """What --inspect prints: layout, family, size, window, class count, and what a conversion drops and fills."""
    a = source.arch()
    matches = source.registry_matches()
    size = ", ".join(matches) if matches else "no registry model has these widths/depths"
    shape = ", ".join(f"{label} {a[k]}" for label, k in BACKBONES[source.family].size)
    window = str(a["window_size"]) if "window_size" in a else "-"
    c = source.num_classes
    aux = any(k.startswith("auxiliary_head.") for k in source.state)
    kind = f"segmentation checkpoint (decode head, {'auxiliary head' if aux else 'no auxiliary head'})" \
        if source.segmentation else "ImageNet backbone"
    lines = [f"layout:   {source.layout}" + (f" (container: {info['container']})" if info else ""),
             f"family:   {source.family} ({shape})",
             f"size:     {size}",
             f"window:   {window}",
             f"classes:  {c if c is not None else 'unknown (no classifier)'}"
             + ("" if source.segmentation or c is None else " (ImageNet head, dropped)"),
             f"kind:     {kind}",
             f"tensors:  {len(source.state)} kept under our names"]
    lines += source.notes
    lines.append(dropped_summary(source.dropped) if source.dropped else "dropped nothing")
    if not source.segmentation:
        lines.append("a conversion initialises decode_head and auxiliary_head, and any output norm (norm0..3) the "
                     "source lacks at LayerNorm's initialisation (weight 1, bias 0)")
    return "\n".join(lines)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("python -m models.convert", description=DESCRIPTION)
    p.add_argument("src", help="checkpoint file, or an HF model directory")
    p.add_argument("dst", nargs="?", help="output torch file (not with --inspect)")
    p.add_argument("--model", help="registry name, e.g. upernet_convnext_tiny (required unless --inspect)")
    p.add_argument("--from", dest="src_layout", default="auto", choices=LAYOUTS)
    p.add_argument("--num-classes", type=int, default=None,
                   help=f"default: the source's class count, or {NUM_CLASSES} for a backbone-only source")
    p.add_argument("--inspect", action="store_true",
                   help="print the source's layout, family, size, window, classes and what a conversion drops; "
                        "write nothing (with --model: also check that it fits)")
    return p


def main(args: argparse.Namespace) -> int:
    if not args.inspect and (args.dst is None or args.model is None):
        print("error: SRC DST --model NAME are required (or SRC --inspect)", file=sys.stderr)
        return 2
    if args.inspect and args.dst is not None:
        print("error: --inspect writes nothing: drop DST", file=sys.stderr)
        return 2
    if args.model is not None and args.model not in MODELS:
        print(f"error: unknown model {args.model!r}; choose from {', '.join(MODELS)}", file=sys.stderr)
        return 2
    try:
        sd, info = read_checkpoint(args.src)
        source = parse(sd, args.src_layout)
        if args.inspect:
            print(inspect(source, info))
            if args.model is None:
                return 0
        c = args.num_classes or (source.num_classes if source.segmentation else None) or NUM_CLASSES
        torch.manual_seed(0)
        model = build_model(args.model, c)
        out, notes = fit(source, model)
        model.load_state_dict(out, strict=True)  # the promise: build_model(NAME, C) loads it strictly
    except ConversionError as e:
        print(f"error: {args.src}: {e}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError, ValueError) as e:
        print(f"error: {args.src}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for n in notes[:1] + ([] if args.inspect else [dropped_summary(source.dropped)] if source.dropped else []) \
            + notes[1:]:
        print(f"note: {n}")
    if args.inspect:
        print(f"fits {args.model} with {c} classes (nothing written)")
        return 0
    atomic_save({"model": out, "model_name": args.model, "num_classes": c}, args.dst)
    print(f"wrote {args.dst}: {args.model}, {c} classes, {len(out)} tensors")
    return 0

