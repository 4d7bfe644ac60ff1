"""A small synthetic stand-in for the recycling-trash data, in the competition's layout (SPEC §1).

    python -m data.demo --out demo_data                      # defaults: --train 240 --val 40 --test 40 --extra 120
    python -m data.demo --out DIR --train N --val N --test N --extra N --size 256 --seed 0
    python -m data.demo --out demo_imbalanced --imbalance   # the competition's class proportions, 480 train images

Writes DIR/{train,val,test,train_all,extra}.json and JPEG images (quality 90) under DIR/batch_01_vt/,
DIR/batch_02_vt/ (train and val) and DIR/batch_03/ (test and extra); file_name is e.g. `batch_01_vt/0001.jpg`.
test.json and extra.json have no `annotations` key (unlabelled); train_all = train + val.

It is built to exercise what the real data exercises, and to be learnable by a small model in minutes:
- every one of the 10 object classes, each a *shape family + texture* with two or three colours that each overlap
  another class's (so colour alone does not separate them); textures are coarser than the 4-pixel patchify stem of
  ConvNeXt/Swin, which would alias finer ones: General trash = jagged blob, mottled camouflage; Paper = sheet
  with lines of "text"; Paper pack = gabled carton, bold bands and a dark rim; Metal = disc/ellipse with concentric
  rings and a highlight; Glass = bottle, smooth and translucent with a highlight stripe; Plastic = capsule with dense
  ridges; Styrofoam = rounded slab of beads; Plastic bag = large wavy translucent sheet with folds; Battery = small
  cylinder with a contrasting band and a metal cap; Clothing = T-shirt shape with a plaid weave;
- objects from a few pixels (paper scraps) to about half the image (clothing, bags), placed to overlap; the image
  is drawn largest-first, exactly the SPEC painting order, so the label map painted from the JSON matches the pixels;
- a textured floor with tiles, stains and scratches, then lighting gradients, a colour cast, noise and sometimes blur;
- the real imbalance's ordering (Paper and Plastic bag most common; Battery and Clothing rare), flattened so the
  rare classes are learnable in a CPU demo (default sizes: Paper 314 annotations in train_all, Plastic bag 309,
  Battery 95, Clothing 93; Battery 0.8% of pixels, background ~65%); Battery and Clothing are forced into ≥ 3 images of train and
  val;
- COCO details that catch bugs: image ids that are not 0..N-1, category ids that are not 1..10 and are listed in a
  shuffled order with varied capitalisation (names are the contract), annotations in file order (not area order),
  mostly polygons plus some multi-polygons, compressed RLE and iscrowd uncompressed RLE; `area` is the pixel count
  and `bbox` the tight pixel box.

Deterministic for a seed (same bytes on the same OpenCV build): each image draws from its own
`default_rng([seed, split, index])`. Default size: ~4 s of CPU (6.8 s wall on a busy 2-core machine).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from data.classes import CLASSES
from data.io import atomic_write_bytes, atomic_write_json

# Classes by id (data/classes.py).
GT, PAPER, PACK, METAL, GLASS, PLASTIC, STYRO, BAG, BATTERY, CLOTHING = range(1, 11)

# Relative frequency of a randomly drawn object's class: the real ordering (SPEC §1 table) flattened so rare classes
# are learnable from ~240 images in a few CPU minutes (real: Paper 9311 … Battery 63).
CLASS_WEIGHTS = {GT: 10.0, PAPER: 18.0, PACK: 7.0, METAL: 8.0, GLASS: 8.0, PLASTIC: 11.0, STYRO: 8.0, BAG: 16.0,
                 BATTERY: 4.0, CLOTHING: 4.0}
# --imbalance: the competition's own proportions, its annotation counts in train_all (SPEC §1 table), so Battery is
# drawn 63 times for Paper's 9311 (about 8 Battery objects in 480 images) and the rare classes decide the mIoU.
COMPETITION_ANNOTATIONS = {GT: 2782, PAPER: 9311, PACK: 659, METAL: 562, GLASS: 610, PLASTIC: 3090, STYRO: 1343,
                           BAG: 7643, BATTERY: 63, CLOTHING: 177}
IMBALANCED_SIZES = dict(train=480, val=80, test=40, extra=120)  # several hundred images: the rare ones exist

# Shared colour pool (RGB); each class draws from a subset that overlaps several other classes' subsets.
POOL = {
    "white": (236, 236, 230), "cream": (228, 216, 184), "lgrey": (188, 190, 192), "grey": (128, 128, 134),
    "dark": (48, 48, 54), "brown": (140, 96, 56), "green": (62, 132, 72), "blue": (58, 98, 182),
    "red": (182, 52, 46), "yellow": (222, 190, 62), "lblue": (168, 200, 230), "orange": (222, 132, 52),
}
COLOURS = {
    GT: ("grey", "brown", "orange"),
    PAPER: ("white", "cream", "lblue"),
    PACK: ("red", "blue", "cream"),
    METAL: ("lgrey", "grey", "yellow"),
    GLASS: ("green", "brown", "lblue"),
    PLASTIC: ("blue", "red", "orange"),
    STYRO: ("white", "cream"),
    BAG: ("dark", "yellow", "lgrey"),
    BATTERY: ("dark", "orange", "red"),
    CLOTHING: ("blue", "green", "brown"),
}
# Size of the object's long side in pixels at 256 px (log-uniform), and the chance of a tiny scrap instead.
SIZES = {GT: (36, 120), PAPER: (40, 170), PACK: (56, 130), METAL: (50, 110), GLASS: (80, 160), PLASTIC: (60, 150),
         STYRO: (56, 140), BAG: (80, 200), BATTERY: (56, 90), CLOTHING: (120, 200)}
TINY = {GT: 0.06, PAPER: 0.06}
FOLDERS = ("batch_01_vt", "batch_02_vt", "batch_03")


# --------------------------------------------------------------------------------------------------- shapes
# Local outlines, in units of the object's long side L, centred at 0, long axis along x.

def _ellipse(a: float, b: float, n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([a * np.cos(t), b * np.sin(t)], 1)


def _blob(rng: np.random.Generator, n: int, rough: float, smooth_terms: int = 0) -> np.ndarray:
    t = np.sort(rng.uniform(0, 2 * np.pi, n))
    r = np.ones(n)
    if smooth_terms:  # low-order Fourier wobble: a bag's soft outline
        for k in range(2, 2 + smooth_terms):
            r += rng.uniform(0, rough / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    else:  # independent jitter per vertex: a crumpled, jagged outline
        r += rng.uniform(-rough, rough, n)
    r = np.clip(r, 0.35, None) * 0.5
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


def _shape(rng: np.random.Generator, cls: int) -> list[np.ndarray]:
    """One or more local polygons (an annotation's multi-polygon) for a class."""
    if cls == GT:
        return [_blob(rng, int(rng.integers(9, 15)), 0.45) * [1.0, rng.uniform(0.6, 1.0)]]
    if cls == PAPER:
        asp = rng.uniform(0.55, 0.85)
        quad = np.array([[-0.5, -asp / 2], [0.5, -asp / 2], [0.5, asp / 2], [-0.5, asp / 2]])
        quad = quad + rng.uniform(-0.05, 0.05, quad.shape)
        if rng.random() < 0.15:  # torn in two: one annotation, two polygons
            cut = rng.uniform(-0.15, 0.15)
            left = np.array([[-0.5, -asp / 2], [cut - 0.04, -asp / 2], [cut - 0.07, asp / 2], [-0.5, asp / 2]])
            right = np.array([[cut + 0.04, -asp / 2], [0.5, -asp / 2], [0.5, asp / 2], [cut + 0.01, asp / 2]])
            return [left, right]
        return [quad]
    if cls == PACK:
        w = rng.uniform(0.45, 0.65) / 2
        return [np.array([[-0.5, -w], [0.3, -w], [0.5, 0.0], [0.3, w], [-0.5, w]])]  # carton with a gable end
    if cls == METAL:
        return [_ellipse(0.5, 0.5 * rng.uniform(0.6, 1.0))]
    if cls == GLASS:
        b, n = rng.uniform(0.14, 0.2), rng.uniform(0.05, 0.075)  # body and neck half-widths
        return [np.array([[-0.5, -b], [0.1, -b], [0.25, -n], [0.5, -n], [0.5, n], [0.25, n], [0.1, b], [-0.5, b]])]
    if cls == PLASTIC:
        b = rng.uniform(0.18, 0.3)
        t = np.linspace(-np.pi / 2, np.pi / 2, 8)
        right = np.stack([0.5 - b + b * np.cos(t), b * np.sin(t)], 1)
        return [np.concatenate([right, -right])]  # capsule
    if cls == STYRO:
        asp = rng.uniform(0.55, 0.9)
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        c, s = np.cos(t), np.sin(t)
        # superellipse: a slab with rounded corners
        return [np.stack([0.5 * np.sign(c) * np.abs(c) ** 0.4, 0.5 * asp * np.sign(s) * np.abs(s) ** 0.4], 1)]
    if cls == BAG:
        return [_blob(rng, 40, 0.7, smooth_terms=4) * [1.0, rng.uniform(0.6, 0.95)]]
    if cls == BATTERY:  # cylinder: rounded end on the right, a narrower terminal nub on the left
        b = rng.uniform(0.15, 0.19)
        t = np.linspace(-np.pi / 2, np.pi / 2, 7)
        arc = np.stack([0.5 - b + b * np.cos(t), b * np.sin(t)], 1)
        nub = np.array([[-0.43, b], [-0.43, 0.5 * b], [-0.5, 0.5 * b], [-0.5, -0.5 * b], [-0.43, -0.5 * b]])
        return [np.concatenate([[[-0.43, -b]], arc, nub])]
    if cls == CLOTHING:  # T-shirt seen from above: body, sleeves, neck notch
        s = rng.uniform(0.85, 1.0)
        pts = np.array([[-0.5, -0.3], [0.15, -0.3], [0.15, -0.5], [0.45, -0.38], [0.45, -0.12], [0.5, 0.0],
                        [0.45, 0.12], [0.45, 0.38], [0.15, 0.5], [0.15, 0.3], [-0.5, 0.3]])
        return [pts * [1.0, s] + rng.uniform(-0.02, 0.02, pts.shape)]
    raise ValueError(cls)


# ------------------------------------------------------------------------------------------------- textures

def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth noise in [0, 1] with blobs about `cell` pixels wide."""
    gh, gw = int(h / cell) + 3, int(w / cell) + 3
    g = rng.random((gh, gw)).astype(np.float32)
    big = cv2.resize(g, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
    return np.clip(big[:h, :w], 0, 1)


def _colour(rng: np.random.Generator, cls: int, exclude: str | None = None) -> tuple[np.ndarray, str]:
    names = [n for n in COLOURS[cls] if n != exclude]
    name = names[int(rng.integers(len(names)))]
    return np.array(POOL[name], np.float32) + rng.uniform(-14, 14, 3).astype(np.float32), name


def _texture(rng: np.random.Generator, cls: int, u: np.ndarray, v: np.ndarray, L: float,
             mask: np.ndarray) -> tuple[np.ndarray, float]:
    """RGB (h, w, 3) appearance of one object over its box, and its opacity (< 1: translucent, blended over what
    is drawn there). u, v: pixel offsets along / across the long axis; L: long side; mask: the object in the box."""
    h, w = u.shape
    c1, n1 = _colour(rng, cls)
    c2, _ = _colour(rng, cls, exclude=n1)
    half_w = max(float(np.abs(v[mask]).max()) if mask.any() else 1.0, 1.0)
    across = np.clip(np.abs(v) / half_w, 0, 1)  # 0 on the long axis, 1 at the rim
    shade = (1.0 - 0.3 * across ** 2)[..., None]  # a cylinder's shading
    alpha = 1.0
    if cls == GT:
        p = (_lowfreq(rng, h, w, rng.uniform(4, 7)) > 0.5).astype(np.float32)[..., None]
        p = cv2.GaussianBlur(p, (3, 3), 0.8)[..., None]
        out = c1 * (1 - p) + c2 * p
    elif cls == PAPER:
        period = rng.uniform(8.0, 10.0)
        line = (np.mod(v, period) < 2.6)
        words = _lowfreq(rng, h, w, 5) > 0.35  # gaps between "words"
        ink = (line & words).astype(np.float32)[..., None]
        out = c1 * (1 - 0.75 * ink) + 0.0 * ink
        out = out * (0.95 + 0.05 * _lowfreq(rng, h, w, 20)[..., None])
    elif cls == PACK:
        band = (np.mod(u + rng.uniform(0, 24), rng.uniform(18, 26)) < 9).astype(np.float32)[..., None]
        out = c1 * (1 - band) + c2 * band
        rim = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) == 0
        out[rim] = out[rim] * 0.35
    elif cls == METAL:
        r = np.sqrt(u ** 2 + (v * L / (2 * half_w)) ** 2)
        rings = 0.5 + 0.5 * np.sin(2 * np.pi * r / rng.uniform(9.0, 12.0))
        hx, hy = rng.uniform(-0.2, 0.2, 2) * L
        spec = np.exp(-((u - hx) ** 2 + (v - hy) ** 2) / (2 * (0.12 * L) ** 2))
        out = c1 * (0.6 + 0.4 * rings)[..., None] + (255 - c1) * 0.8 * spec[..., None]
    elif cls == GLASS:
        stripe = np.exp(-((v / half_w - rng.choice([-0.45, 0.45])) ** 2) / 0.02)
        out = c1 * shade + (255 - c1) * 0.85 * stripe[..., None]
        rim = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2) == 0
        out[rim] = out[rim] * 0.5  # the bottle's dark outline: a shape cue through the translucency
        alpha = 0.85
    elif cls == PLASTIC:
        ridges = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(7.0, 9.0))
        out = c1 * shade * (0.62 + 0.38 * ridges)[..., None] + 30.0 * ridges[..., None]
    elif cls == STYRO:
        pitch = rng.uniform(7.0, 9.0)
        gu, gv = np.mod(u, pitch) - pitch / 2, np.mod(v + (np.floor(u / pitch) % 2) * pitch / 2, pitch) - pitch / 2
        bead = np.exp(-(gu ** 2 + gv ** 2) / 3.5)
        out = c1 * (1 - 0.3 * bead)[..., None]
    elif cls == BAG:
        warp = 10.0 * _lowfreq(rng, h, w, 18)
        folds = 0.5 + 0.5 * np.sin(2 * np.pi * (u * 0.6 + v * 0.8 + warp) / rng.uniform(8, 11))
        out = c1 * (0.55 + 0.45 * folds)[..., None] + 60.0 * (folds ** 8)[..., None]
        alpha = 0.85
    elif cls == BATTERY:
        pos = u / (L / 2)  # -1 (terminal end) .. 1
        band = (pos > 0.35).astype(np.float32)[..., None]
        cap = (pos < -0.8).astype(np.float32)[..., None]
        body = c1 * (1 - band) + c2 * band
        out = (body * (1 - cap) + np.float32(205) * cap) * shade
        stripe = (np.abs(v / half_w) < 0.18) & (pos > -0.6) & (pos < 0.25)
        out[stripe] = out[stripe] * 0.4 + 150
    elif cls == CLOTHING:
        period = rng.uniform(10, 15)
        a = (np.mod(u, period) < period * 0.4).astype(np.float32)
        b = (np.mod(v, period) < period * 0.4).astype(np.float32)
        tone = 0.45 * a + 0.45 * b  # plaid: three tones where the bands cross
        weave = 0.92 + 0.08 * np.sin(np.pi * (u + v))  # fine diagonal twill
        out = (c1 * (1 - tone[..., None]) + c2 * tone[..., None]) * weave[..., None]
    else:
        raise ValueError(cls)
    return out.astype(np.float32), alpha


# ---------------------------------------------------------------------------------------------- background

def _background(rng: np.random.Generator, H: int, W: int) -> np.ndarray:
    base = np.array([(200, 190, 170), (150, 150, 150), (95, 85, 75), (170, 160, 140), (110, 118, 125)]
                    [int(rng.integers(5))], np.float32) + rng.uniform(-20, 20, 3).astype(np.float32)
    img = np.empty((H, W, 3), np.float32)
    img[:] = base
    img *= (0.85 + 0.3 * _lowfreq(rng, H, W, W / 3))[..., None]  # uneven floor
    img *= (0.94 + 0.12 * _lowfreq(rng, H, W, 6))[..., None]  # grain
    if rng.random() < 0.5:  # tile grout
        pitch = rng.uniform(0.2, 0.4) * W
        off = rng.uniform(0, pitch, 2)
        grout = ((np.mod(np.arange(W) + off[0], pitch) < 2)[None, :]
                 | (np.mod(np.arange(H) + off[1], pitch) < 2)[:, None])
        img[grout] *= 0.8
    for _ in range(int(rng.integers(2, 6))):  # stains and scratches: clutter that is background
        if rng.random() < 0.5:
            c = (int(rng.integers(W)), int(rng.integers(H)))
            ax = (int(rng.integers(4, W // 8)), int(rng.integers(4, W // 8)))
            stain = np.zeros((H, W), np.float32)
            cv2.ellipse(stain, c, ax, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
            stain = cv2.GaussianBlur(stain, (0, 0), 3)
            img *= (1 - 0.2 * stain)[..., None]
        else:
            p1 = (int(rng.integers(W)), int(rng.integers(H)))
            p2 = (int(rng.integers(W)), int(rng.integers(H)))
            tone = tuple(float(x) for x in base * rng.uniform(0.6, 1.3))
            cv2.line(img, p1, p2, tone, 1, cv2.LINE_AA)
    return img


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    H, W = img.shape[:2]
    xs = np.linspace(-1, 1, W, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, H, dtype=np.float32)[:, None]
    g = rng.uniform(-0.25, 0.25, 2).astype(np.float32)
    light = (1.0 + g[0] * xs + g[1] * ys) * np.float32(rng.uniform(0.8, 1.15))  # directional light, exposure
    cast = rng.uniform(0.92, 1.08, 3).astype(np.float32)  # white balance
    img = img * light[..., None] * cast
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2, 6))
    if rng.random() < 0.25:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 0.9))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------- images

def _uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO uncompressed counts: column-major runs, starting with a (possibly empty) run of zeros."""
    flat = np.asfortranarray(mask).ravel(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate(([0], change, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return counts


def render_image(rng: np.random.Generator, size: int, force: tuple[int, ...] = (),
                 weights: dict[int, float] | None = None) -> tuple[np.ndarray, list[dict]]:
    """One RGB uint8 image and its objects: dicts with class_id, polys (list of flat lists), mask (bool), area.

    Objects are drawn largest-area first, so the picture agrees with the SPEC painting of its annotations.
    `weights`: relative class frequency of a drawn object (default CLASS_WEIGHTS).
    """
    H = W = size
    scale = size / 256.0
    weights = weights or CLASS_WEIGHTS
    classes = list(weights)
    p = np.array([weights[c] for c in classes], np.float64)
    n = int(min(3 + rng.poisson(3.5), 11))
    picks = list(force) + [int(rng.choice(classes, p=p / p.sum())) for _ in range(max(n - len(force), 0))]
    order = rng.permutation(len(picks))
    objects: list[dict] = []
    centres: list[tuple[float, float, float]] = []
    for k in order:
        cls = picks[k]
        lo, hi = SIZES[cls]
        if rng.random() < TINY.get(cls, 0.0):
            L = rng.uniform(4, 9) * scale
        else:
            L = math.exp(rng.uniform(math.log(lo), math.log(hi))) * scale
        if centres and rng.random() < 0.45:  # next to an earlier object: overlaps are the point
            cx0, cy0, L0 = centres[int(rng.integers(len(centres)))]
            cx, cy = cx0 + rng.uniform(-0.5, 0.5) * L0, cy0 + rng.uniform(-0.5, 0.5) * L0
        else:
            cx, cy = rng.uniform(0.05, 0.95) * W, rng.uniform(0.05, 0.95) * H
        theta = rng.uniform(0, 2 * np.pi)
        rot = np.array([[math.cos(theta), math.sin(theta)], [-math.sin(theta), math.cos(theta)]])
        polys = []
        for poly in _shape(rng, cls):
            pts = poly * L @ rot + [cx, cy]
            # Clip to the image (real annotations stay inside) and round as the JSON will store them, so the
            # raster below is exactly what a reader of the JSON gets.
            pts[:, 0] = np.clip(pts[:, 0], 0, W)
            pts[:, 1] = np.clip(pts[:, 1], 0, H)
            polys.append([round(float(x), 2) for x in pts.ravel()])
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, H, W))
        area = int(mask_utils.area(rle))
        if area < 6:
            continue
        objects.append({"class_id": cls, "polys": polys, "rle": rle, "area": area, "L": L,
                        "centre": (cx, cy), "theta": theta})
        centres.append((cx, cy, L))

    img = _background(rng, H, W)
    for obj in sorted(objects, key=lambda o: -o["area"]):  # the SPEC painting order
        m = mask_utils.decode(obj["rle"]).astype(bool)
        obj["mask"] = m
        ys, xs = np.nonzero(m)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - obj["centre"][0], yy - obj["centre"][1]
        c, s = math.cos(obj["theta"]), math.sin(obj["theta"])
        u, v = dx * c + dy * s, -dx * s + dy * c
        crop_mask = m[y0:y1, x0:x1]
        under = img[y0:y1, x0:x1]
        tex, alpha = _texture(rng, obj["class_id"], u, v, obj["L"], crop_mask)
        if alpha < 1.0:
            tex = alpha * tex + (1 - alpha) * under
        under[crop_mask] = tex[crop_mask]
    return _lighting(rng, img), objects


def _annotation(rng: np.random.Generator, obj: dict, ann_id: int, image_id: int, cat_id: int) -> dict:
    m = obj["mask"]
    bbox = [float(x) for x in mask_utils.toBbox(obj["rle"])]
    r = rng.random()
    if r < 0.06:  # crowd region: uncompressed column-major counts, as COCO stores crowds
        segm, crowd = {"size": list(m.shape), "counts": _uncompressed_rle(m)}, 1
    elif r < 0.16:  # compressed RLE string
        segm, crowd = {"size": list(m.shape), "counts": obj["rle"]["counts"].decode("ascii")}, 0
    else:
        segm, crowd = obj["polys"], 0
    return {"id": ann_id, "image_id": image_id, "category_id": cat_id, "segmentation": segm,
            "area": float(obj["area"]), "bbox": bbox, "iscrowd": crowd}


def make_demo(out_dir: str, train: int = 240, val: int = 40, test: int = 40, extra: int = 120, size: int = 256,
              seed: int = 0, imbalance: bool = False, hidden_labels: bool = False) -> dict:
    """Generate the demo data root in `out_dir`; returns {split: number of images}.

    `hidden_labels`: also write the unlabelled splits' ground truth to test_gt.json and extra_gt.json, for measuring
    pseudo-labels (bench/pseudo_quality.py), never for training; every other file is the same byte for byte (each
    image draws from its own generator, and its annotations are drawn after it is rendered).

    `imbalance`: objects drawn in the competition's proportions (COMPETITION_ANNOTATIONS); nothing is forced into
    train, and Battery and Clothing are forced into 3 validation images only, so their IoU is measured at all."""
    os.makedirs(out_dir, exist_ok=True)
    meta = np.random.default_rng([seed, 99])
    # Category ids that are not the class ids, listed in a shuffled order, names with varied capitalisation.
    names = list(CLASSES[1:])
    ids = [int(x) for x in meta.choice(np.arange(20, 80), size=len(names), replace=False)]
    cat_of = {cls: ids[cls - 1] for cls in range(1, len(CLASSES))}
    display = {n: (n.upper() if k % 4 == 1 else n.title() if k % 4 == 2 else n) for k, n in enumerate(names)}
    categories = [{"id": cat_of[c], "name": display[names[c - 1]], "supercategory": "trash"}
                  for c in meta.permutation(np.arange(1, len(CLASSES))).tolist()]
    info = {"description": "trashseg synthetic demo data", "version": "1.0", "year": 2023,
            "contributor": "trashseg data.demo", "seed": seed}
    licenses = [{"id": 0, "name": "CC0", "url": ""}]

    counters = {f: 0 for f in FOLDERS}
    image_seq = [0]
    ann_seq = [0]
    splits: dict[str, tuple[list, list]] = {}
    for si, (split, n) in enumerate((("train", train), ("val", val), ("test", test), ("extra", extra))):
        srng = np.random.default_rng([seed, si, 1_000_003])
        labelled = split in ("train", "val")
        forced: dict[int, list[int]] = {i: [] for i in range(n)}
        if labelled and n and not (imbalance and split == "train"):
            for cls, share in ((BATTERY, 0.0 if imbalance else 0.12), (CLOTHING, 0.0 if imbalance else 0.1)):
                k = min(n, max(3, round(share * n)))
                for i in srng.choice(n, size=k, replace=False).tolist():
                    forced[i].append(cls)
        images, anns = [], []
        for i in range(n):
            rng = np.random.default_rng([seed, si, i])
            folder = FOLDERS[int(rng.integers(2))] if labelled else FOLDERS[2]
            counters[folder] += 1
            file_name = f"{folder}/{counters[folder]:04d}.jpg"
            k = image_seq[0]
            image_seq[0] += 1
            image_id = 1000 + 7 * k + (k * k) % 5  # increasing, gappy, not 0..N-1
            img, objects = render_image(rng, size, tuple(forced[i]),
                                        COMPETITION_ANNOTATIONS if imbalance else None)
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            assert ok
            atomic_write_bytes(os.path.join(out_dir, file_name), buf.tobytes())
            images.append({"id": image_id, "file_name": file_name, "width": size, "height": size, "license": 0,
                           "date_captured": "2023-01-01 00:00:00"})
            if labelled or hidden_labels:
                for obj in objects:
                    ann_seq[0] += 1
                    anns.append(_annotation(rng, obj, 50_000 + 3 * ann_seq[0], image_id, cat_of[obj["class_id"]]))
        splits[split] = (images, anns)

    def coco(images: list, anns: list | None) -> dict:
        d = {"info": info, "licenses": licenses, "images": images, "categories": categories}
        if anns is not None:
            d["annotations"] = anns
        return d

    atomic_write_json(os.path.join(out_dir, "train.json"), coco(*splits["train"]))
    atomic_write_json(os.path.join(out_dir, "val.json"), coco(*splits["val"]))
    atomic_write_json(os.path.join(out_dir, "train_all.json"),
                      coco(splits["train"][0] + splits["val"][0], splits["train"][1] + splits["val"][1]))
    atomic_write_json(os.path.join(out_dir, "test.json"), coco(splits["test"][0], None))
    atomic_write_json(os.path.join(out_dir, "extra.json"), coco(splits["extra"][0], None))
    if hidden_labels:
        for split in ("test", "extra"):
            atomic_write_json(os.path.join(out_dir, f"{split}_gt.json"), coco(*splits[split]))
    return {s: len(v[0]) for s, v in splits.items()}


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.demo", description="Write the synthetic demo data root.")
    p.add_argument("--out", required=True, help="output data root")
    p.add_argument("--train", type=int, default=None, help="default 240 (480 with --imbalance)")
    p.add_argument("--val", type=int, default=None, help="default 40 (80 with --imbalance)")
    p.add_argument("--test", type=int, default=None, help="default 40")
    p.add_argument("--extra", type=int, default=None,
                   help="unlabelled images (extra.json) for pseudo-labelling, default 120")
    p.add_argument("--imbalance", action="store_true",
                   help="objects in the competition's class proportions (Battery 63 : Paper 9311), more images")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden-labels", action="store_true",
                   help="also write test_gt.json / extra_gt.json, the unlabelled images' ground truth, to measure "
                        "pseudo-labels against (bench/pseudo_quality.py); nothing else changes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    sizes = IMBALANCED_SIZES if args.imbalance else dict(train=240, val=40, test=40, extra=120)
    for name in ("train", "val", "test", "extra"):
        if getattr(args, name) is None:
            setattr(args, name, sizes[name])
        if getattr(args, name) < 0:
            print(f"error: --{name} must be >= 0", file=sys.stderr)
            return 2
    if args.size < 32:
        print("error: --size must be >= 32", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    counts = make_demo(args.out, args.train, args.val, args.test, args.extra, args.size, args.seed, args.imbalance,
                       args.hidden_labels)
    print(f"wrote demo data to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items())
          + f" images ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
