"""Paired augmentations on (uint8 H×W×3 RGB image, uint8 H×W mask), NumPy/OpenCV, and the train/eval presets.

Every transform is a callable ``t(image, mask, rng) -> (image, mask)``; ``rng`` is a ``np.random.Generator`` and is
the only source of randomness (no global ``np.random`` / ``random``), so a sample is a pure function of its seed.
``mask`` may be None (unlabelled eval data): geometric transforms then only move the image.

Semantics follow mmsegmentation 1.x (Resize, RandomResize, RandomCrop, RandomFlip, PhotoMetricDistortion, Pad) and
albumentations (RandomRotate90, Blur, GaussianBlur, MotionBlur, OneOf), as used by the competition team (SPEC §4).
Deliberate deviations are marked "Deviation:" below.

Preview the train pipeline on a COCO root:

    python -m data.transforms preview --data-root R --json train.json --n 16 --out grid.jpg [--copy-paste] [--seed 0]
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np

from data.classes import CLASSES, IGNORE_INDEX, PALETTE, PIXEL_MEAN, PIXEL_STD
from data.io import atomic_write_bytes

Mask = Optional[np.ndarray]
Instances = list  # list[(class_id, bool mask (H, W))], painting order (largest first)
Source = Callable[[np.random.Generator], tuple]  # rng -> (image, mask, instances)

# cv2.INTER_NEAREST maps dst x to src floor(x * s), half a source pixel off the pixel-centre grid that INTER_LINEAR
# uses; INTER_NEAREST_EXACT uses pixel centres, so a resized mask stays aligned with the bilinearly resized image.
# Deviation: mmcv resizes masks with INTER_NEAREST (identical at scale 1, up to half a source pixel off otherwise).
MASK_INTERP = cv2.INTER_NEAREST_EXACT
IMAGE_INTERP = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA,
                "nearest": cv2.INTER_NEAREST_EXACT}


def _pair(x) -> tuple[int, int]:
    return (int(x), int(x)) if np.isscalar(x) else (int(x[0]), int(x[1]))


def _resize(image: np.ndarray, mask: Mask, hw: tuple[int, int], interp: int, resize_mask: bool = True):
    h, w = hw
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=interp)
    if mask is not None and resize_mask and mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=MASK_INTERP)
    return image, mask


def _histogram(a: np.ndarray) -> np.ndarray:
    """Counts of each value 0..255 of a uint8 array (cv2.calcHist: several times faster than np.bincount; its float32
    counts are exact below 2^24 pixels)."""
    if a.dtype == np.uint8 and a.size < (1 << 24):
        return cv2.calcHist([a], [0], None, [256], [0, 256]).ravel().astype(np.int64)
    return np.bincount(a.ravel(), minlength=256)


def rescale_size(h: int, w: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv.rescale_size for a tuple scale: the largest size with the long edge ≤ max(scale) and the short edge
    ≤ min(scale), keeping the aspect ratio (so the order of ``scale`` does not matter)."""
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


class Compose:
    def __init__(self, transforms: Iterable[Callable]):
        self.transforms = [t for t in transforms if t is not None]

    def __call__(self, image, mask, rng):
        for t in self.transforms:
            image, mask = t(image, mask, rng)
        return image, mask

    def __iter__(self):
        return iter(self.transforms)

    def __repr__(self):
        return "Compose(\n" + "".join(f"  {t!r},\n" for t in self.transforms) + ")"


