"""What the report's sections share: the context they write through (Ctx), the inputs checked before any slow work,
a run folder read, the class-balanced sample of a gallery, picture panels and per-class IoU bars.

The sections, one module each, build (anchor, heading, HTML) and write their pictures through ctx.site:
viz/data_section.py, viz/run_section.py, viz/submission_section.py, viz/pseudo_section.py and the augmentation
preview's section in viz/preview.py; visualize.py strings them into one page.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from data.classes import CLASSES, NUM_CLASSES
from data.io import resolve_json
from data.rcs import rare_first
from viz import ReportError, draw
from viz.site import IMG_DIR, Panel, SiteWriter, class_label, figure, safe_name

CLASS_COLORS = [tuple(int(v) for v in draw.LUT[c]) for c in range(NUM_CLASSES)]
SERIES = [(30, 110, 220), (220, 90, 30), (40, 160, 60), (150, 50, 170), (120, 120, 120), (200, 40, 90)]


@dataclass
class Ctx:
    site: SiteWriter
    data_root: str
    thumb: int = 512          # longest side of the pictures written (the page shows them smaller; click enlarges)
    max_images: int = 200     # per gallery, and per evaluated run
    seed: int = 0
    log: Callable[[str], None] = print


# ------------------------------------------------------------------------------------------------ inputs
def find_json(path: str, data_root: str, what: str = "--json") -> str:
    """data.io.resolve_json's file, else the same file name under the data root: a run made on another machine
    records absolute paths in its args.json."""
    for p in (resolve_json(path, data_root), os.path.join(data_root, os.path.basename(path))):
        if os.path.isfile(p):
            return p
    raise ReportError(f"{path}: no such file ({what}; also looked under {data_root})")


def check_inputs(data_root: str, jsons: Sequence[str], runs: Sequence[str], csv: str | None,
                 pseudo: str | None) -> list[str]:
    """Fail fast, before any slow work, on inputs that are not there. Returns the resolved JSON paths."""
    if not os.path.isdir(data_root):
        raise ReportError(f"{data_root}: no such data root (--data-root)")
    out = [find_json(j, data_root) for j in jsons]
    for r in runs:
        read_run(r)
    if csv and not os.path.isfile(csv):
        raise ReportError(f"{csv}: no such file (--csv)")
    if pseudo and not os.path.isfile(os.path.join(pseudo, "pseudo.json")):
        raise ReportError(f"{os.path.join(pseudo, 'pseudo.json')}: no such file (--pseudo must be a "
                          "pseudo_label.py output folder)")
    return out


def read_run(run_dir: str) -> dict:
    if not os.path.isdir(run_dir):
        raise ReportError(f"{run_dir}: no such run directory (--run)")
    mpath = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(mpath):
        raise ReportError(f"{mpath}: no such file (is {run_dir} a training run directory?)")
    recs = []
    with open(mpath) as f:
        for ln, line in enumerate(f, 1):
            if line.strip():
                try:
                    recs.append(json.loads(line))
                except ValueError as e:
                    raise ReportError(f"{mpath}:{ln}: not JSON ({e})") from None
    args = {}
    apath = os.path.join(run_dir, "args.json")
    if os.path.isfile(apath):
        try:
            with open(apath) as f:
                args = json.load(f)
        except ValueError as e:
            raise ReportError(f"{apath}: not JSON ({e})") from None
    ckpt = next((os.path.join(run_dir, n) for n in ("best.pt", "last.pt")
                 if os.path.isfile(os.path.join(run_dir, n))), None)
    train = [r for r in recs if "loss" in r]
    val = [r for r in recs if "miou" in r]
    best = max(val, key=lambda r: r["miou"] if r["miou"] is not None else -1) if val else None
    return {"dir": run_dir, "name": os.path.normpath(run_dir), "args": args, "train": train,
            "val": val, "best": best, "ckpt": ckpt}


# ------------------------------------------------------------------------------------------------ pictures
def pick(classes: Sequence[Sequence[int]], n: int, seed: int) -> list[int]:
    """Up to n indices, class-balanced: rarest class first, each object class gets up to n / 20 images that hold it,
    the rest drawn at random; returned in data-set order. With n ≥ len(classes), everything."""
    total = len(classes)
    if n >= total:
        return list(range(total))
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    chosen: set[int] = set()
    per_class = max(1, n // (2 * (NUM_CLASSES - 1)))
    holders = {c: [int(i) for i in order if c in classes[i]] for c in range(1, NUM_CLASSES)}
    for c in sorted(holders, key=lambda c: len(holders[c])):
        for i in holders[c][:per_class]:
            if len(chosen) < n:
                chosen.add(i)
    for i in order:
        if len(chosen) >= n:
            break
        chosen.add(int(i))
    return sorted(chosen)


def photo_panel(ctx: Ctx, sub: str, k: int, image_id: str, image: np.ndarray, mask: np.ndarray | None,
                label: str = "", suffix: str = "") -> Panel:
    """Write a photo (JPEG) and, when given, its label layer (RGBA PNG of the same size); return the Panel."""
    stem = f"{IMG_DIR}/{sub}/{k:04d}_{safe_name(image_id)}{suffix}"
    img = draw.fit(image, ctx.thumb)
    base = ctx.site.image(stem + ".jpg", img)
    layer = None
    if mask is not None:
        m = draw.fit(mask, ctx.thumb, label=True)
        if m.shape != img.shape[:2]:
            raise ValueError(f"{image_id}: mask {mask.shape} does not match image {image.shape[:2]}")
        layer = ctx.site.image(stem + "_m.png", draw.mask_rgba(m))
    return Panel(base, img.shape[1], img.shape[0], layer, label)


def picture_panel(ctx: Ctx, sub: str, k: int, image_id: str, pic: np.ndarray, label: str, suffix: str) -> Panel:
    """A finished picture (e.g. an error map) as a PNG panel without a layer."""
    stem = f"{IMG_DIR}/{sub}/{k:04d}_{safe_name(image_id)}{suffix}"
    pic = draw.fit(pic, ctx.thumb, label=True)
    return Panel(ctx.site.image(stem + ".png", pic), pic.shape[1], pic.shape[0], None, label)


def class_chips(ids: Sequence[int]) -> str:
    return "".join(f'<span class="cl">{class_label(c)}</span>' for c in ids if 0 < c < NUM_CLASSES)


def pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _iou_bars(ctx: Ctx, path: str, iou: Sequence[float | None], title: str,
              gt_pixels: Sequence[float] | None = None) -> str:
    """Per-class IoU bars; with the ground truth's pixel counts, rarest class first (the classes that decide mIoU)."""
    order = rare_first(iou, gt_pixels) if gt_pixels is not None else list(range(len(iou)))
    if gt_pixels is not None:
        total = float(sum(gt_pixels)) or 1.0
        names = [f"{CLASSES[c]} ({100 * float(gt_pixels[c]) / total:.2f}%)" for c in order]
        title += ", rarest class first (share of pixels)"
    else:
        names = [CLASSES[c] for c in order]
    chart = draw.bar_chart(names, [None if iou[c] is None else float(iou[c]) for c in order],
                           [CLASS_COLORS[c] for c in order], title, max_value=1.0)
    return figure(ctx.site.image(path, chart), title)
