"""Numbers for the report: data-set statistics and per-image / whole-set segmentation scores (SPEC §1, §3)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from data.classes import IGNORE_INDEX, NUM_CLASSES


@dataclass
class DataStats:
    n_images: int = 0
    n_labelled: int = 0
    ann_count: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    images_with: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))  # by annotation
    pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES + 1, np.int64))  # last slot: 255
    cooc: np.ndarray = field(default_factory=lambda: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64))
    sizes: Counter = field(default_factory=Counter)          # (W, H) → images
    objects: list[int] = field(default_factory=list)         # per labelled image
    classes: list[list[int]] = field(default_factory=list)   # per image: annotated class ids, sorted ([] unlabelled)

    @property
    def n_annotations(self) -> int:
        return int(self.ann_count.sum())


def dataset_stats(ds) -> DataStats:
    """One pass over a CocoSegDataset: annotations are read from the index, masks painted (cached), images not decoded.

    Counts come from annotations (an object hidden under others still counts); pixel shares from the painted masks,
    so overlaps count once, for the class on top. Images with a ready mask_file count the classes in their mask.
    """
    st = DataStats(n_images=len(ds))
    for i, rec in enumerate(ds.images):
        st.sizes[(int(rec["width"]), int(rec["height"]))] += 1
        if not ds.is_labelled(i):
            st.classes.append([])
            continue
        st.n_labelled += 1
        mask = ds.load_mask(i)
        hist = np.bincount(mask.ravel(), minlength=256)
        st.pixels[:NUM_CLASSES] += hist[:NUM_CLASSES]
        st.pixels[NUM_CLASSES] += hist[IGNORE_INDEX]
        anns = ds.annotations(i)
        if anns:
            cls = [c for _, c, _ in anns]
        else:  # mask_file image: one "object" per class present
            cls = [c for c in range(1, NUM_CLASSES) if hist[c]]
        for c in cls:
            st.ann_count[c] += 1
        present = sorted(set(cls))
        st.images_with[present] += 1
        st.cooc[np.ix_(present, present)] += 1
        st.objects.append(len(cls))
        st.classes.append(present)
    return st


def confusion(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """int64 (C, C), rows = ground truth, cols = prediction; ground truth 255 skipped (SPEC §3)."""
    valid = gt != IGNORE_INDEX
    idx = gt[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(cm: np.ndarray) -> dict:
    """IoU per class (None where the class is in neither ground truth nor prediction), mIoU as their mean, pixel
    accuracy, mean class accuracy over classes present in the ground truth — SPEC §3's definitions."""
    cm = np.asarray(cm, np.float64)
    tp = np.diag(cm)
    gt, pr = cm.sum(1), cm.sum(0)
    union = gt + pr - tp
    iou = [float(t / u) if u > 0 else None for t, u in zip(tp, union)]
    valid = [v for v in iou if v is not None]
    cls_acc = [float(t / g) if g > 0 else None for t, g in zip(tp, gt)]
    accs = [v for v in cls_acc if v is not None]
    total = cm.sum()
    return {"iou": iou, "miou": float(np.mean(valid)) if valid else float("nan"),
            "acc": float(tp.sum() / total) if total > 0 else float("nan"),
            "macc": float(np.mean(accs)) if accs else float("nan"), "class_acc": cls_acc}
