"""The train pipeline's augmentations as a picture: a grid of augmented samples, each as [image | mask overlay], with
a legend of the classes shown, drawn with viz/draw's palette, overlay and legend.

    python -m viz.preview --data-root R --json train.json --n 16 --out grid.jpg [--copy-paste] [--seed 0]

Samples come from data.loader.TrainSet, so the grid shows exactly what training draws for these seeds.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Optional, Sequence

import cv2
import numpy as np

from data.classes import IGNORE_INDEX, NUM_CLASSES
from data.io import atomic_write_bytes
from viz import draw


def preview_grid(samples: Sequence[tuple], cell: int = 256, titles: Optional[Sequence[str]] = None) -> np.ndarray:
    """(H, W, 3) RGB: the samples' (image, mask) pairs as [image | overlay] cells, each fitted into cell × cell, on a
    square-ish grid; under it draw.legend of the classes present (and 255 when some pixel is ignored)."""
    n = len(samples)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    gap = 4
    grid = np.full((rows * (cell + gap), cols * (2 * cell + gap), 3), 255, np.uint8)
    present: set = set()
    for j, (img, m) in enumerate(samples):
        if m is not None:
            present |= set(np.unique(m).tolist())
        y, x = (j // cols) * (cell + gap), (j % cols) * (2 * cell + gap)
        for k, vis in enumerate((img, img if m is None else draw.overlay(img, m))):
            s = cell / max(vis.shape[:2])
            vis = cv2.resize(vis, (max(1, round(vis.shape[1] * s)), max(1, round(vis.shape[0] * s))),
                             interpolation=cv2.INTER_AREA)
            grid[y:y + vis.shape[0], x + k * cell:x + k * cell + vis.shape[1]] = vis
        if titles:
            for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):  # white text with a dark outline
                cv2.putText(grid, titles[j][:34], (x + 5, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, thick,
                            cv2.LINE_AA)
    legend = draw.legend(sorted(c for c in present if c < NUM_CLASSES), ignore=IGNORE_INDEX in present)
    width = max(grid.shape[1], legend.shape[1])
    out = np.full((grid.shape[0] + legend.shape[0], width, 3), 255, np.uint8)
    out[:grid.shape[0], :grid.shape[1]] = grid
    out[grid.shape[0]:, :legend.shape[1]] = legend
    return out


def write_picture(path: str, rgb: np.ndarray) -> None:
    """An RGB picture to `path` (encoded by its extension, .jpg when it has none), atomically."""
    ext = os.path.splitext(path)[1].lower() or ".jpg"
    atomic_write_bytes(path, draw.encode(rgb, ".jpg" if ext == ".jpeg" else ext, quality=92))


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m viz.preview", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--json", required=True, help="COCO json (as given, else under --data-root)")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--out", default="grid.jpg")
    p.add_argument("--copy-paste", action="store_true", help="enable copy-paste with p=1 so every cell shows it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--crop-size", type=int, default=512)
    p.add_argument("--ratio-range", type=float, nargs=2, default=None)
    return p


def main(args: argparse.Namespace) -> None:
    from data.coco import CocoSegDataset
    from data.loader import TrainSet
    from data.transforms import build_transform

    ds = CocoSegDataset(args.data_root, [args.json])
    if not ds.has_labels:
        sys.exit(f"error: {args.json} has no annotations: nothing to preview")
    transform = build_transform("train", args.crop_size, ratio_range=args.ratio_range,
                                copy_paste_p=1.0 if args.copy_paste else 0.0)
    train_set = TrainSet(ds, transform, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(ds), size=min(args.n, len(ds)), replace=False)
    samples = [train_set.sample(0, int(i)) for i in idx]
    write_picture(args.out, preview_grid(samples, titles=[str(ds.image_ids[int(i)]) for i in idx]))
    print(f"wrote {args.out}: {len(samples)} samples, seed {args.seed}, copy-paste {args.copy_paste}")


if __name__ == "__main__":
    from engine.cli import cli_errors

    with cli_errors():
        main(get_args_parser().parse_args())
