"""Print a table of runs' validation mIoU (best and last) from their metrics.jsonl; used by make cv / make pseudo.

    python -m engine.summary --label fold --mean runs/cv/fold0 runs/cv/fold1 ...
    python -m engine.summary --label round runs/p/round0 runs/p/round1 --controls - runs/p/round1_control

With --controls (one per run, "-" for none) each run is set against its control, the same student trained without
the run's extra ingredient (for a pseudo-label round: same init and iterations, labels only); a round counts as a
gain only where it beats its control, since continued training alone often gains as much.
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
    p.add_argument("--versus", default=None, metavar="LABEL",
                   help="two runs (a run and its control): one line 'LABEL vs control: X vs Y (gain +Z)' of their "
                        "final validation mIoU (make semi)")
    p.add_argument("--controls", nargs="*", default=None,
                   help="one control run per run ('-' = none): adds its best val mIoU and the run's gain over it")
    a = p.parse_args(argv)
    names = a.names or [str(i) for i in range(len(a.runs))]
    if a.controls is not None and len(a.controls) != len(a.runs):
        p.error(f"--controls: {len(a.controls)} given for {len(a.runs)} runs (one each, '-' for none)")

    def scores(run: str) -> tuple[float, float]:
        try:
            return run_scores(run)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
    if a.versus is not None:
        if len(a.runs) != 2:
            p.error(f"--versus: two runs (a run and its control), got {len(a.runs)}")
        (_, x), (_, y) = scores(a.runs[0]), scores(a.runs[1])
        if x <= y:  # e.g. plentiful labels on a short schedule: half of every batch then costs labelled samples
            print(f"the control scores as high or higher: carry on with {os.path.join(a.runs[1], 'best.pt')} "
                  f"(README \"Semi-supervised training\": where the gain vanishes)")
        print(f"{a.versus} vs control: {x:.4f} vs {y:.4f} (gain {x - y:+.4f})")
        return
    ctl_head = f" | {'control best':>12} | {'gain':>8}" if a.controls is not None else ""
    print(f"{a.label:>8} | {'best val mIoU':>13} | {'last val mIoU':>13}{ctl_head} | run")
    print(f"{'-' * 8}-+-{'-' * 13}-+-{'-' * 13}{'-+-' + '-' * 12 + '-+-' + '-' * 8 if ctl_head else ''}-+-{'-' * 20}")
    bests = []
    top = (-1.0, "")  # the best checkpoint among runs and controls: the one to carry on with
    for k, (name, run) in enumerate(zip(names, a.runs)):
        best, last = scores(run)
        bests.append(best)
        top = max(top, (best, run))
        ctl = ""
        if a.controls is not None:
            c = a.controls[k]
            if c == "-":
                ctl = f" | {'':>12} | {'':>8}"
            else:
                cbest = scores(c)[0]
                top = max(top, (cbest, c))
                verdict = "gain" if best > cbest else "no gain"
                ctl = f" | {cbest:>12.4f} | {best - cbest:>+8.4f}"
                run = f"{run} ({verdict} over {c})"
        print(f"{name:>8} | {best:>13.4f} | {last:>13.4f}{ctl} | {run}")
    if a.controls is not None:
        print(f"best val mIoU: {top[0]:.4f} in {top[1]} (its best.pt is the model to carry on with)")
    if a.mean and len(bests) > 1:
        mean = sum(bests) / len(bests)
        std = math.sqrt(sum((b - mean) ** 2 for b in bests) / len(bests))
        print(f"{'mean':>8} | {mean:>13.4f} | {'± ' + format(std, '.4f'):>13} |")


if __name__ == "__main__":
    main()
