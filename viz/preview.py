"""The train pipeline's augmentations as pictures, drawn with viz/draw's palette, overlay and legend: a grid of
augmented samples, each as [image | mask overlay], with a legend of the classes shown, and the report's
augmentation section.

    python -m viz.preview --data-root R --json train.json --n 16 --out grid.jpg [--copy-paste] [--seed 0]

The grid's samples come from data.loader.TrainSet, so it shows exactly what training draws for these seeds.
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
from data.coco import CocoSegDataset
from data.io import atomic_write_bytes
from data.loader import TrainSet
from data.transforms import DatasetSource, build_transform
from viz import draw
from viz.report import Ctx, class_chips, photo_panel
from viz.site import Item, esc, gallery, legend_html


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


def aug_section(ctx: Ctx, ds, n: int, crop_size: int) -> tuple[str, str, str]:
    """The report's augmentation section: n labelled images as they are, through the train preset, and through it
    with copy-paste (p=1)."""
    labelled = [i for i in range(len(ds)) if ds.is_labelled(i)]
    if not labelled:
        return "aug", "Augmentation preview", '<p class="note">The JSON has no labels to augment.</p>'
    plain = build_transform("train", crop_size)
    cp = build_transform("train", crop_size, copy_paste_source=DatasetSource(ds), copy_paste_p=1.0)
    rng = np.random.default_rng(ctx.seed)
    idx = sorted(rng.choice(labelled, size=min(n, len(labelled)), replace=False).tolist())
    items = []
    for k, i in enumerate(idx):
        image, mask, image_id = ds.load_image(i), ds.load_mask(i), ds.image_ids[i]
        a_img, a_mask = plain(image, mask, np.random.default_rng([ctx.seed, i, 0]))
        c_img, c_mask = cp(image, mask, np.random.default_rng([ctx.seed, i, 1]))
        panels = [photo_panel(ctx, "aug", k, image_id, image, mask, "original", "_o"),
                  photo_panel(ctx, "aug", k, image_id, a_img, a_mask, "train preset", "_a"),
                  photo_panel(ctx, "aug", k, image_id, c_img, c_mask, "train + copy-paste", "_c")]
        cls = sorted({int(c) for m in (mask, a_mask, c_mask) for c in np.unique(m) if 0 < c < NUM_CLASSES})
        items.append(Item(panels, f"<b>{esc(image_id)}</b><br>{class_chips(cls)}", cls,
                          {"objects": len(ds.annotations(i))}))
    return "aug", "Augmentation preview", (
        f'<p class="note">{len(items)} samples through the train preset at crop {crop_size} (seed {ctx.seed}), '
        f'without and with copy-paste (p=1, so every sample shows it). White = 255 (padding, blended '
        f'copy-paste borders).</p><details><summary>pipelines</summary><pre class="note">{esc(repr(plain))}\n\n'
        f'{esc(repr(cp))}</pre></details>' + legend_html() +
        gallery("aug", items, [("objects", "most objects first", -1)]))


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