# ----------------------------------------------------------------------------------------------- geometric
class Resize:
    """Fixed ``scale=(h, w)``, or with ``keep_ratio`` mmseg's ``Resize(scale, keep_ratio=True)``: long edge
    ≤ max(scale), short edge ≤ min(scale). Image bilinear (or ``interpolation``), mask nearest.
    ``resize_mask=False`` leaves the mask at full resolution (eval: the metric is computed at label size)."""

    def __init__(self, scale, keep_ratio: bool = False, interpolation: str = "bilinear", resize_mask: bool = True):
        self.scale = _pair(scale)
        self.keep_ratio = keep_ratio
        self.interp = IMAGE_INTERP[interpolation]
        self.resize_mask = resize_mask

    def __call__(self, image, mask, rng):
        h, w = image.shape[:2]
        hw = rescale_size(h, w, self.scale) if self.keep_ratio else self.scale
        return _resize(image, mask, hw, self.interp, self.resize_mask)

    def __repr__(self):
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomResize:
    """mmcv RandomResize(scale, ratio_range): ratio ~ U(ratio_range), target scale = int(scale * ratio) per edge, then
    Resize(target, keep_ratio). mmseg's ADE20K recipe for crop 512 uses scale (2048, 512), ratio (0.5, 2.0)."""

    def __init__(self, scale, ratio_range=(0.5, 2.0), keep_ratio: bool = True, interpolation: str = "bilinear"):
        self.scale = _pair(scale)
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.keep_ratio = keep_ratio
        self.interp = IMAGE_INTERP[interpolation]

    def __call__(self, image, mask, rng):
        lo, hi = self.ratio_range
        ratio = rng.random() * (hi - lo) + lo
        target = (int(self.scale[0] * ratio), int(self.scale[1] * ratio))
        h, w = image.shape[:2]
        hw = rescale_size(h, w, target) if self.keep_ratio else target
        return _resize(image, mask, hw, self.interp)

    def __repr__(self):
        return f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range})"


class RandomCrop:
    """mmseg RandomCrop: a uniformly placed ``crop_size=(h, w)`` window (the whole extent where the image is smaller).
    With ``cat_max_ratio < 1`` the window is redrawn up to 10 times until no single class (ignoring 255) covers
    ≥ cat_max_ratio of it and at least two classes are present; after 10 failures the last draw is kept unchecked."""

    def __init__(self, crop_size, cat_max_ratio: float = 1.0, ignore_index: int = IGNORE_INDEX):
        self.crop_size = _pair(crop_size)
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index

    def _bbox(self, h, w, rng):
        y = int(rng.integers(0, max(h - self.crop_size[0], 0) + 1))
        x = int(rng.integers(0, max(w - self.crop_size[1], 0) + 1))
        return y, y + self.crop_size[0], x, x + self.crop_size[1]

    def __call__(self, image, mask, rng):
        h, w = image.shape[:2]
        y1, y2, x1, x2 = self._bbox(h, w, rng)
        if self.cat_max_ratio < 1.0 and mask is not None:
            for _ in range(10):
                cnt = _histogram(mask[y1:y2, x1:x2])
                cnt[self.ignore_index] = 0
                cnt = cnt[cnt > 0]
                if len(cnt) > 1 and cnt.max() / cnt.sum() < self.cat_max_ratio:
                    break
                y1, y2, x1, x2 = self._bbox(h, w, rng)
        image = image[y1:y2, x1:x2]
        mask = mask[y1:y2, x1:x2] if mask is not None else None
        return image, mask

    def __repr__(self):
        return f"RandomCrop(crop_size={self.crop_size}, cat_max_ratio={self.cat_max_ratio})"


class RandomFlip:
    """Flip with probability ``prob``; ``direction`` 'horizontal', 'vertical', or a sequence of them (one is picked
    uniformly when the flip happens)."""

    _CODE = {"horizontal": 1, "vertical": 0}

    def __init__(self, prob: float = 0.5, direction="horizontal"):
        self.prob = prob
        self.directions = [direction] if isinstance(direction, str) else list(direction)
        for d in self.directions:
            if d not in self._CODE:
                raise ValueError(f"unknown flip direction {d!r}; use 'horizontal' or 'vertical'")

    def __call__(self, image, mask, rng):
        if rng.random() >= self.prob:
            return image, mask
        d = self.directions[int(rng.integers(len(self.directions)))] if len(self.directions) > 1 else self.directions[0]
        code = self._CODE[d]
        return cv2.flip(image, code), (cv2.flip(mask, code) if mask is not None else None)

    def __repr__(self):
        return f"RandomFlip(prob={self.prob}, direction={self.directions})"


