"""A browsable static report: data statistics and gallery, training runs (curves, per-class IoU, confusion matrix,
worst images with error maps), a submission CSV, pseudo-labels, and the augmentations. Opens from disk, no server.

    make report                                   # EXP's run on DATA_ROOT → $(EXP)/report/index.html
    python visualize.py --data-root demo_data --json train.json --run runs/demo --out runs/demo/report
    python visualize.py --data-root R --json train.json --csv runs/x/submission.csv --pseudo runs/x/pseudo_r1 \\
        --preview-aug --out site
    python visualize.py --data-root R --json val.json --run runs/a runs/b --out site      # compare runs

Missing or broken inputs stop it with exit code 2 and one line naming the file.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import time

from engine.cli import cli_errors
from engine.predict import add_amp_arg, add_mode_args, add_winograd_arg


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", required=True, help="the COCO root the file_names are relative to")
    p.add_argument("--json", nargs="+", required=True, help="COCO file(s) for the data section (path, or under root)")
    p.add_argument("--out", default="site", help="site folder; index.html goes there, pictures under img/")
    p.add_argument("--run", nargs="+", default=[], help="training run folder(s): args.json, metrics.jsonl, best.pt")
    p.add_argument("--eval-json", default=None, help="JSON the runs' checkpoints are scored on (default: the "
                   "run's val_json from args.json)")
    p.add_argument("--csv", default=None, help="a submission CSV to decode and show over its images")
    p.add_argument("--pseudo", default=None, help="a pseudo-label folder holding pseudo.json")
    p.add_argument("--preview-aug", action="store_true", help="show train-preset samples, with copy-paste")
    p.add_argument("--aug-n", type=int, default=8, help="samples in the augmentation preview")
    p.add_argument("--aug-crop-size", type=int, default=512, help="train-preset crop for the preview")
    p.add_argument("--max-images", type=int, default=200, help="per gallery, and images each run is evaluated on")
    p.add_argument("--worst", type=int, default=24, help="worst images shown per run")
    p.add_argument("--thumb", type=int, default=512, help="longest side of the pictures written")
    p.add_argument("--device", default="auto", help="for the runs' predictions: auto, cpu, cuda")
    # The runs' predictions take infer.py's flags and defaults, so their mIoU is infer.py --eval's single-scale one.
    add_amp_arg(p)
    add_mode_args(p)
    add_winograd_arg(p)
    p.add_argument("--seed", type=int, default=0, help="for sampling galleries and augmentations")
    p.add_argument("--skip-invalid", action="store_true", help="skip broken images/annotations in --json")
    return p


def main(args: argparse.Namespace) -> str:
    from data.coco import CocoSegDataset, DataError
    from viz import ReportError
    from viz.data_section import data_section
    from viz.preview import aug_section
    from viz.pseudo_section import pseudo_section
    from viz.report import Ctx, check_inputs
    from viz.run_section import run_sections
    from viz.site import SiteWriter, page
    from viz.submission_section import submission_section

    t0 = time.time()
    try:
        jsons = check_inputs(args.data_root, args.json, args.run, args.csv, args.pseudo)
        ctx = Ctx(SiteWriter(args.out), args.data_root, args.thumb, args.max_images, args.seed)
        ds = CocoSegDataset(args.data_root, jsons, skip_invalid=args.skip_invalid)
        sections = [data_section(ctx, ds, jsons)]
        if args.run:
            sections += run_sections(ctx, args.run, args.eval_json, args, args.worst)
        if args.csv:
            sections.append(submission_section(ctx, args.csv))
        if args.pseudo:
            sections.append(pseudo_section(ctx, args.pseudo))
        if args.preview_aug:
            sections.append(aug_section(ctx, ds, args.aug_n, args.aug_crop_size))
    except (ReportError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    index = ctx.site.finish(page("trashseg report", [f"data root {args.data_root} · {', '.join(jsons)} · {now}"],
                                 sections))
    print(f"wrote {index} ({len(ctx.site.written)} files, {time.time() - t0:.1f}s)")
    return index


if __name__ == "__main__":
    with cli_errors():
        main(get_args_parser().parse_args())
