"""Copy-paste (SPEC §4): another training image's objects pasted onto a sample, with their labels.

    step = CopyPaste(DatasetSource(dataset), p=0.5)      # or build_transform("train", copy_paste_p=0.5)
    image, mask = step(image, mask, rng)

data.loader.TrainSet gives each CopyPaste step without a source one that draws from its own dataset.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import cv2
import numpy as np

from data.classes import IGNORE_INDEX
from data.transforms.steps import MASK_INTERP, _histogram

Instances = list  # list[(class_id, bool mask (H, W))], painting order (largest first)
Source = Callable[[np.random.Generator], tuple]  # rng -> (image, mask, instances)


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
