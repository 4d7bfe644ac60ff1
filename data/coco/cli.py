"""The data tools: `python -m data.coco masks|stats` (data/coco/__main__.py runs main).

    python -m data.coco masks --data-root R --json J --out DIR [--skip-invalid]   # one PNG label map per image
    python -m data.coco stats --data-root R --json J [--skip-invalid]              # per-class table (data.stats)

`masks` writes DIR/<file_name with .png> (sub-folders kept), a plain 8-bit single-channel PNG whose pixel values are
class ids, written atomically. Both commands exit 2 with `error: <file>: <what>` on the first invalid input, or with
`--skip-invalid` skip the broken image/annotation and list every skip on stderr at the end.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from data.coco.checks import DataError
from data.coco.dataset import CocoSegDataset
from data.io import output_collisions, output_relpath, write_label_png
from data.stats import dataset_stats


def _mask_path(out_dir: str, file_name: str) -> str:
    return os.path.join(out_dir, output_relpath(file_name, ".png"))  # never outside out_dir, even for '..' names


def cmd_masks(args: argparse.Namespace) -> int:
    ds = CocoSegDataset(args.data_root, args.json, skip_invalid=args.skip_invalid, cache_masks=False,
                        verify_images=False)  # decoded below, once
    clash = output_collisions(ds.image_ids, ".png")
    if clash:  # the second mask would silently replace the first
        raise SystemExit(f"error: {args.json}: images {clash[0]!r} and {clash[1]!r} would share one mask file")
    written = 0
    for i in range(len(ds)):
        e = ds._entries[i]
        if not ds.is_labelled(i):
            ds._problem(f"{e.where()}: no labels (the file has no 'annotations' and the image no 'mask_file')")
            continue
        try:
            ds.load_image(i)  # a mask for an unreadable image is not a valid output
            mask = ds.load_mask(i)
        except DataError as err:
            ds._problem(str(err))
            continue
        write_label_png(_mask_path(args.out, ds.image_ids[i]), mask)  # type: ignore[arg-type]
        written += 1
    print(f"wrote {written} masks to {args.out}")
    ds.report_skips()
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    ds = CocoSegDataset(args.data_root, args.json, skip_invalid=args.skip_invalid, cache_masks=False,
                        verify_images=True)  # an unreadable image is an error (or a listed skip), as for masks
    st = dataset_stats(ds)
    total = max(int(st.pixels.sum()), 1)
    print(f"data root {args.data_root}  json {', '.join(args.json)}")
    print(f"images {st.n_images} (labelled {st.n_labelled})  annotations {st.n_annotations}")
    print("image sizes (WxH): " + ", ".join(f"{w}x{h} ×{n}" for (w, h), n in st.sizes.most_common()))
    print()
    print(f"{'id':>3}  {'class':<14}{'annotations':>12}{'pixel %':>10}{'images':>8}{'image %':>9}")
    for c in range(NUM_CLASSES):
        na = "-" if c == 0 else str(int(st.ann_count[c]))
        share_img = 100.0 * st.images_with[c] / max(st.n_labelled, 1)
        print(f"{c:>3}  {CLASSES[c]:<14}{na:>12}{100.0 * st.pixels[c] / total:>10.2f}{int(st.images_with[c]):>8}"
              f"{share_img:>9.1f}")
    if st.pixels[NUM_CLASSES]:
        print(f"{IGNORE_INDEX:>3}  {'(ignore)':<14}{'-':>12}{100.0 * st.pixels[NUM_CLASSES] / total:>10.2f}")
    ds.report_skips()
    return 0


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data.coco",
                                description="Label maps and per-class statistics of a COCO root.")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, helptext in (("masks", "write one PNG label map per image"), ("stats", "per-class statistics")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--data-root", required=True, help="directory the file_names are relative to")
        s.add_argument("--json", required=True, nargs="+", help="COCO file(s), concatenated in order")
        if name == "masks":
            s.add_argument("--out", required=True, help="output directory (sub-folders of file_name kept)")
        s.add_argument("--skip-invalid", action="store_true", help="skip broken images/annotations, list them")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # skips are listed by report_skips; no duplicate warning line
    try:
        return cmd_masks(args) if args.cmd == "masks" else cmd_stats(args)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
