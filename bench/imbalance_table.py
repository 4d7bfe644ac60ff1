"""The README "Rare classes" table from bench/imbalance.sh's runs: final val mIoU, the three rarest classes' IoU
(Battery, Clothing, Metal: 63, 177 and 562 annotations in the competition) and the lowest class IoU, per row;
--balance as mean and range over its seeds; pseudo-label rounds against their control (bench/imbalance.sh names
each row's control).

    python bench/imbalance_table.py --exp runs/imbalance
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.classes import CLASSES  # noqa: E402

RARE = ("Battery", "Clothing", "Metal")
ROWS = [("plain", "plain CE"), ("class_weight", "--class-weight auto"),
        ("ohem", "--ohem 0.7 --ohem-min-kept 3000"), ("focal", "--loss focal:1"), ("dice", "--loss ce:1 dice:0.5"),
        ("lovasz", "--loss ce:1 lovasz:0.5"), ("rcs", "--rare-class-sampling 0.01"),
        ("balance_s0", "--balance, seed 0"), ("balance_s1", "--balance, seed 1"), ("balance_s2", "--balance, seed 2"),
        ("pl_control", "round 1 control: teacher init, labels only"),
        ("pl_global", "round 1, global threshold 0.6"), ("pl_cbst", "round 1, class-balanced keep 0.5"),
        ("pl_global_fresh", "round 1 afresh (no --init), global 0.6; control: plain CE"),
        ("pl_cbst_fresh", "round 1 afresh (no --init), class-balanced 0.5; control: plain CE"),
        ("pl_bal_control", "--balance teacher: round 1 control, labels only"),
        ("pl_bal_global", "--balance teacher: round 1, global 0.6"),
        ("pl_bal_cbst", "--balance teacher: round 1, class-balanced 0.5")]


def final(run: str) -> dict | None:
    """The validation record at the run's last iteration, or None if the run has not finished."""
    try:
        it = json.load(open(os.path.join(run, "args.json")))["iters"]
        recs = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl")) if '"miou"' in ln]
    except (OSError, ValueError, KeyError):
        return None
    return next((r for r in recs if r["iter"] == it), None)


def cells(rec: dict) -> list[str]:
    iou = rec["iou"]
    rare = [iou[CLASSES.index(n)] for n in RARE]
    known = [(v, c) for c, v in enumerate(iou) if v is not None]
    low_v, low_c = min(known)
    return [f"{rec['miou']:.4f}", *("n/a" if v is None else f"{v:.3f}" for v in rare), f"{low_v:.3f} {CLASSES[low_c]}"]


def balance_summary(bal: list[dict]) -> list[str]:
    """The --balance row: mean (range) over the seeds that finished."""
    if len(bal) < 2:
        return []

    def stat(vals: list[float]) -> str:
        return f"{sum(vals) / len(vals):.3f} ({min(vals):.3f}–{max(vals):.3f})"
    m = [r["miou"] for r in bal]
    rare = [stat([r["iou"][CLASSES.index(n)] or 0.0 for r in bal]) for n in RARE]
    low = stat([min(v for v in r["iou"] if v is not None) for r in bal])
    return ["| " + " | ".join([f"**--balance, mean (range) of {len(bal)} seeds**",
                               f"{sum(m) / len(m):.4f} ({min(m):.4f}–{max(m):.4f})", *rare, low]) + " |"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--exp", default="runs/imbalance")
    p.add_argument("--note", default="")
    a = p.parse_args(argv)
    head = ["row", "val mIoU", *(f"{n} IoU" for n in RARE), "lowest class IoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    recs = {}
    for name, label in ROWS:
        rec = final(os.path.join(a.exp, name))
        recs[name] = rec
        lines.append("| " + " | ".join([label, *(cells(rec) if rec else ["not run"] + [""] * (len(head) - 2))]) + " |")
        if name == "balance_s2":
            lines += balance_summary([recs[f"balance_s{k}"] for k in range(3) if recs.get(f"balance_s{k}")])
    lines.append("")
    # The seed-to-seed spread of the same recipe (--balance's seeds) is the noise a gain must clear to mean anything.
    seeds = [recs[f"balance_s{k}"]["miou"] for k in range(3) if recs.get(f"balance_s{k}")]
    spread = max(seeds) - min(seeds) if len(seeds) > 1 else 0.0
    for fmt, control, what in (("pl_{}", recs.get("pl_control"), "plain teacher, student from it"),
                               ("pl_{}_fresh", recs.get("plain"), "plain teacher, student afresh"),
                               ("pl_bal_{}", recs.get("pl_bal_control"), "--balance teacher, student from it")):
        for mode in ("global", "cbst"):
            r = recs.get(fmt.format(mode))
            if r and control:
                gain = r["miou"] - control["miou"]
                verdict = "a gain" if gain > 0 else "no gain"
                if 0 < gain <= spread:
                    verdict = f"above the control, but within the {len(seeds)} seeds' spread {spread:.4f}"
                lines.append(f"pseudo-label round ({what}), {mode}: {r['miou']:.4f} vs control {control['miou']:.4f} "
                             f"({gain:+.4f}: {verdict})")
    if a.note:
        lines.append(f"\nnote: {a.note}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
