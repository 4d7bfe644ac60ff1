"""The second pool of a semi-supervised batch: pseudo-labelled or unlabelled images, each as a weak view and a
strongly augmented view of the same crop.

    pool = PoolSet(CocoSegDataset(root, ["extra.json"]), build_transform("train", crop_size=512), seed=0,
                   strong=StrongAug(color=0.8, gray=0.2, blur=0.5, cutout=0.5, cutmix=0.5))
    s = pool[(epoch, index)]   # dict(image (weak), strong: uint8 (3, H, W); mask uint8 (H, W); cutmix bool (H, W))

The weak view is the labelled images' train augmentation (geometry and photometric), so the teacher sees what the
labelled images look like; the strong view adds, on the same geometry, what the teacher never sees: colour jitter,
grayscale, Gaussian blur and CutOut (the cut region is ignored in the target: 255), as ST++ / UniMatch do for their
unlabelled images (Yang et al. 2022, 2023: colour jitter p 0.8 with brightness, contrast, saturation 0.5 and hue
0.25, grayscale p 0.2, blur p 0.5 with sigma 0.1-2.0, a CutMix box p 0.5 of 2-40 % of the image, aspect 0.3-3.3).
CutMix needs a partner: each sample carries its box (``cutmix``), and the training step pastes the box from the next
sample of the same pool batch, image and target alike (``cutmix_batch``), so a sample's views stay a pure function
of (seed, epoch, index) and exact resume holds with any number of workers.

Rare-class sampling and class statistics count only the labelled pool: a pseudo-label is not a label.
"""
from __future__ import annotations

import math
import os
from typing import Optional

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from data.classes import IGNORE_INDEX, PIXEL_MEAN

# The --aug-strong-* knobs: the probability of each step (0 turns it off).
STRONG_DEFAULTS = dict(color=0.8, gray=0.2, blur=0.5, cutout=0.5, cutmix=0.5)


def random_box(rng: np.random.Generator, h: int, w: int, area=(0.02, 0.4), ratio=(0.3, 1 / 0.3)) -> tuple:
    """(y0, y1, x0, x1) of a box covering a uniform share of the image, with a log-uniform aspect ratio, placed
    uniformly inside it (clipped to the image)."""
    a = rng.uniform(*area) * h * w
    r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
    bh, bw = min(h, max(1, round(math.sqrt(a / r)))), min(w, max(1, round(math.sqrt(a * r))))
    y0, x0 = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
    return y0, y0 + bh, x0, x0 + bw


def color_jitter(img: np.ndarray, rng: np.random.Generator, brightness=0.5, contrast=0.5, saturation=0.5,
                 hue=0.25) -> np.ndarray:
    """torchvision's ColorJitter on a uint8 RGB image: the four factors drawn uniformly and applied in a random
    order (brightness and contrast blend with black / the gray mean, saturation with the grayscale image, hue
    rotates the HSV hue)."""
    out = img.astype(np.float32)
    factors = {"b": rng.uniform(1 - brightness, 1 + brightness), "c": rng.uniform(1 - contrast, 1 + contrast),
               "s": rng.uniform(1 - saturation, 1 + saturation), "h": rng.uniform(-hue, hue)}
    for step in rng.permutation(["b", "c", "s", "h"]).tolist():
        f = factors[step]
        if step == "b":
            out = out * f
        elif step == "c":
            out = (out - _gray(out).mean()) * f + _gray(out).mean()
        elif step == "s":
            g = _gray(out)[..., None]
            out = (out - g) * f + g
        elif int(round(f * 256)) % 256:  # a hue shift that rounds to 0 skips the lossy HSV round trip
            hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
            hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(f * 256))) % 256
            out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
        out = np.clip(out, 0, 255)
    return out.round().astype(np.uint8)


def _gray(img: np.ndarray) -> np.ndarray:
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114  # ITU-R 601-2, as PIL's L mode


