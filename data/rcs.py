"""Class statistics of a training set and DAFormer's rare-class sampling (RCS) of its images.

    counts = class_pixel_counts(CocoSegDataset(root, ["train.json"]))        # (N, C) int64, labels only
    w = rcs_image_weights(counts, temperature=0.01)                          # (N,) float64, sums to 1
    build_train_loader(..., sample_weights=w)                                # a seeded, resumable weighted stream

RCS (Hoyer et al. 2022, DAFormer; SPEC §4): f_c = class c's share of the training set's labelled pixels;
P(c) ∝ exp((1 − f_c) / T) over the classes present; sample a class, then uniformly one of the n_c images that contain
it, so P(image i) = Σ_c P(c) · [i contains c] / n_c. Small T concentrates the draws on the rarest classes
(DAFormer's default T = 0.01); T → ∞ samples classes uniformly.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from data.classes import NUM_CLASSES


def class_pixel_counts(dataset, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """(N, C) int64 pixels of each class in each image's label map (255 and out-of-range values not counted).

    Reads masks only (no image decoding): about 1 ms per 256² demo image."""
    out = np.zeros((len(dataset), num_classes), np.int64)
    for i in range(len(dataset)):
        m = dataset.load_mask(i)
        if m is None:
            raise ValueError(f"image {dataset.image_ids[i]} has no labels: class statistics need a labelled set")
        out[i] = np.bincount(m.reshape(-1), minlength=256)[:num_classes]
    return out


def rare_first(values, gt_pixels) -> list[int]:
    """Class indices by ground-truth pixel count, rarest first (ties by id); classes absent from the set last.
    (Validation logs and the report list per-class IoU in this order, so the classes that decide mIoU come first.)"""
    n = [float(x) for x in gt_pixels]
    return sorted(range(len(values)), key=lambda c: (n[c] <= 0, n[c], c))


_CACHE: dict = {}


def cached_class_pixel_counts(dataset, num_classes: int = NUM_CLASSES, log=None) -> np.ndarray:
    """class_pixel_counts, computed once per dataset object and process (class weights and RCS share it)."""
    key = (id(dataset), num_classes)
    if key not in _CACHE:
        t0 = time.perf_counter()
        _CACHE[key] = (dataset, class_pixel_counts(dataset, num_classes))  # keep dataset alive: id stays unique
        if log:
            log(f"class pixel counts of {len(dataset)} training images in {time.perf_counter() - t0:.1f} s")
    return _CACHE[key][1]


def rcs_class_probs(pixel_totals: np.ndarray, temperature: float) -> np.ndarray:
    """(C,) P(c) ∝ exp((1 − f_c) / T) for classes with pixels, 0 for absent ones (nothing to sample)."""
    if temperature <= 0:
        raise ValueError(f"rare-class sampling temperature must be > 0, got {temperature}")
    n = np.asarray(pixel_totals, np.float64)
    if n.sum() <= 0:
        raise ValueError("rare-class sampling: the training set has no labelled pixels")
    f = n / n.sum()
    present = n > 0
    logit = np.where(present, (1 - f) / temperature, -np.inf)
    logit = logit - logit[present].max()  # exp of (1 − f)/0.01 reaches e^100: softmax form
    p = np.exp(logit)
    return p / p.sum()


def rcs_image_weights(counts: np.ndarray, temperature: float, min_pixels: int = 1,
                      class_probs: Optional[np.ndarray] = None) -> np.ndarray:
    """(N,) probability of drawing each image: Σ_c P(c) · [counts[i, c] ≥ min_pixels] / n_c.

    A class that no image holds with ``min_pixels`` pixels gives its share back to the others (renormalised)."""
    counts = np.asarray(counts)
    has = counts >= max(int(min_pixels), 1)  # (N, C)
    pc = rcs_class_probs(counts.sum(0), temperature) if class_probs is None else np.asarray(class_probs, np.float64)
    n_c = has.sum(0)  # (C,)
    per_image = np.where(n_c > 0, pc / np.maximum(n_c, 1), 0.0)  # (C,) probability of each image holding c
    w = (has * per_image).sum(1)  # (N,)
    if w.sum() <= 0:
        raise ValueError("rare-class sampling: no image contains any class")
    return w / w.sum()
