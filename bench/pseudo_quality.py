"""How good are pseudo-labels? Per class, against the ground truth that `python -m data.demo --hidden-labels` keeps
for the unlabelled images (extra_gt.json / test_gt.json; any COCO file with annotations of the same images works):

    python -m data.demo --out runs/demo_scarce --train 30 --val 80 --test 0 --extra 320 --seed 0 --hidden-labels
    python bench/pseudo_quality.py --data-root runs/demo_scarce --gt extra_gt.json --pseudo runs/semi/labels_s0

Per class: precision of the kept pseudo-labelled pixels (the share of pixels labelled c that are c), recall (the
share of c's pixels labelled c, ignored pixels counting as missed), the share of c's pixels ignored, and the IoU of
the kept labels; then the kept pixels' accuracy. Images are matched by file path; the images of --pseudo without
ground truth are counted and left out. Several --pseudo folders print one block each.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES  # noqa: E402
from data.coco import CocoSegDataset  # noqa: E402


def quality(pseudo: CocoSegDataset, gt: CocoSegDataset) -> dict:
    """Pixel counts over the images both hold: conf[t, p] (t ground truth, p pseudo-label, 0..C-1, C = ignored)."""
    where = {p: i for i, p in enumerate(gt.image_paths())}
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    matched = 0
    for i, path in enumerate(pseudo.image_paths()):
        j = where.get(path)
        if j is None:
            continue
        p, t = pseudo.load_mask(i), gt.load_mask(j)  # (H, W) uint8 each
        if p.shape != t.shape:
            raise SystemExit(f"error: {path}: pseudo-label {p.shape} and ground truth {t.shape} differ in size")
        p = np.where(p == IGNORE_INDEX, NUM_CLASSES, p).astype(np.int64)
        keep = t != IGNORE_INDEX
        conf += np.bincount(t[keep].astype(np.int64) * (NUM_CLASSES + 1) + p[keep],
                            minlength=NUM_CLASSES * (NUM_CLASSES + 1)).reshape(NUM_CLASSES, NUM_CLASSES + 1)
        matched += 1
    return {"conf": conf, "matched": matched, "total": len(pseudo)}


def report(q: dict, name: str) -> list[dict]:
    conf = q["conf"]
    kept = conf[:, :NUM_CLASSES]  # (C, C) ground truth x pseudo-label, kept pixels only
    tp = np.diag(kept).astype(float)
    labelled_as = kept.sum(0)  # pixels pseudo-labelled c
    gt_pixels = conf.sum(1)  # pixels of class c (kept or ignored)
    rows = []
    print(f"== {name}: {q['matched']} of {q['total']} pseudo-labelled images have ground truth")
    print(f"{'class':<14} {'gt share':>8} {'precision':>9} {'recall':>7} {'ignored':>8} {'IoU':>6}")
    for c in range(NUM_CLASSES):
        prec = tp[c] / labelled_as[c] if labelled_as[c] else float("nan")
        rec = tp[c] / gt_pixels[c] if gt_pixels[c] else float("nan")
        ign = conf[c, NUM_CLASSES] / gt_pixels[c] if gt_pixels[c] else float("nan")
        union = labelled_as[c] + kept[c].sum() - tp[c]
        iou = tp[c] / union if union else float("nan")
        rows.append({"class": CLASSES[c], "gt_share": gt_pixels[c] / max(conf.sum(), 1), "precision": prec,
                     "recall": rec, "ignored": ign, "iou": iou})
        print(f"{CLASSES[c]:<14} {rows[-1]['gt_share']:8.2%} {prec:9.3f} {rec:7.3f} {ign:8.1%} {iou:6.3f}")
    acc = tp.sum() / max(kept.sum(), 1)
    print(f"kept pixels {kept.sum() / max(conf.sum(), 1):.1%}, their accuracy {acc:.4f}; "
          f"mean IoU of the kept labels {np.nanmean([r['iou'] for r in rows]):.4f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-root", required=True)
    p.add_argument("--gt", required=True, help="COCO file with the pool's ground truth (e.g. extra_gt.json)")
    p.add_argument("--pseudo", nargs="+", required=True, help="pseudo_label.py --out folders (or their pseudo.json)")
    p.add_argument("--json", default=None, help="also write every block's rows here")
    a = p.parse_args(argv)
    gt = CocoSegDataset(a.data_root, a.gt)
    if not gt.has_labels:
        print(f"error: {a.gt}: no annotations (python -m data.demo --hidden-labels writes extra_gt.json)",
              file=sys.stderr)
        return 2
    out = {}
    for item in a.pseudo:
        f = item if item.endswith(".json") else os.path.join(item, "pseudo.json")
        out[item] = report(quality(CocoSegDataset(a.data_root, f), gt), item)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(out, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