class StrongAug:
    """The strong view of an already weakly augmented (image, mask): photometric steps on the image, CutOut on both
    (image to the pixel mean, i.e. 0 after normalisation; target 255), and the CutMix box (or None) for the
    batch step. Each step runs with its probability; 0 turns it off."""

    def __init__(self, color: float = 0.8, gray: float = 0.2, blur: float = 0.5, cutout: float = 0.5,
                 cutmix: float = 0.5):
        self.color, self.gray, self.blur, self.cutout, self.cutmix = color, gray, blur, cutout, cutmix

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        h, w = image.shape[:2]
        img = image
        if rng.random() < self.color:
            img = color_jitter(img, rng)
        if rng.random() < self.gray:
            img = np.repeat(_gray(img.astype(np.float32)).round().astype(np.uint8)[..., None], 3, axis=2)
        if rng.random() < self.blur:
            img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.1, 2.0)))
        mask = mask.copy()
        if rng.random() < self.cutout:
            y0, y1, x0, x1 = random_box(rng, h, w)
            img = img.copy()
            img[y0:y1, x0:x1] = np.asarray(PIXEL_MEAN, dtype=np.float32).round().astype(np.uint8)
            mask[y0:y1, x0:x1] = IGNORE_INDEX
        box = random_box(rng, h, w) if rng.random() < self.cutmix else None
        return img, mask, box


class PoolSet(Dataset):
    """``base[index]`` as a weak view (``transform``, the labelled images' preset) and a strong view of the same
    crop (``strong``), both drawn from ``default_rng([seed, epoch, index])``. An image without labels (an
    unlabelled pool, whose targets the teacher makes) gets an all-0 mask, so that after the geometry its mask is
    255 exactly where the teacher's labels must be ignored (padding, CutOut) and 0 elsewhere. Keys as TrainSet's:
    ``(epoch, index)`` or an int."""

    def __init__(self, base, transform, seed: int, strong: Optional[StrongAug]):
        self.base, self.transform, self.seed = base, transform, int(seed)
        self.strong = strong or StrongAug(0, 0, 0, 0, 0)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key) -> dict:
        epoch, index = (0, key) if isinstance(key, (int, np.integer)) else key
        rng = np.random.default_rng([self.seed, int(epoch), int(index)])
        s = self.base[int(index)]
        mask = s["mask"]
        if mask is None:
            mask = np.zeros(s["image"].shape[:2], dtype=np.uint8)
        weak, mask = self.transform(s["image"], mask, rng)
        strong, target, box = self.strong(weak, mask, rng)
        cut = np.zeros(weak.shape[:2], dtype=bool)
        if box is not None:
            cut[box[0]:box[1], box[2]:box[3]] = True
        return dict(image=torch.from_numpy(np.ascontiguousarray(weak)).permute(2, 0, 1),
                    strong=torch.from_numpy(np.ascontiguousarray(strong)).permute(2, 0, 1),
                    mask=torch.from_numpy(np.ascontiguousarray(target)), cutmix=torch.from_numpy(cut))


