"""Label unlabelled images with one teacher or an ensemble of teachers (TTA), for the next student to train on.

    make pseudo ROUNDS=3                              # teacher → labels → student → val mIoU, round after round
    python pseudo_label.py --ckpt runs/r0/best.pt --data-root /data --json test.json extra.json \
        --tta --out runs/pl1                          # → runs/pl1/pseudo.json + PNG label maps
    python train.py --data-root /data --train-json train.json runs/pl1/pseudo.json --out runs/r1
    torchrun --nproc_per_node 8 pseudo_label.py ...   # images sharded across GPUs

Pixels whose merged maximum probability is below --threshold become 255 (ignored by the loss). The default comes
from measurements on the demo data, in README "Pseudo-labelling". With --threshold-mode class-balanced --keep P
(CBST), each predicted class keeps its P most confident share instead, so rare classes are not dropped:
    python pseudo_label.py ... --threshold-mode class-balanced --keep 0.5     # make pseudo PSEUDO_ARGS="..."
With --threshold-mode hybrid a pixel is kept if it clears --threshold or is in its class's top --keep share: the global
rule's labels, and no class below --keep of its pixels (a class the teacher grows unsure of is not erased).
With --align train.json (distribution alignment, ReMixMatch) each class's probability is first scaled by its labelled
pixel share over the teacher's mean probability on the images being labelled (a first pass over them), so a class
the teacher under-predicts (the rare ones, with few labels) gets its pixels back from the common classes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

import models
from data.classes import CLASSES, IGNORE_INDEX
from data.coco import CocoSegDataset, DataError
from data.loader import build_eval_loader
from engine import dist as D
from data.rcs import class_pixel_counts
from engine.pseudo import ClassBalancedSelector, align, alignment_weights, quantise, stability, stable_subset
from data.io import atomic_write_text, output_collisions, output_relpath, resolve_json, write_palette_png
from engine.cli import ImageProgress, cli_errors, gather_lists, report_skips
from engine.predict import add_inference_args, apply_inference_layout, apply_winograd, forward_padded, \
    inference_settings, tta_accumulate, tta_views

DEFAULT_THRESHOLD = 0.6  # README "Pseudo-labelling": the kept-label mIoU peaks here on held-out data


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("trashseg pseudo_label", description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt", nargs="+", required=True, help="teacher checkpoint(s); several = soft ensemble")
    p.add_argument("--data-root", default="demo_data")
    p.add_argument("--json", nargs="+", default=["test.json"], help="COCO image lists to label")
    p.add_argument("--out", required=True, help="output folder (never inside --data-root)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="0 keeps every pixel (the team's)")
    p.add_argument("--threshold-mode", default="global", choices=["global", "class-balanced", "hybrid"],
                   help="global: one --threshold; class-balanced: CBST, per class the top --keep share by "
                        "confidence; hybrid: a pixel clearing --threshold or in its class's top --keep share (no "
                        "class keeps less than --keep of its pixels, none fewer than global keeps)")
    p.add_argument("--keep", type=float, default=0.5,
                   help="class-balanced / hybrid: share of each class's pixels kept (at least, for hybrid)")
    p.add_argument("--align", default=None, metavar="JSON",
                   help="distribution alignment: scale each class's probability by its labelled pixel share in JSON "
                        "(the teacher's train.json) over its mean probability on the images being labelled, then "
                        "select (a first pass over the images; a class with no labelled pixels keeps weight 1)")
    p.add_argument("--stable-ckpts", nargs="+", default=None, metavar="CKPT",
                   help="the teacher's earlier checkpoints (e.g. its iter_N.pt): pseudo.json lists only the "
                        "--stable-share of images whose labels these agree with most (ST++ stable-image selection)")
    p.add_argument("--stable-share", type=float, default=0.5, help="with --stable-ckpts: share of images listed")
    add_inference_args(p)  # views, --mode, --batch-size, --workers, --amp, --compile, --winograd, --device
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip unreadable/corrupt images and bad records (listed at the end; they get no pseudo-label)")
    return p


def main(args: argparse.Namespace) -> dict:
    info = D.init(args.device)
    dev = info.device
    amp, mode = inference_settings(args, dev)
    out = os.path.abspath(args.out)
    root = os.path.abspath(args.data_root)
    if out == root or out.startswith(root + os.sep):
        sys.exit(f"error: --out {args.out} is inside --data-root {args.data_root}: pseudo-labels must never be "
                 f"mixed with the real data")
    if not 0.0 <= args.threshold < 1.0:
        sys.exit(f"error: --threshold must be in [0, 1), got {args.threshold}")
    if not 0.0 < args.keep <= 1.0:
        sys.exit(f"error: --keep must be in (0, 1], got {args.keep}")
    jsons = [resolve_json(j, args.data_root) for j in args.json]
    teachers = []
    for c in args.ckpt:
        try:
            teachers.append(models.load_model(c, map_location="cpu").to(dev).eval())
        except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
            sys.exit(f"error: {c}: {e}")
    earlier = []
    for c in args.stable_ckpts or []:
        try:
            earlier.append(models.load_model(c, map_location="cpu").to(dev).eval())
        except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
            sys.exit(f"error: --stable-ckpts {c}: {e}")
    if not 0.0 < args.stable_share <= 1.0:
        sys.exit(f"error: --stable-share must be in (0, 1], got {args.stable_share}")
    channels_last = apply_inference_layout(teachers + earlier, args, dev, amp)
    apply_winograd(teachers + earlier, args, dev, amp)
    C = teachers[0].num_classes
    if any(t.num_classes != C for t in teachers):
        sys.exit(f"error: teachers disagree on the class count: {[t.num_classes for t in teachers]}")
    try:
        ds = CocoSegDataset(args.data_root, jsons, skip_invalid=args.skip_invalid, verify_images=False)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if len(ds) == 0:
        sys.exit(f"error: {jsons}: no images to label")
    clash = output_collisions(ds.image_ids, ".png")
    if clash:  # one PNG would silently carry the other image's labels
        sys.exit(f"error: images {clash[0]!r} and {clash[1]!r} would share one pseudo-label PNG; rename one")
    scales, flip = tta_views(args)

    os.makedirs(out, exist_ok=True)
    loader = build_eval_loader(ds, batch_size=args.batch_size, workers=args.workers, rank=info.rank,
                               world_size=info.world_size, skip_invalid=args.skip_invalid)
    pix = torch.zeros(C, dtype=torch.float64)  # pixels predicted as each class
    ign = torch.zeros(C, dtype=torch.float64)  # of those, below the threshold
    entries, skipped, stable = [], [], {}  # stable: image index -> stability (--stable-ckpts)
    # class-balanced: thresholds need every image's confidences first; labels wait here (3 bytes a pixel).
    # hybrid also holds whether each pixel clears the global threshold (1 byte a pixel more).
    cbst = ClassBalancedSelector(C, args.keep) if args.threshold_mode in ("class-balanced", "hybrid") else None
    hybrid = args.threshold_mode == "hybrid"
    held = []

    def write(labels: torch.Tensor, low: torch.Tensor, iid: str, index: int) -> None:
        nonlocal pix, ign
        pix += torch.bincount(labels.reshape(-1), minlength=C).double()
        ign += torch.bincount(labels[low], minlength=C).double()
        labels[low] = IGNORE_INDEX
        rel = output_relpath(iid, ".png")  # inside --out even for absolute or '..' file_names
        write_palette_png(os.path.join(out, rel), labels.to(torch.uint8).numpy())
        rec = dict(ds.images[index])
        rec.pop("mask_file", None)
        rec["mask_file"] = rel  # relative to pseudo.json's folder
        entries.append((index, rec))

    weights = (alignment(args, ds, loader, teachers, scales, flip, amp, channels_last, mode, C, info, dev)
               if args.align else None)

    bar = ImageProgress(len(ds), "pseudo-label", info)
    for index, iid, img, acc, error in teacher_views(loader, teachers, scales, flip, amp, channels_last, mode,
                                                     args.compile, dev, bar):
        if error:  # a worker could not load it (--skip-invalid): no label rather than a wrong one
            skipped.append(error)
            continue
        labels, maxp = acc.argmax() if weights is None else align(acc.probs(inplace=True), weights)  # (1, h, w)
        labels, maxp = labels[0].long().cpu(), maxp[0].float().cpu()
        if earlier:  # each earlier checkpoint's single-view labels against the final teacher's
            x = teachers[0].normalize(img)  # (1, 3, h, w)
            with torch.no_grad():
                preds = [forward_padded(m, x, amp, channels_last).argmax(1)[0].cpu() for m in earlier]  # (h, w) each
            stable[index] = stability(labels, preds, C)
        if cbst is None:
            write(labels, maxp < args.threshold, iid, index)
        else:
            q = quantise(maxp)  # (h, w)
            cbst.add(labels, q)
            held.append((labels.to(torch.uint8), q.numpy().astype(np.uint16), iid, index,
                         (maxp >= args.threshold).numpy() if hybrid else None))
    skipped = ds.skipped + gather_lists(skipped, info)
    thr = None
    if cbst is not None:
        if info.enabled:  # one threshold per class over the whole set: every rank's histogram
            hists = [None] * info.world_size
            torch.distributed.all_gather_object(hists, cbst.hist)
            cbst.merge(hists)
        thr = cbst.thresholds()  # (C,) quantised levels
        for labels, q, iid, index, above in held:
            labels = labels.long()
            low = cbst.low(labels, torch.from_numpy(q.astype(np.int32)), thr)  # (h, w) below the class's level
            if above is not None:  # hybrid: the global threshold keeps a pixel too
                low &= ~torch.from_numpy(above)
            write(labels, low, iid, index)
        held.clear()
    if info.enabled:
        gathered = [None] * info.world_size
        torch.distributed.all_gather_object(gathered, (entries, pix, ign))
        entries = [e for g in gathered for e in g[0]]
        pix = sum(g[1] for g in gathered)
        ign = sum(g[2] for g in gathered)
    if earlier:
        if info.enabled:
            parts = [None] * info.world_size
            torch.distributed.all_gather_object(parts, stable)
            stable = {k: v for part in parts for k, v in part.items()}
        keep = stable_subset(stable, args.stable_share)
        entries = [e for e in entries if e[0] in keep]
    entries.sort(key=lambda e: e[0])
    # Ids are renumbered: each source COCO file numbers its own images (val.json and test.json both from 0), so
    # copied ids would collide and pseudo.json would fail to load ("duplicate image id"). The dataset position is
    # unique; the file_name stays the image's identity, and the source's id is kept for reference.
    for k, (_, rec) in enumerate(entries):
        rec["source_id"] = rec["id"]
        rec["id"] = k
    share = {CLASSES[c] if c < len(CLASSES) else str(c): (float(ign[c] / pix[c]) if pix[c] > 0 else None)
             for c in range(C)}
    rule = (f"threshold {args.threshold}" if cbst is None else
            (f"hybrid: threshold {args.threshold} or " if hybrid else "")
            + f"class-balanced (CBST) keep {args.keep}: thresholds " + " ".join(
                f"{CLASSES[c] if c < len(CLASSES) else c} {float(thr[c]) / 65535:.3f}" for c in range(C)
                if pix[c] > 0))
    total_ign = float(ign.sum() / pix.sum())
    if info.is_main:
        doc = {
            "info": {"description": "trashseg pseudo-labels", "teachers": [os.path.abspath(c) for c in args.ckpt],
                     "threshold": args.threshold, "threshold_mode": args.threshold_mode,
                     "keep": args.keep if cbst is not None else None,
                     "class_thresholds": None if thr is None else [float(t) / 65535 for t in thr.tolist()],
                     "scales": scales, "flip": flip, "test_mode": mode,
                     "sources": [os.path.abspath(j) for j in jsons], "ignored_share": total_ign,
                     "align": None if weights is None else {
                         "json": os.path.abspath(resolve_json(args.align, args.data_root)),
                         "weights": {CLASSES[c] if c < len(CLASSES) else str(c): round(float(w), 5)
                                     for c, w in enumerate(weights.tolist())}},
                     "stable_ckpts": [os.path.abspath(c) for c in args.stable_ckpts or []] or None,
                     "stable_share": args.stable_share if earlier else None,
                     "stability": {ds.image_ids[k]: round(v, 5) for k, v in sorted(stable.items())} or None,
                     "ignored_share_per_class": share},
            "images": [rec for _, rec in entries],
            "categories": [{"id": i, "name": n} for i, n in enumerate(CLASSES) if i > 0],
        }
        atomic_write_text(os.path.join(out, "pseudo.json"), json.dumps(doc) + "\n")
        print(f"labelled {len(entries)} images with {len(teachers)} teacher(s), {len(scales) * (1 + flip)} views, "
              f"{rule}: {100 * total_ign:.1f}% of pixels ignored")
        print("kept share by predicted class: " + "  ".join(
            f"{k} {100 * (1 - v):.1f}%" for k, v in share.items() if v is not None))
        if earlier:
            print(f"stable-image selection: {len(entries)} of {len(stable)} images listed (stability "
                  f"{min(stable[e[0]] for e in entries):.3f} and up, over {len(earlier)} earlier checkpoint(s))")
        print(f"wrote {os.path.join(out, 'pseudo.json')}")
        report_skips(skipped, "they have no pseudo-label")
    D.cleanup(info)
    return {"ignored_share": total_ign, "per_class": share}


def teacher_views(loader, teachers, scales, flip, amp, channels_last, mode, compile, dev, bar):
    """Every image of the loader through the teachers' TTA, one at a time at its own size: yields (dataset index,
    image id, image (1, 3, h, w) uint8 on dev, accumulator, None), or (index, id, None, None, error) for an image a
    loader worker could not read (--skip-invalid). Advances and closes bar."""
    for batch in loader:
        img_b = batch["image"].to(dev, non_blocking=True)  # (B, 3, H, W) uint8, padded to the largest
        sizes = batch.get("sizes") or [tuple(img_b.shape[-2:])] * img_b.shape[0]
        errors = batch.get("error") or [None] * len(sizes)
        for j, (h, w) in enumerate(sizes):
            index, iid = batch["index"][j], batch["image_id"][j]
            if errors[j]:
                yield index, iid, None, None, errors[j]
                continue
            img = img_b[j:j + 1, :, :h, :w]  # (1, 3, h, w)
            yield index, iid, img, tta_accumulate(teachers, img, scales, flip, amp, channels_last, compile=compile,
                                                        **mode), None
        bar.update(len(sizes))
    bar.close()


def alignment(args, ds, loader, teachers, scales, flip, amp, channels_last, mode, C, info, dev) -> torch.Tensor:
    """--align: (C,) distribution-alignment weights from the labelled pixels of args.align and a first pass of the
    teachers over ds (every rank its shard, summed)."""
    try:
        labelled = CocoSegDataset(args.data_root, resolve_json(args.align, args.data_root), verify_images=False)
    except DataError as e:
        sys.exit(f"error: --align: {e}")
    if not labelled.has_labels:
        sys.exit(f"error: --align {args.align}: no annotations (give the teacher's labelled train.json)")
    prior = torch.from_numpy(class_pixel_counts(labelled, C).sum(0))  # (C,) labelled pixels per class
    prob_sum = torch.zeros(C, dtype=torch.float64)
    bar = ImageProgress(len(ds), "pseudo-label: align (pass 1 of 2)", info)
    for _, _, _, acc, error in teacher_views(loader, teachers, scales, flip, amp, channels_last, mode, args.compile,
                                             dev, bar):
        if not error:  # skipped images are counted by the labelling pass
            prob_sum += acc.probs(inplace=True)[0].sum((1, 2)).double().cpu()  # (C,)
    if info.enabled:  # every rank's shard (objects: a CPU tensor cannot go through NCCL)
        prob_sum = sum(D.gather(prob_sum, info))
    weights = alignment_weights(prior, prob_sum)
    if info.is_main:
        print("distribution alignment (labelled share / predicted share): " + "  ".join(
            f"{CLASSES[c] if c < len(CLASSES) else c} {float(weights[c]):.2f}" for c in range(C)))
    return weights


if __name__ == "__main__":
    with cli_errors():
        main(get_args_parser().parse_args())