class RandomRotate90:
    """albumentations RandomRotate90: with probability ``prob`` rotate by k·90°, k uniform in {0, 1, 2, 3}
    (k = 0 is a no-op, as in albumentations). Non-square images swap height and width."""

    _CODE = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}  # = np.rot90(x, k)

    def __init__(self, prob: float = 0.5):
        self.prob = prob

    def __call__(self, image, mask, rng):
        if rng.random() >= self.prob:
            return image, mask
        k = int(rng.integers(4))
        if k == 0:
            return image, mask
        code = self._CODE[k]
        return cv2.rotate(image, code), (cv2.rotate(mask, code) if mask is not None else None)

    def __repr__(self):
        return f"RandomRotate90(prob={self.prob})"


class Pad:
    """Pad bottom/right up to ``size=(h, w)`` (mmseg: image 0, mask 255). Dimensions already ≥ size are left alone."""

    def __init__(self, size, pad_val: int = 0, seg_pad_val: int = IGNORE_INDEX):
        self.size = _pair(size)
        self.pad_val = pad_val
        self.seg_pad_val = seg_pad_val

    def __call__(self, image, mask, rng):
        h, w = image.shape[:2]
        ph, pw = max(self.size[0] - h, 0), max(self.size[1] - w, 0)
        if ph == 0 and pw == 0:
            return image, mask
        image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=(self.pad_val,) * 3)
        if mask is not None:
            mh, mw = mask.shape[:2]
            mask = cv2.copyMakeBorder(mask, 0, max(self.size[0] - mh, 0), 0, max(self.size[1] - mw, 0),
                                      cv2.BORDER_CONSTANT, value=self.seg_pad_val)
        return image, mask

    def __repr__(self):
        return f"Pad(size={self.size}, pad_val={self.pad_val}, seg_pad_val={self.seg_pad_val})"


