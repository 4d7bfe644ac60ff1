"""Ensemble several models' predictions into one submission: soft (saved probabilities) or hard (CSV majority vote).

    make ensemble RUNS="runs/a runs/b runs/c"       # soft, over each run's probs_test/ (infer.py --save-probs)
    python ensemble.py soft --probs runs/a/probs runs/b/probs --weights 2 1 --data-root /data --json test.json \
        --out runs/ens.csv
    python ensemble.py hard --csv a.csv b.csv c.csv --json /data/test.json --out runs/vote.csv
    python ensemble.py soft ... --json val.json --eval  # each member's mIoU and the ensemble's

Soft: the (weighted) mean of the members' probabilities, then argmax. Hard: per-pixel majority over CSVs joined by
image_id (row order does not matter), ties to the earliest-listed member (list the best model first).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch

from csrc import ops
from data.classes import CLASSES
from data.coco import CocoSegDataset, DataError
from data.io import atomic_write_json, resolve_json
from data.probs import load_probs
from data.submission import SUB_SIZE, SubmissionError, SubmissionWriter, read_submission, validate
from engine.cli import cli_errors


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("trashseg ensemble", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("soft", help="average saved probabilities")
    s.add_argument("--probs", nargs="+", required=True, help="infer.py --save-probs folders")
    s.add_argument("--weights", type=float, nargs="+", default=None)
    h = sub.add_parser("hard", help="per-pixel majority over submission CSVs")
    h.add_argument("--csv", nargs="+", required=True)
    for q in (s, h):
        q.add_argument("--data-root", default="demo_data")
        q.add_argument("--json", default="test.json", help="the image list and order of the output")
        q.add_argument("--out", default="", help="output CSV ('' = none, e.g. with --eval)")
        q.add_argument("--eval", action="store_true", help="score members and ensemble against the JSON's labels")
    return p


def hard_vote(maps: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Per-pixel majority over (H, W) label maps; a tie goes to the class of the earliest member among the tied."""
    m = len(maps)
    stack = np.stack(maps).astype(np.int64)  # (M, H, W)
    counts = np.zeros((num_classes,) + stack.shape[1:], np.int64)  # (C, H, W)
    first = np.full((num_classes,) + stack.shape[1:], m, np.int64)  # earliest member voting for each class
    for k in range(m - 1, -1, -1):
        np.put_along_axis(first, stack[k][None], k, axis=0)
    for k in range(m):
        np.add.at(counts, (stack[k],) + tuple(np.indices(stack.shape[1:])), 1)
    score = counts * (m + 1) + (m - first)  # more votes wins; among equals, the smaller first index
    return score.argmax(0).astype(np.uint8)


def _gt_at(ds: CocoSegDataset, i: int, size: tuple[int, int] | None) -> torch.Tensor:
    mask = ds.load_mask(i)
    if size is not None and mask.shape != size:
        mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    return torch.from_numpy(mask)[None]  # (1, H, W)


def main(args: argparse.Namespace) -> dict:
    json_path = resolve_json(args.json, args.data_root)
    try:
        ds = CocoSegDataset(args.data_root, json_path)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.eval and not ds.has_labels:
        sys.exit(f"error: --eval needs annotations, and {json_path} has none")
    ids = ds.image_ids
    C = len(CLASSES)
    members = args.probs if args.mode == "soft" else args.csv
    cms = [torch.zeros(C, C, dtype=torch.int64) for _ in members]
    cm_ens = torch.zeros(C, C, dtype=torch.int64)
    writer = SubmissionWriter(args.out) if args.out else None
    try:
        if args.mode == "soft":
            w = args.weights or [1.0] * len(members)
            if len(w) != len(members):
                sys.exit(f"error: {len(w)} weights for {len(members)} probability folders")
            wsum = float(sum(w))
            from tqdm import tqdm
            for i, iid in enumerate(tqdm(ids, desc="soft ensemble", file=sys.stdout)):
                acc, shape, size0 = None, None, None
                for k, folder in enumerate(members):
                    try:
                        p, size = load_probs(folder, iid)  # (C, h, w), original (H, W)
                    except (FileNotFoundError, ValueError) as e:
                        sys.exit(f"error: {e}")
                    if shape is None:
                        shape, size0 = p.shape, size
                        if p.shape[0] != C:
                            sys.exit(f"error: {folder}: {iid} has {p.shape[0]} classes, expected {C}")
                    elif p.shape != shape or size != size0:
                        sys.exit(f"error: {folder}: {iid} probabilities are {p.shape} for an image of {size}, "
                                 f"but {members[0]} has {shape} for {size0}")
                    if args.eval:
                        gt = _gt_at(ds, i, p.shape[1:])
                        cms[k] += ops.confusion_matrix(torch.from_numpy(p.argmax(0))[None], gt, C)
                    acc = p * w[k] if acc is None else acc + p * w[k]
                labels = (acc / wsum).argmax(0).astype(np.uint8)  # (h, w)
                if args.eval:
                    cm_ens += ops.confusion_matrix(torch.from_numpy(labels)[None], _gt_at(ds, i, labels.shape), C)
                if writer:
                    writer.write(iid, labels)
        else:
            subs = []
            for path in members:
                try:
                    subs.append(read_submission(path))
                except SubmissionError as e:
                    sys.exit(f"error: {e}")
            for path, sub in zip(members, subs):
                missing = [iid for iid in ids if iid not in sub]
                if missing:
                    sys.exit(f"error: {path}: no row for image_id {missing[0]!r} "
                             f"({len(missing)} of {json_path}'s images missing)")
            for i, iid in enumerate(ids):
                maps = [sub[iid] for sub in subs]
                labels = hard_vote(maps, C)
                if args.eval:
                    gt = _gt_at(ds, i, (SUB_SIZE, SUB_SIZE))
                    for k, m in enumerate(maps):
                        cms[k] += ops.confusion_matrix(torch.from_numpy(m)[None], gt, C)
                    cm_ens += ops.confusion_matrix(torch.from_numpy(labels)[None], gt, C)
                if writer:
                    writer.write(iid, labels)
    except BaseException:
        if writer:
            writer.abort()
        raise
    result = {}
    if writer:
        writer.close()
        n = validate(args.out, json_path)
        print(f"wrote {args.out}: {n} rows, validated against {json_path}")
    if args.eval:
        result = {"members": [ops.miou(c)["miou"] for c in cms], "ensemble": ops.miou(cm_ens)["miou"]}
        for name, v in zip(members, result["members"]):
            print(f"  member {name}: mIoU {v:.4f}")
        print(f"  ensemble ({args.mode}): mIoU {result['ensemble']:.4f}")
        if args.out:
            atomic_write_json(os.path.splitext(args.out)[0] + "_eval.json", result, indent=2)
    return result


if __name__ == "__main__":
    with cli_errors():
        main(get_args_parser().parse_args())
