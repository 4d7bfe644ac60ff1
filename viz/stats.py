"""Numbers for the report: per-image / whole-set segmentation scores (SPEC §3)."""
from __future__ import annotations

import numpy as np

from data.classes import IGNORE_INDEX, NUM_CLASSES


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