# ---------------------------------------------------------------------------------------------- photometric
def _convert_lut(alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg PhotoMetricDistortion.convert as a 256-entry table: float32(x) * alpha + beta, clip to [0, 255],
    truncate to uint8. Exactly the per-pixel result, at table-lookup cost."""
    v = np.arange(256, dtype=np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(v, 0, 255).astype(np.uint8)


class PhotoMetricDistortion:
    """mmseg 1.x PhotoMetricDistortion on uint8 RGB: brightness (+U(-δ, δ)), then contrast (×U(range)) either second or
    last (mode drawn 50/50), saturation (HSV S ×U(range)), hue (H + randint(-δ, δ) mod 180, numpy's exclusive high as
    in mmseg); each step applied with probability 0.5. Saturation and hue each do their own HSV round trip, as mmseg's
    do; values are clipped and truncated to uint8 after every step. The mask is never touched."""

    def __init__(self, brightness_delta: float = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18):
        self.brightness_delta = brightness_delta
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)
        self._ident = np.arange(256, dtype=np.uint8)

    def _contrast(self, image, rng):
        if rng.integers(2):
            image = cv2.LUT(image, _convert_lut(alpha=rng.uniform(*self.contrast_range)))
        return image

    def _hsv_channel(self, image, channel: int, lut: np.ndarray):
        # The RGB<->HSV pair gives the same H, S, V as mmcv's BGR<->HSV on the BGR image.
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
        luts = [self._ident, self._ident, self._ident]
        luts[channel] = lut
        hsv = cv2.LUT(hsv, np.stack(luts, axis=-1).reshape(256, 1, 3))
        return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)

    def __call__(self, image, mask, rng):
        if rng.integers(2):  # brightness
            image = cv2.LUT(image, _convert_lut(beta=rng.uniform(-self.brightness_delta, self.brightness_delta)))
        mode = rng.integers(2)
        if mode == 1:
            image = self._contrast(image, rng)
        if rng.integers(2):  # saturation
            image = self._hsv_channel(image, 1, _convert_lut(alpha=rng.uniform(*self.saturation_range)))
        if rng.integers(2):  # hue; OpenCV uint8 hue is 0..179
            delta = int(rng.integers(-self.hue_delta, self.hue_delta))
            lut = ((np.arange(256) + delta) % 180).astype(np.uint8)
            image = self._hsv_channel(image, 0, lut)
        if mode == 0:
            image = self._contrast(image, rng)
        return image, mask

    def __repr__(self):
        return (f"PhotoMetricDistortion(brightness_delta={self.brightness_delta}, "
                f"contrast_range={self.contrast_range}, saturation_range={self.saturation_range}, "
                f"hue_delta={self.hue_delta})")


def _odd_ksize(limit, rng) -> int:
    lo, hi = (3, int(limit)) if np.isscalar(limit) else (int(limit[0]), int(limit[1]))
    sizes = np.arange(lo | 1, hi + 1, 2)
    return int(sizes[rng.integers(len(sizes))])


class Blur:
    """albumentations Blur: box filter, kernel size odd, uniform in [3, blur_limit]."""

    def __init__(self, blur_limit=7):
        self.blur_limit = blur_limit

    def __call__(self, image, mask, rng):
        k = _odd_ksize(self.blur_limit, rng)
        return cv2.blur(image, (k, k)), mask

    def __repr__(self):
        return f"Blur(blur_limit={self.blur_limit})"


class GaussianBlur:
    """albumentations GaussianBlur: odd kernel in [3, blur_limit]; sigma ~ U(sigma_limit), 0 = from the kernel size."""

    def __init__(self, blur_limit=7, sigma_limit=(0.0, 0.0)):
        self.blur_limit = blur_limit
        self.sigma_limit = sigma_limit

    def __call__(self, image, mask, rng):
        k = _odd_ksize(self.blur_limit, rng)
        sigma = rng.uniform(*self.sigma_limit) if self.sigma_limit[1] > 0 else 0.0
        return cv2.GaussianBlur(image, (k, k), sigmaX=sigma), mask

    def __repr__(self):
        return f"GaussianBlur(blur_limit={self.blur_limit}, sigma_limit={self.sigma_limit})"


class MotionBlur:
    """albumentations-style MotionBlur: a normalised straight-line kernel (odd size in [3, blur_limit], random angle,
    through the centre) applied with filter2D."""

    def __init__(self, blur_limit=7):
        self.blur_limit = blur_limit

    def __call__(self, image, mask, rng):
        k = _odd_ksize(self.blur_limit, rng)
        theta = rng.uniform(0.0, math.pi)
        r = (k - 1) / 2
        dx, dy = r * math.cos(theta), r * math.sin(theta)
        kernel = np.zeros((k, k), np.float32)
        cv2.line(kernel, (round(r - dx), round(r - dy)), (round(r + dx), round(r + dy)), 1.0, thickness=1)
        kernel /= kernel.sum()
        return cv2.filter2D(image, -1, kernel), mask

    def __repr__(self):
        return f"MotionBlur(blur_limit={self.blur_limit})"


class OneOf:
    """With probability ``p`` apply one of ``transforms``, chosen uniformly (albumentations OneOf, equal weights)."""

    def __init__(self, transforms: Sequence[Callable], p: float = 0.5):
        self.transforms = list(transforms)
        self.p = p

    def __call__(self, image, mask, rng):
        if not self.transforms or rng.random() >= self.p:
            return image, mask
        return self.transforms[int(rng.integers(len(self.transforms)))](image, mask, rng)

    def __repr__(self):
        return f"OneOf({self.transforms}, p={self.p})"


class Normalize:
    """(image - mean) / std as float32 (H, W, 3), for CPU users; training ships uint8 and normalises on the device."""

    def __init__(self, mean=PIXEL_MEAN, std=PIXEL_STD):
        self.mean = np.asarray(mean, np.float32)
        self.inv_std = 1.0 / np.asarray(std, np.float32)

    def __call__(self, image, mask, rng):
        return (image.astype(np.float32) - self.mean) * self.inv_std, mask

    def __repr__(self):
        return f"Normalize(mean={tuple(self.mean)}, std={tuple(1 / self.inv_std)})"


# ----------------------------------------------------------------------------------------------- copy-paste
class DatasetSource:
    """Copy-paste source over a dataset with the CocoSegDataset interface: a uniformly drawn sample's
    (image, mask, instances). Picklable, so DataLoader workers can carry it."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, rng):
        j = int(rng.integers(len(self.dataset)))
        sample = self.dataset[j]
        return sample["image"], sample["mask"], self.dataset.instances(j)


class CopyPaste:
    """Paste a random subset of another training image's objects on top of this one (SPEC §4).

    With probability ``p``: draw a source ``(image, mask, instances)`` from ``source(rng)`` (up to 3 draws to find one
    with objects); bring it to the target's size (scale to cover, then a random crop); take each instance's *visible*
    region in the source (its mask minus every instance painted after it, i.e. exactly the pixels the source mask
    gives its class); choose ``max(1, round(fraction · n))`` of the n visible instances (at most ``max_objects``);
    alpha-blend them onto the target at the same position.

    Labels: pasted pixels take the pasted object's class; every other pixel keeps the target's label — the original
    objects keep their own class ids wherever they are still visible. With ``blur_sigma > 0`` the alpha is the
    Gaussian-blurred object union: a pixel is labelled with the pasted class where it lies in the pasted region and
    alpha ≥ 0.5; inside the region where alpha < 0.5 (convex corners, hair-thin parts) the image is mostly target, so
    the target label stays; outside the region where alpha ≥ 0.5 (concave corners: mostly unlabelled source
    surroundings) the mask gets 255. So 255 appears only on such slivers, and never with ``blur_sigma=0``.
    Leaves the sample alone when ``mask`` is None."""

    def __init__(self, source: Optional[Source] = None, p: float = 0.5, fraction: float = 0.1,
                 max_objects: Optional[int] = 10, blur_sigma: float = 3.0, ignore_index: int = IGNORE_INDEX):
        self.source = source
        self.p = p
        self.fraction = fraction
        self.max_objects = max_objects
        self.blur_sigma = blur_sigma
        self.ignore_index = ignore_index

    def __call__(self, image, mask, rng):
        if mask is None or rng.random() >= self.p:
            return image, mask
        if self.source is None:
            raise RuntimeError("CopyPaste has no source: pass copy_paste_source= to build_transform, or use "
                               "data.loader.TrainSet, which wires in its dataset")
        for _ in range(3):
            src_img, _, instances = self.source(rng)
            if instances:
                break
        else:
            return image, mask
        h, w = image.shape[:2]
        owner, classes = self._owner_map(instances)  # (Hs, Ws) uint16: 1 + index of the instance visible there
        src_img, owner = self._fit(src_img, owner, (h, w), rng)
        present = np.flatnonzero(_histogram(owner)[1:len(classes) + 1]) + 1
        if len(present) == 0:
            return image, mask
        k = max(1, int(round(self.fraction * len(present))))
        if self.max_objects:
            k = min(k, int(self.max_objects))
        chosen = rng.choice(present, size=min(k, len(present)), replace=False)
        size = 256 if owner.dtype == np.uint8 else len(classes) + 1
        label_lut = np.zeros(size, np.uint8)  # owner id -> class of the visible source instance
        label_lut[1:len(classes) + 1] = classes
        chosen_lut = np.zeros(size, np.uint8)  # owner id -> 1 if pasted
        chosen_lut[chosen] = 1
        if owner.dtype == np.uint8:  # cv2.LUT: a few times faster than fancy indexing
            hard, label = cv2.LUT(owner, chosen_lut).view(bool), cv2.LUT(owner, label_lut)  # (H, W) each
        else:
            hard, label = chosen_lut[owner].view(bool), label_lut[owner]
        return self._blend(image, mask, src_img, hard, label)

    @staticmethod
    def _owner_map(instances):
        shape = instances[0][1].shape
        dtype = np.uint8 if len(instances) < 255 else np.uint16
        owner = np.zeros(shape, dtype)
        for i, (_, m) in enumerate(instances):  # painting order: later instances cover earlier ones
            owner[m] = i + 1
        classes = np.array([c for c, _ in instances], np.uint8)
        return owner, classes

    @staticmethod
    def _fit(src_img, owner, hw, rng):
        h, w = hw
        sh, sw = src_img.shape[:2]
        if (sh, sw) == (h, w):
            return src_img, owner
        s = max(h / sh, w / sw)
        nh, nw = max(h, int(math.ceil(sh * s))), max(w, int(math.ceil(sw * s)))
        src_img = cv2.resize(src_img, (nw, nh), interpolation=cv2.INTER_LINEAR)
        owner = cv2.resize(owner, (nw, nh), interpolation=MASK_INTERP)
        y = int(rng.integers(0, nh - h + 1))
        x = int(rng.integers(0, nw - w + 1))
        return src_img[y:y + h, x:x + w], owner[y:y + h, x:x + w]

    def _blend(self, image, mask, src_img, hard, label):
        image, mask = image.copy(), mask.copy()
        if self.blur_sigma <= 0:
            image[hard] = src_img[hard]
            mask[hard] = label[hard]
            return image, mask
        ys, xs = np.nonzero(hard.any(axis=1))[0], np.nonzero(hard.any(axis=0))[0]
        r = int(math.ceil(4 * self.blur_sigma)) + 1  # cv2's kernel radius for float32 at this sigma
        y1, y2 = max(ys[0] - r, 0), min(ys[-1] + r + 1, hard.shape[0])
        x1, x2 = max(xs[0] - r, 0), min(xs[-1] + r + 1, hard.shape[1])
        roi = (slice(y1, y2), slice(x1, x2))
        hard_r = hard[roi]
        alpha = cv2.GaussianBlur(hard_r.astype(np.float32), (0, 0), self.blur_sigma,
                                 borderType=cv2.BORDER_REPLICATE)  # (h, w)
        tgt = image[roi].astype(np.float32)
        blended = tgt + alpha[..., None] * (src_img[roi].astype(np.float32) - tgt)
        image[roi] = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
        on = alpha >= 0.5
        m = mask[roi]
        np.copyto(m, label[roi], where=on & hard_r)
        m[on & ~hard_r] = self.ignore_index
        return image, mask

    def __repr__(self):
        return (f"CopyPaste(p={self.p}, fraction={self.fraction}, max_objects={self.max_objects}, "
                f"blur_sigma={self.blur_sigma})")


def copy_paste_steps(transform) -> list:
    """The CopyPaste steps inside a transform (a Compose, OneOf or single step), depth first."""
    if isinstance(transform, CopyPaste):
        return [transform]
    inner = getattr(transform, "transforms", None)
    return [c for t in (inner or []) for c in copy_paste_steps(t)]


# -------------------------------------------------------------------------------------------------- presets
# The team's pipeline at 512 (SPEC §4). Each key becomes a --flag of train.py with this default.
TRAIN_DEFAULTS: dict = dict(
    ratio_range=(),              # () off; (0.5, 2.0): mmseg RandomResize(scale=(4·crop, crop)) + RandomCrop, not Resize
    cat_max_ratio=0.75,          # RandomCrop (only with ratio_range)
    flip_prob=0.5,
    photometric=True,            # PhotoMetricDistortion, mmseg ranges below
    brightness_delta=32,
    contrast_range=(0.5, 1.5),
    saturation_range=(0.5, 1.5),
    hue_delta=18,
    rotate90_prob=0.5,
    blur_prob=0.1,               # OneOf(Blur, GaussianBlur, MotionBlur); 0.1 as the competition teams' albu configs
    blur_limit=7,
    copy_paste_p=0.0,            # SPEC suggests 0.5 when enabled
    copy_paste_fraction=0.1,
    copy_paste_max_objects=10,
    copy_paste_blur_sigma=3.0,
)
EVAL_DEFAULTS: dict = dict(
    scale=None,                  # None: identity; (h, w) bound: keep-ratio resize of the image only (mask stays)
)


def build_transform(preset: str, crop_size=512, copy_paste_source: Optional[Source] = None, **knobs) -> Compose:
    """'train': [CopyPaste] → Resize(crop, keep_ratio) | RandomResize + RandomCrop → RandomFlip →
    PhotoMetricDistortion → RandomRotate90 → OneOf(blurs) → Pad(crop). 'eval': identity or image-only Resize.

    CopyPaste comes first, on the raw sample, so the composite then goes through the geometric and photometric steps
    as one image. Its ``source`` may be left None here and wired by data.loader.TrainSet."""
    defaults = {"train": TRAIN_DEFAULTS, "eval": EVAL_DEFAULTS}.get(preset)
    if defaults is None:
        raise ValueError(f"unknown preset {preset!r}; choose 'train' or 'eval'")
    unknown = sorted(set(knobs) - set(defaults))
    if unknown:
        raise TypeError(f"unknown {preset} knobs {unknown}; valid: {sorted(defaults)}")
    k = {**defaults, **knobs}
    crop = _pair(crop_size)
    if preset == "eval":
        return Compose([Resize(k["scale"], keep_ratio=True, resize_mask=False)] if k["scale"] else [])
    steps: list = []
    if k["copy_paste_p"] > 0:
        steps.append(CopyPaste(copy_paste_source, p=k["copy_paste_p"], fraction=k["copy_paste_fraction"],
                               max_objects=k["copy_paste_max_objects"], blur_sigma=k["copy_paste_blur_sigma"]))
    if k["ratio_range"] is not None and len(k["ratio_range"]) not in (0, 2):
        raise ValueError(f"ratio_range must be () or (min, max), got {k['ratio_range']!r}")
    if k["ratio_range"]:
        steps += [RandomResize((4 * crop[1], crop[0]), ratio_range=k["ratio_range"]),
                  RandomCrop(crop, cat_max_ratio=k["cat_max_ratio"])]
    else:
        steps.append(Resize(crop, keep_ratio=True))
    if k["flip_prob"] > 0:
        steps.append(RandomFlip(k["flip_prob"], "horizontal"))
    if k["photometric"]:
        steps.append(PhotoMetricDistortion(k["brightness_delta"], k["contrast_range"], k["saturation_range"],
                                           k["hue_delta"]))
    if k["rotate90_prob"] > 0:
        steps.append(RandomRotate90(k["rotate90_prob"]))
    if k["blur_prob"] > 0:
        lim = k["blur_limit"]
        steps.append(OneOf([Blur(lim), GaussianBlur(lim), MotionBlur(lim)], p=k["blur_prob"]))
    steps.append(Pad(crop))
    return Compose(steps)


# -------------------------------------------------------------------------------------------------- preview
def overlay(image: np.ndarray, mask: Mask, alpha: float = 0.5) -> np.ndarray:
    """RGB image with the mask painted in the SPEC palette (255 = white), class borders outlined."""
    if mask is None:
        return image.copy()
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(PALETTE)] = PALETTE
    lut[IGNORE_INDEX] = (255, 255, 255)
    colour = lut[mask]
    painted = mask > 0
    out = image.copy()
    out[painted] = (image[painted] * (1 - alpha) + colour[painted] * alpha).astype(np.uint8)
    edges = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges & painted] = colour[edges & painted]
    return out


