"""How good are pseudo-labels at each confidence threshold? Measured on labelled images the teacher did not train on.

    python bench/pseudo_threshold.py --ckpt runs/demo/best.pt --data-root demo_data --json val.json --tta

For each threshold: the share of pixels kept (merged max probability ≥ t), the pixel accuracy of the kept labels, and
the mIoU of the kept labels (ignored pixels excluded), next to the team's choice (t = 0: every pixel kept). The
default of pseudo_label.py comes from this table (README, "Pseudo-labelling").
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import models  # noqa: E402
from csrc import ops  # noqa: E402
from data.coco import CocoSegDataset  # noqa: E402
from engine.predict import TTA_RATIOS, tta_accumulate  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt", required=True)
    p.add_argument("--data-root", default="demo_data")
    p.add_argument("--json", default="val.json")
    p.add_argument("--tta", action="store_true")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95])
    a = p.parse_args()
    model = models.load_model(a.ckpt).eval()
    ds = CocoSegDataset(a.data_root, os.path.join(a.data_root, a.json))
    C = model.num_classes
    cms = {t: torch.zeros(C, C, dtype=torch.int64) for t in a.thresholds}
    kept = {t: 0 for t in a.thresholds}
    total = 0
    scales = list(TTA_RATIOS) if a.tta else [None]
    for i in range(len(ds)):
        s = ds[i]
        img = torch.from_numpy(s["image"]).permute(2, 0, 1)[None].contiguous()  # (1, 3, H, W) uint8
        labels, maxp = tta_accumulate([model], img, scales, a.tta).argmax()
        gt = torch.from_numpy(s["mask"])[None].long()
        total += gt.numel()
        for t in a.thresholds:
            keep = maxp >= t
            kept[t] += int(keep.sum())
            tgt = torch.where(keep, gt, torch.full_like(gt, 255))  # dropped pixels are ignored, as in training
            cms[t] += ops.confusion_matrix(labels, tgt, C)
    print(f"teacher {a.ckpt} on {len(ds)} images of {a.json}, {'TTA' if a.tta else 'single-scale'}")
    print(f"{'threshold':>9} | {'kept px':>8} | {'kept acc':>8} | {'kept mIoU':>9} | {'worst class IoU':>15}")
    for t in a.thresholds:
        r = ops.miou(cms[t])
        iou = r["iou"]
        worst = int(torch.nan_to_num(iou, nan=2.0).argmin())
        print(f"{t:>9.2f} | {kept[t] / total:>8.1%} | {r['acc']:>8.4f} | {r['miou']:>9.4f} | "
              f"{iou[worst]:.3f} (class {worst})")


if __name__ == "__main__":
    main()
