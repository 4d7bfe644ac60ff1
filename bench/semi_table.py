"""The README "Semi-supervised training" table from bench/semi.sh's runs: per arm the final val mIoU of each seed,
mean and range, and the paired differences against both labels-only controls (the same seed); the verdict asks what
the issue asks of a recipe: at least +0.03 mean over the better control with every paired difference positive.

    python bench/semi_table.py --exp runs/semi
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ARMS = [("A", "labels only"), ("Aplus", "labels only, strong views + batch mix (--labelled-pool)"),
        ("B", "offline round: pseudo-labels mixed uniformly, student afresh"),
        ("B2", "second offline round: B's student labels, a new student afresh"),
        ("Bh", "B, hybrid selection: threshold 0.6 or the class's top 80 %"),
        ("C", "pseudo-labels as a pool: strong views, half of every batch"),
        ("D", "C with ST++ stable-image selection"), ("E", "online EMA teacher (--unlabelled-json)"),
        ("Ew", "E, images weighted by confidence (--semi-confidence weight)")]
MARGIN = 0.03


def final_miou(run: str) -> float | None:
    """The validation mIoU at the run's last iteration, or None if it has not finished."""
    try:
        it = json.load(open(os.path.join(run, "args.json")))["iters"]
        recs = [json.loads(ln) for ln in open(os.path.join(run, "metrics.jsonl")) if '"miou"' in ln]
    except (OSError, ValueError, KeyError):
        return None
    return next((r["miou"] for r in recs if r["iter"] == it), None)


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
    a = p.parse_args(argv)
    scores: dict[str, dict[int, float]] = {}
    for arm, _ in ARMS:
        for s in a.seeds:
            v = final_miou(os.path.join(a.exp, f"{arm}_s{s}"))
            if v is not None:
                scores.setdefault(arm, {})[s] = v
    lines = table(scores, a.seeds)
    if a.note:
        lines.append(f"\nnote: {a.note}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
