"""Predict a COCO image list with optional multi-scale flip TTA; write the competition CSV, probabilities, masks.

    make submit EXP=runs/demo TTA=1                 # best.pt of the run → EXP/submission.csv, validated
    python infer.py --ckpt runs/x/best.pt --data-root /data --json test.json --tta --out runs/x/submission.csv
    python infer.py --ckpt runs/x/best.pt --data-root /data --json val.json --tta --eval      # single vs TTA mIoU
    python infer.py ... --save-probs runs/x/probs_test       # for ensemble.py (uint8 per class, 256 px default)
    torchrun --nproc_per_node 8 infer.py --ckpt ... --tta     # images sharded across GPUs, rank 0 writes the CSV

TTA (SPEC §4): scales 256/384/512/640 for 512-px images (ratios 0.5-1.25 of any image's longer side) × flip;
each view's logits are resized to the full image, softmaxed, un-flipped and averaged by csrc's fused streaming
merge, one view alive at a time.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

import models
from csrc import ops
from data.classes import CLASSES
from data.io import output_collisions, output_relpath, resolve_json, write_palette_png
from data.coco import CocoSegDataset, DataError
from data.loader import build_eval_loader
from data.probs import save_probs
from data.submission import (OrderedSubmission, SubmissionError, expected_ids, format_row, to_submission_map,
                             validate)
from engine import dist as D
from engine.cli import ImageProgress, cli_errors, gather_lists, report_skips
from engine.predict import (add_inference_args, apply_inference_layout, apply_winograd, inference_settings, int8_model,
                            tta_accumulate, tta_views)
from models import int8 as int8_head
from models import quant


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("trashseg infer", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--ckpt", required=True, help="a train.py checkpoint (best.pt) or a converted model file")
    p.add_argument("--data-root", default="demo_data")
    p.add_argument("--json", default="test.json", help="relative to --data-root unless it exists as given")
    p.add_argument("--out", default=None, help="submission CSV (default: next to the checkpoint); '' for none")
    add_inference_args(p)  # views, --mode, --batch-size, --workers, --amp, --compile, --winograd,
    # --channels-last, --device
    p.add_argument("--int8", action="store_true",
                   help="CPU: int8 post-training quantization (needs torchao), calibrated on the first --int8-calib "
                        "images of --json and compiled ahead of time for this CPU (minutes), then every view runs it")
    p.add_argument("--int8-calib", type=int, default=32, metavar="N", help="--int8: images to calibrate on")
    p.add_argument("--int8-head", action="store_true",
                   help="CPU: the decode head's 3x3 convolutions (~88%% of UperNet's FLOPs) as oneDNN int8 "
                        "convolutions inside the eager bf16/fp32 model, activations quantized per call (no "
                        "calibration, no compile): the fastest path on an AMX CPU")
    p.add_argument("--save-probs", default=None, metavar="DIR", help="per-image class probabilities (.npz)")
    p.add_argument("--probs-size", type=int, default=256, help="side of saved probabilities; 0 = image size")
    p.add_argument("--probs-dtype", default="uint8", choices=["uint8", "float16"])
    p.add_argument("--save-masks", default=None, metavar="DIR", help="palette PNG label maps at image size")
    p.add_argument("--eval", action="store_true", help="JSON has annotations: mIoU single-scale vs TTA")
    p.add_argument("--skip-invalid", action="store_true",
                   help="skip unreadable/corrupt images and bad records (listed at the end); in the CSV their rows "
                        "are all background (class 0), so the submission stays complete")
    return p


def save_palette_png(folder: str, image_id: str, labels: np.ndarray) -> None:
    write_palette_png(os.path.join(folder, output_relpath(image_id, ".png")), labels.astype(np.uint8))


def report(name: str, res: dict) -> str:
    per = "  ".join(f"{c[:10]} {v:.3f}" for c, v in zip(CLASSES, res["iou"].tolist()) if v == v)
    return f"{name:>12}: mIoU {res['miou']:.4f}  acc {res['acc']:.4f}  macc {res['macc']:.4f}\n{'':>14}{per}"


def main(args: argparse.Namespace) -> dict:
    info = D.init(args.device)
    dev = info.device
    if args.int8 and args.amp == "auto":
        args.amp = "none"  # int8 kernels, with fp32 between them: no autocast
    amp, mode = inference_settings(args, dev)
    if args.int8:
        why = ("the device is not the CPU" if dev.type != "cpu" else f"--amp {amp}: int8 runs without autocast"
               if amp != "none" else "--compile: the int8 program is compiled already" if args.compile else
               "--winograd on: the int8 program has its own convolutions" if args.winograd == "on" else
               "--channels-last: the int8 program picks its own layouts" if args.channels_last == "on" else
               quant.available())
        if why:
            sys.exit(f"error: --int8: {why}")
        args.winograd = "off"
    if args.int8_head:
        why = ("the device is not the CPU" if dev.type != "cpu" else "--int8 quantizes the whole model" if args.int8
               else "--compile: the int8 head runs eagerly" if args.compile else "")
        if why:
            sys.exit(f"error: --int8-head: {why}")
    json_path = resolve_json(args.json, args.data_root)
    out = args.out if args.out is not None else os.path.join(os.path.dirname(os.path.abspath(args.ckpt)),
                                                             "submission.csv")
    try:
        model = models.load_model(args.ckpt, map_location="cpu").to(dev).eval()
    except (FileNotFoundError, ValueError, RuntimeError, KeyError) as e:
        sys.exit(f"error: {args.ckpt}: {e}")
    if args.int8_head:  # before apply_inference_layout: the int8 weights are folded from the fp32 ones
        n = int8_head.use_int8_head(model)
        if D.is_main():
            print(f"int8 head: {n} convolutions of {getattr(model, 'model_name', 'the model')}'s decode head in int8")
    channels_last = apply_inference_layout([model], args, dev, amp)
    apply_winograd([model], args, dev, amp)
    try:
        # Images are checked as the workers decode them (EvalSet), not all up front: a corrupt one is skipped there.
        ds = CocoSegDataset(args.data_root, json_path, skip_invalid=args.skip_invalid, verify_images=False)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if len(ds) == 0:
        sys.exit(f"error: {json_path}: no images to predict")
    if args.eval and not ds.has_labels:
        sys.exit(f"error: --eval needs annotations, and {json_path} has none")
    for folder, ext in ((args.save_probs, ".npz"), (args.save_masks, ".png")):
        clash = output_collisions(ds.image_ids, ext) if folder else None
        if clash:  # one file would silently hold the other image's result
            sys.exit(f"error: {json_path}: images {clash[0]!r} and {clash[1]!r} would share one file in {folder}")
    if args.int8:
        model = int8_model(model, ds, args.int8_calib)
    scales, flip = tta_views(args)
    nviews = len(scales) * (2 if flip else 1)
    C = model.num_classes

    loader = build_eval_loader(ds, batch_size=args.batch_size, workers=args.workers, rank=info.rank,
                               world_size=info.world_size, skip_invalid=args.skip_invalid)
    # Rank r predicts images r, r+W, ...; each writes its rows to a part file, rank 0 interleaves them in order.
    part = None
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)  # every rank writes its part file there
        part = open(f"{out}.part{info.rank}", "w") if info.enabled else OrderedSubmission(out, expected_ids(json_path))
    cm_tta = torch.zeros(C, C, dtype=torch.int64, device=dev)
    cm_single = torch.zeros_like(cm_tta)
    skipped = []  # "image_id: reason" of images a worker could not load (--skip-invalid)
    bar = ImageProgress(len(ds), f"infer ({nviews} view{'s' * (nviews > 1)})", info)
    try:
        for batch in loader:
            img_b = batch["image"].to(dev, non_blocking=True)  # (B, 3, Hmax, Wmax) uint8
            sizes = batch.get("sizes") or [tuple(img_b.shape[-2:])] * img_b.shape[0]
            errors = batch.get("error") or [None] * len(sizes)
            skipped += [e for e in errors if e]
            same = all(s == sizes[0] for s in sizes) and not any(errors)
            # a padded batch of mixed sizes is predicted image by image: padding would change the views
            groups = [slice(0, img_b.shape[0])] if same else \
                [slice(i, i + 1) for i in range(img_b.shape[0]) if not errors[i]]
            for sl in groups:
                h, w = sizes[sl.start]
                img = img_b[sl, :, :h, :w]
                mask = batch["mask"][sl, :h, :w].to(dev) if args.eval else None
                seen_native = []

                def on_view(mi, s, flipped, logits):
                    if args.eval and not flipped and tuple(logits.shape[-2:]) == (h, w) and not seen_native:
                        cm_single.add_(ops.confusion_matrix(logits, mask, C))
                        seen_native.append(True)

                acc = tta_accumulate([model], img, scales, flip, amp, channels_last, on_view=on_view,
                                     compile=args.compile, **mode)
                if args.eval and not seen_native:  # no native-size view among the scales: run one
                    tta_accumulate([model], img, [None], False, amp, channels_last, on_view=on_view,
                                   compile=args.compile, **mode)
                labels, _ = acc.argmax()  # (b, h, w)
                if args.eval:
                    cm_tta.add_(ops.confusion_matrix(labels, mask, C))
                if args.save_probs:
                    probs = acc.probs()  # (b, C, h, w) float32
                    if args.probs_size > 0:
                        probs = F.interpolate(probs, size=(args.probs_size, args.probs_size), mode="bilinear",
                                              align_corners=False)
                labels_np = labels.to(torch.uint8).cpu().numpy()
                for j in range(labels_np.shape[0]):
                    iid = batch["image_id"][sl.start + j]
                    if part is not None:
                        if info.enabled:
                            part.write(format_row(iid, to_submission_map(labels_np[j])))
                        else:
                            part.write(iid, labels_np[j])
                    if args.save_probs:
                        save_probs(args.save_probs, iid, probs[j].cpu().numpy(), (h, w), args.probs_dtype)
                    if args.save_masks:
                        save_palette_png(args.save_masks, iid, labels_np[j])
                del acc
            bar.update(len(sizes))
    except BaseException:
        if isinstance(part, OrderedSubmission):
            part.abort()
        raise
    bar.close()
    skipped = ds.skipped + gather_lists(skipped, info)
    filled = []
    if part is not None:
        if info.enabled:
            part.close()
            D.barrier(info)
            if info.is_main:
                filled = _merge_parts(out, info.world_size, ds.image_ids, expected_ids(json_path))
            D.barrier(info)
        else:
            part.close()
            filled = part.filled
    if info.is_main:
        report_skips(skipped, f"{len(filled)} submission row(s) for them are all background (class 0)" if out
                     else "they have no prediction" + (" and are left out of the metric" if args.eval else ""))
    result = {}
    if args.eval:
        D.all_reduce_sum(cm_tta, info)
        D.all_reduce_sum(cm_single, info)
        result = {"single": ops.miou(cm_single), "tta": ops.miou(cm_tta)}
        if info.is_main:
            print(report("single-scale", result["single"]))
            if nviews > 1:
                print(report(f"TTA x{nviews}", result["tta"]))
    if out and info.is_main:
        try:
            n = validate(out, json_path)
        except SubmissionError as e:
            sys.exit(f"error: the submission written failed validation: {e}")
        print(f"wrote {out}: {n} rows, validated against {json_path}")
    D.cleanup(info)
    return result


def _merge_parts(out: str, world: int, ids: list[str], expected: list[str]) -> list[str]:
    """Interleave rank part files (rank r holds images r, r+W, ... of ``ids``, minus any it skipped) into the CSV in
    the JSON's order, streaming; returns the image_ids that got a background row."""
    parts = [open(f"{out}.part{r}") for r in range(world)]
    head = [p.readline() for p in parts]  # each part's next unread line
    w = OrderedSubmission(out, expected)
    try:
        for i, iid in enumerate(ids):
            r = i % world
            if head[r].partition(",")[0] == iid:  # else rank r skipped this image: OrderedSubmission fills it
                w.write_line(head[r])
                head[r] = parts[r].readline()
        left = [r for r in range(world) if head[r]]
        if left:
            raise RuntimeError(f"rank {left[0]}'s part file has a row out of order: {head[left[0]][:80]!r}")
        w.close()
        return w.filled
    except BaseException:
        w.abort()
        raise
    finally:
        for r, f in enumerate(parts):
            f.close()
            os.unlink(f"{out}.part{r}")


if __name__ == "__main__":
    with cli_errors():
        main(get_args_parser().parse_args())
