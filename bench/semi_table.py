"""The README "Semi-supervised training" table from bench/semi.sh's runs: per arm the final val mIoU of each seed,
mean and range, and the paired differences against both labels-only controls (the same seed); the verdict asks what
the issue asks of a recipe: at least +0.03 mean over the better control with every paired difference positive.

    python bench/semi_table.py --exp runs/semi
    python bench/semi_table.py --exp runs/semi_imb --rare 3   # + the per-class IoU of the 3 rarest labelled classes

The rare-class table (issue: rare classes survive) ranks the classes by their labelled instances in the control A's
train.json (the arms share it) and gives each arm's final IoU of the rarest ones, mean over the seeds, against A.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.classes import CLASSES  # noqa: E402
from data.coco.checks import category_map  # noqa: E402
from imbalance_table import final as final_record  # noqa: E402  (bench/ is on the path: a script or the tests)

ARMS = [("A", "labels only"), ("Aplus", "labels only, strong views + batch mix (--labelled-pool)"),
        ("B", "offline round: pseudo-labels mixed uniformly, student afresh"),
        ("B2", "second offline round: B's student labels, a new student afresh"),
        ("Bh", "B, hybrid selection: threshold 0.6 or the class's top 80 %"),
        ("B2h", "second round of Bh: Bh's student labels (hybrid), a new student afresh"),
        ("C", "pseudo-labels as a pool: strong views, half of every batch"),
        ("Ch", "C with Bh's hybrid labels: real labels half of every batch"),
        ("Cha", "Ch, the teacher aligned to the labelled class shares (--align)"),
        ("Chaw", "Cha with weak views only (every --aug-strong-* 0)"),
        ("Bha", "Bh, the teacher aligned to the labelled class shares (--align)"),
        ("D", "C with ST++ stable-image selection"), ("E", "online EMA teacher (--unlabelled-json)"),
        ("Ew", "E, images weighted by confidence (--semi-confidence weight)")]
MARGIN = 0.03


def final_miou(run: str) -> float | None:
    """The validation mIoU at the run's last iteration, or None if it has not finished."""
    rec = final_record(run)
    return None if rec is None else rec["miou"]


def labelled_counts(run: str) -> Counter:
    """Instances per class id in the run's first --train-json (the labelled set; later ones are pseudo-labels)."""
    path = json.load(open(os.path.join(run, "args.json")))["train_json"][0]
    doc = json.load(open(path))
    ids = category_map(path, doc)  # the loader's own name matching
    return Counter(ids[a["category_id"]] for a in doc["annotations"])


def rare_table(exp: str, seeds: list[int], n: int) -> list[str]:
    """Each finished arm's final IoU of the n classes with the fewest labelled instances (present ones), mean over
    its seeds, and the mean paired difference to A; classes absent from the labels are named (no arm learns them)."""
    base = next((os.path.join(exp, f"A_s{s}") for s in seeds if final_record(os.path.join(exp, f"A_s{s}"))), None)
    if base is None:
        return []
    counts = labelled_counts(base)
    rare = sorted((c for c in counts if c != 0), key=lambda c: (counts[c], c))[:n]
    absent = [CLASSES[c] for c in range(1, len(CLASSES)) if counts[c] == 0]
    ious = {arm: {s: r["iou"] for s in seeds if (r := final_record(os.path.join(exp, f"{arm}_s{s}")))}
            for arm, _ in ARMS}
    head = ["arm (seeds)", *(f"{CLASSES[c]} ({counts[c]} labelled)" for c in rare)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, _ in ARMS:
        got = ious[arm]
        if not got:
            continue
        cells = []
        for c in rare:
            v = [got[s][c] for s in got]
            d = [got[s][c] - ious["A"][s][c] for s in got if s in ious["A"]]
            cells.append(f"{sum(v) / len(v):.3f}" + (f" ({sum(d) / len(d):+.3f})" if arm != "A" and d else ""))
        lines.append("| " + " | ".join([f"{arm} ({' '.join(map(str, sorted(got)))})", *cells]) + " |")
    lines.append(f"\nfinal IoU, mean over the seeds (mean paired difference to A); the rarest {n} classes by "
                 "labelled instances" + (f"; absent from the labels: {', '.join(absent)}" if absent else ""))
    return lines


def table(scores: dict[str, dict[int, float]], seeds: list[int]) -> list[str]:
    """scores[arm][seed] -> lines: one row per arm, then each arm against the better control."""
    head = ["arm", *(f"seed {s}" for s in seeds), "mean (range)", "paired vs A", "paired vs A+"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def mean(v: list[float]) -> float:
        return sum(v) / len(v)

    def paired(arm: str, ctl: str) -> list[float]:
        return [scores[arm][s] - scores[ctl][s] for s in seeds if s in scores.get(arm, {}) and s in scores.get(ctl, {})]
    for arm, label in ARMS:
        got = scores.get(arm, {})
        vals = [got[s] for s in seeds if s in got]
        cells = [f"{got[s]:.4f}" if s in got else "—" for s in seeds]
        stat = f"{mean(vals):.4f} ({min(vals):.4f}–{max(vals):.4f})" if vals else "not run"
        diffs = [" ".join(f"{d:+.4f}" for d in paired(arm, c)) or "—" if arm not in ("A", c) else ""
                 for c in ("A", "Aplus")]
        lines.append("| " + " | ".join([f"{arm}: {label}", *cells, stat, *diffs]) + " |")
    lines.append("")
    ctl_means = {c: mean([scores[c][s] for s in seeds if s in scores.get(c, {})])
                 for c in ("A", "Aplus") if any(s in scores.get(c, {}) for s in seeds)}
    if not ctl_means:
        return lines
    better = max(ctl_means, key=ctl_means.get)
    for arm, _ in ARMS[2:]:
        d = paired(arm, better)
        if len(d) < len(seeds):
            continue
        ok = mean(d) >= MARGIN and all(x > 0 for x in d)
        lines.append(f"{arm} vs {better} (the better control): mean {mean(d):+.4f}, paired "
                     f"{' '.join(f'{x:+.4f}' for x in d)}: "
                     + ("meets the bar (>= +0.03 mean, every pair positive)" if ok else "does not meet the bar"))
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exp", default="runs/semi")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--note", default="")
    p.add_argument("--rare", type=int, default=0, metavar="N",
                   help="also the per-class IoU of the N classes with the fewest labelled instances")
    a = p.parse_args(argv)
    scores: dict[str, dict[int, float]] = {}
    for arm, _ in ARMS:
        for s in a.seeds:
            v = final_miou(os.path.join(a.exp, f"{arm}_s{s}"))
            if v is not None:
                scores.setdefault(arm, {})[s] = v
    lines = table(scores, a.seeds)
    if a.rare:
        lines += [""] + rare_table(a.exp, a.seeds, a.rare)
    if a.note:
        lines.append(f"\nnote: {a.note}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
