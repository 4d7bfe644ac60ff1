"""Statistics of a COCO set, one definition for `python -m data.coco stats` and the report's data section (SPEC §1).

    st = dataset_stats(CocoSegDataset(root, ["train.json"]))     # masks painted, images not decoded

Objects and "images with class" count annotations: an object hidden under others is still in its image, as
data.split's stratification counts it. An image with a ready mask_file (pseudo-labels) has no annotations; it counts
one object per class in its mask. Pixel shares come from the painted masks, so overlaps count once, for the class on
top, and 255 has its own slot.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from data.classes import IGNORE_INDEX, NUM_CLASSES


@dataclass
class DataStats:
    n_images: int = 0
    n_labelled: int = 0
    ann_count: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))    # objects per class
    images_with: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))  # labelled images
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, np.int64))  # last slot: 255
    cooc: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
    sizes: Counter = field(default_factory=Counter)          # (W, H) → images
    objects: list[int] = field(default_factory=list)         # per labelled image
    classes: list[list[int]] = field(default_factory=list)   # per image: its classes, sorted ([] unlabelled)

    @property
    def n_annotations(self) -> int:
        return int(self.ann_count.sum())


def dataset_stats(ds) -> DataStats:
    """One pass over a CocoSegDataset: annotations read from its index, masks painted (cached), images not decoded."""
    st = DataStats(n_images=len(ds))
    for i in range(len(ds)):
        st.sizes[ds.image_size(i)] += 1
        if not ds.is_labelled(i):
            st.classes.append([])
            continue
        st.n_labelled += 1
        hist = np.bincount(ds.load_mask(i).ravel(), minlength=256)
        st.pixels[:NUM_CLASSES] += hist[:NUM_CLASSES]
        st.pixels[NUM_CLASSES] += hist[IGNORE_INDEX]
        anns = ds.annotations(i)
        cls = [c for _, c, _ in anns] if anns else [c for c in range(1, NUM_CLASSES) if hist[c]]
        for c in cls:
            st.ann_count[c] += 1
        present = sorted(set(cls))
        st.images_with[present] += 1
        st.cooc[np.ix_(present, present)] += 1
        st.objects.append(len(cls))
        st.classes.append(present)
    return st