def _legend(width: int, present: set) -> np.ndarray:
    names = [(i, n) for i, n in enumerate(CLASSES)] + [(IGNORE_INDEX, "ignore (255)")]
    cell_w, row_h = 190, 24
    per_row = max(1, width // cell_w)
    rows = math.ceil(len(names) / per_row)
    legend = np.full((rows * row_h + 8, width, 3), 32, np.uint8)
    for j, (cid, name) in enumerate(names):
        x, y = 8 + (j % per_row) * cell_w, 4 + (j // per_row) * row_h
        colour = (255, 255, 255) if cid == IGNORE_INDEX else PALETTE[cid]
        cv2.rectangle(legend, (x, y + 3), (x + 16, y + 19), tuple(int(c) for c in colour), -1)
        cv2.rectangle(legend, (x, y + 3), (x + 16, y + 19), (200, 200, 200), 1)
        text_colour = (255, 255, 255) if cid in present else (120, 120, 120)
        cv2.putText(legend, f"{cid} {name}", (x + 22, y + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, text_colour, 1,
                    cv2.LINE_AA)
    return legend


def write_image_atomic(path: str, rgb: np.ndarray, quality: int = 92) -> None:
    ext = os.path.splitext(path)[1].lower() or ".jpg"
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def preview_grid(samples: Sequence[tuple], cell: int = 256, titles: Optional[Sequence[str]] = None) -> np.ndarray:
    """A grid of augmented samples, each as [image | mask overlay] side by side, plus a legend (classes present
    in the grid bright, absent ones grey)."""
    n = len(samples)
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    gap = 4
    grid = np.full((rows * (cell + gap), cols * (2 * cell + gap), 3), 16, np.uint8)
    present: set = set()
    for j, (img, m) in enumerate(samples):
        if m is not None:
            present |= set(np.unique(m).tolist())
        y, x = (j // cols) * (cell + gap), (j % cols) * (2 * cell + gap)
        for k, vis in enumerate((img, overlay(img, m))):
            s = cell / max(vis.shape[:2])
            vis = cv2.resize(vis, (max(1, round(vis.shape[1] * s)), max(1, round(vis.shape[0] * s))),
                             interpolation=cv2.INTER_AREA)
            grid[y:y + vis.shape[0], x + k * cell:x + k * cell + vis.shape[1]] = vis
        if titles:
            cv2.putText(grid, titles[j][:34], (x + 5, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3,
                        cv2.LINE_AA)
            cv2.putText(grid, titles[j][:34], (x + 5, y + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return np.concatenate([grid, _legend(grid.shape[1], present)], axis=0)


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Preview the train augmentation pipeline.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pv = sub.add_parser("preview", help="grid of augmented samples with mask overlays and a legend")
    pv.add_argument("--data-root", required=True)
    pv.add_argument("--json", required=True, help="COCO json relative to --data-root (or absolute)")
    pv.add_argument("--n", type=int, default=16)
    pv.add_argument("--out", default="grid.jpg")
    pv.add_argument("--copy-paste", action="store_true", help="enable copy-paste with p=1 so every cell shows it")
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--crop-size", type=int, default=512)
    pv.add_argument("--ratio-range", type=float, nargs=2, default=None)
    return p


def main(args) -> None:
    # Under `python -m data.transforms` this module is __main__; build with the importable module, whose classes
    # data.loader recognises (e.g. to wire the copy-paste source).
    from data import transforms as T
    from data.coco import CocoSegDataset
    from data.loader import TrainSet

    ds = CocoSegDataset(args.data_root, [args.json])
    if not ds.has_labels:
        raise SystemExit(f"{args.json} has no annotations: nothing to preview")
    transform = T.build_transform("train", args.crop_size, ratio_range=args.ratio_range,
                                copy_paste_p=1.0 if args.copy_paste else 0.0)
    train_set = TrainSet(ds, transform, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(ds), size=min(args.n, len(ds)), replace=False)
    samples, titles = [], []
    for i in idx:
        s = train_set.sample(0, int(i))
        samples.append((s[0], s[1]))
        titles.append(str(ds.image_ids[int(i)]))
    T.write_image_atomic(args.out, T.preview_grid(samples, titles=titles))
    print(f"wrote {args.out}: {len(samples)} samples, seed {args.seed}, copy-paste {args.copy_paste}")


if __name__ == "__main__":
    main(get_args_parser().parse_args(sys.argv[1:]))