def cutmix_batch(boxes: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Paste each sample's CutMix box from the next sample of the batch (the last from the first) into every tensor:
    boxes (B, H, W) bool; tensors (B, H, W) or (B, C, H, W), e.g. images and their targets. A batch of one keeps its
    sample."""
    if boxes.shape[0] < 2:
        return tensors
    nxt = torch.roll(torch.arange(boxes.shape[0], device=boxes.device), -1)
    out = []
    for t in tensors:
        box = boxes.to(t.device)
        out.append(torch.where(box[:, None] if t.dim() == 4 else box, t[nxt.to(t.device)], t))
    return tuple(out)


IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def pool_images(items: list[str], data_root: str) -> list[dict]:
    """COCO image records for an unlabelled pool from COCO files (relative to data_root unless they exist as given;
    their images as listed) and folders of photos (every image file below them, sorted; file_name relative to
    data_root when inside it, absolute otherwise). A file listed twice is kept once; anything else is an error
    naming it (ValueError)."""
    from data.coco import load_coco_json
    from data.io import probe_size, resolve_json
    root = os.path.abspath(data_root)
    records, seen = [], set()

    def add(file_name: str, w: int, h: int) -> None:
        key = os.path.normpath(os.path.join(root, file_name))
        if key not in seen:
            seen.add(key)
            records.append({"id": len(records) + 1, "file_name": file_name, "width": int(w), "height": int(h)})
    for item in items:
        path = resolve_json(item, data_root)  # a COCO file or a folder: as given, else under the data root
        if os.path.isdir(path):
            found = sorted(os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs
                           if f.lower().endswith(IMAGE_EXTS))
            if not found:
                raise ValueError(f"{path}: no image files ({', '.join(IMAGE_EXTS)}) in this folder")
            for f in found:
                full = os.path.abspath(f)
                size = probe_size(full)
                if size is None:
                    img = cv2.imread(full, cv2.IMREAD_UNCHANGED)
                    if img is None:
                        raise ValueError(f"{full}: not a readable image")
                    size = (img.shape[1], img.shape[0])
                inside = os.path.commonpath([root, full]) == root
                add(os.path.relpath(full, root) if inside else full, *size)
        elif os.path.isfile(path):
            for rec in load_coco_json(path).get("images", []):
                add(rec["file_name"], rec.get("width", 0), rec.get("height", 0))
        else:
            raise ValueError(f"{path}: no such COCO file or folder")
    return records


def screen_pool(records: list[dict], data_root: str, val_json: list[str], labelled_json: list[str]) -> list[dict]:
    """The pool without the images that labelled_json's files already label (they train with their real labels),
    renumbered; ValueError when any image is also in val_json's files: a teacher labelling the very images the run
    is scored on makes the comparison with the control meaningless. Images are compared by their resolved path (as
    CocoSegDataset.image_paths and train.py's own check compare them), so a folder of links to validation images is
    refused too; a listed file that does not exist is skipped (a data root without val.json has nothing to refuse)."""
    from data.coco import load_coco_json
    from data.io import resolve_json
    root = os.path.abspath(data_root)

    def where(file_name: str) -> str:
        return os.path.realpath(os.path.join(root, file_name))

    def listed(files: list[str]) -> dict[str, str]:  # resolved image path -> the COCO file listing it
        out = {}
        for f in files:
            path = resolve_json(f, data_root)
            if os.path.isfile(path):
                out.update((where(rec["file_name"]), path) for rec in load_coco_json(path).get("images", []))
        return out
    keys = [where(r["file_name"]) for r in records]
    val = listed(val_json)
    both = [(r["file_name"], val[k]) for r, k in zip(records, keys) if k in val]
    if both:
        raise ValueError(f"{both[0][1]}: {len(both)} image(s) of the pool are also validation images, e.g. "
                         f"{both[0][0]}; leave them out of the pool")
    labelled = listed(labelled_json)
    kept = [dict(r) for r, k in zip(records, keys) if k not in labelled]
    if not kept:
        raise ValueError(f"every one of the pool's {len(records)} images is already labelled "
                         f"({', '.join(labelled_json)}): nothing left to pseudo-label")
    for i, r in enumerate(kept):
        r["id"] = i + 1
    return kept


def main(argv: list[str] | None = None) -> int:
    """python -m data.semi pool ITEM... --data-root D --out FILE: one COCO image list for --unlabelled-json from COCO
    files and folders of photos (make semi's UNLABELLED)."""
    import argparse
    import json
    import sys
    from data.io import atomic_write_text
    p = argparse.ArgumentParser("python -m data.semi")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("pool", help="an unlabelled image list from COCO files and folders of images")
    s.add_argument("items", nargs="+")
    s.add_argument("--data-root", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--val-json", nargs="*", default=[],
                   help="refuse a pool holding any of these files' images (the run is scored on them)")
    s.add_argument("--labelled-json", nargs="*", default=[],
                   help="leave out (counted) the pool's images that these files already label")
    a = p.parse_args(argv)
    try:
        images = pool_images(a.items, a.data_root)
        n = len(images)
        images = screen_pool(images, a.data_root, a.val_json, a.labelled_json)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    atomic_write_text(a.out, json.dumps({"images": images, "categories": []}) + "\n")
    left = f" ({n - len(images)} already labelled in {', '.join(a.labelled_json)} left out)" if n > len(images) else ""
    print(f"{a.out}: {len(images)} unlabelled images from {len(a.items)} source(s){left}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
