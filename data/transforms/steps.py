"""The paired augmentation steps on (uint8 H×W×3 RGB image, uint8 H×W mask), NumPy/OpenCV.

Every step is a callable ``t(image, mask, rng) -> (image, mask)``; ``rng`` is a ``np.random.Generator`` and is the
only source of randomness (no global ``np.random`` / ``random``), so a sample is a pure function of its seed.
``mask`` may be None (unlabelled eval data): geometric steps then only move the image.

Semantics follow mmsegmentation 1.x (Resize, RandomResize, RandomCrop, RandomFlip, PhotoMetricDistortion, Pad) and
albumentations (RandomRotate90, Blur, GaussianBlur, MotionBlur, OneOf), as used by the competition team (SPEC §4).
Deliberate deviations are marked "Deviation:" below.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Optional, Sequence

import cv2
import numpy as np

from data.classes import IGNORE_INDEX, PIXEL_MEAN, PIXEL_STD

Mask = Optional[np.ndarray]

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
