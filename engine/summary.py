"""Print a table of runs' validation mIoU (best and last) from their metrics.jsonl; used by make cv / make pseudo.

    python -m engine.summary --label fold --mean runs/cv/fold0 runs/cv/fold1 ...
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys


def run_scores(run: str) -> tuple[float, float]:
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no metrics (did the run finish?)")
    vals = [json.loads(ln)["miou"] for ln in open(path) if ln.strip() and '"miou"' in ln]
    if not vals:
        raise ValueError(f"{path}: no validation record")
    return max(vals), vals[-1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser("python -m engine.summary")
    p.add_argument("runs", nargs="+")
    p.add_argument("--label", default="run")
    p.add_argument("--names", nargs="*", default=None, help="row labels (default: 0, 1, ...)")
    p.add_argument("--mean", action="store_true", help="add the mean ± std row (cross-validation folds)")
    a = p.parse_args(argv)
    names = a.names or [str(i) for i in range(len(a.runs))]
    print(f"{a.label:>8} | {'best val mIoU':>13} | {'last val mIoU':>13} | run")
    print(f"{'-' * 8}-+-{'-' * 13}-+-{'-' * 13}-+-{'-' * 20}")
    bests = []
    for name, run in zip(names, a.runs):
        try:
            best, last = run_scores(run)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        bests.append(best)
        print(f"{name:>8} | {best:>13.4f} | {last:>13.4f} | {run}")
    if a.mean and len(bests) > 1:
        mean = sum(bests) / len(bests)
        std = math.sqrt(sum((b - mean) ** 2 for b in bests) / len(bests))
        print(f"{'mean':>8} | {mean:>13.4f} | {'± ' + format(std, '.4f'):>13} |")


if __name__ == "__main__":
    main()
