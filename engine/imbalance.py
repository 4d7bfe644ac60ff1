"""train.py's class-imbalance options (README "Rare classes"): flags, the criterion, the sampler weights, the
rare-first IoU line.

    imbalance.add_args(parser); args = imbalance.resolve(args)
    criterion = imbalance.build_criterion(args, train_set, log).to(device)
    weights = imbalance.sample_weights(args, train_set, log)           # None: the plain shuffled stream
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import numpy as np
import torch

from data.classes import CLASSES
from data.rcs import cached_class_pixel_counts, rare_first, rcs_class_probs, rcs_image_weights
from models.losses import LOSSES, SegCriterion, enet_class_weights, parse_loss_spec

# --balance: DAFormer's rare-class sampling at its published temperature, plus Lovász-softmax (an IoU surrogate)
# next to CE. On the imbalanced demo (README "Rare classes") it beat plain CE and every option measured alone, over
# three seeds (mean 0.745 against plain CE's 0.644; lowest class 0.31–0.48 against 0.000).
BALANCE = {"rare_class_sampling": 0.01, "loss": ["ce:1", "lovasz:0.5"], "class_weight": ["none"], "ohem": None}
_DEFAULTS = {"rare_class_sampling": 0.0, "loss": ["ce:1"], "class_weight": ["none"], "ohem": None}


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("class imbalance (README \"Rare classes\")")
    g.add_argument("--class-weight", nargs="+", default=["none"], metavar="W",
                   help="per-class CE weights: none, auto (ENet 1/ln(1.02 + f_c) from the training set's pixel "
                        "shares f_c, scaled to mean 1 per pixel), or one weight per class (W0 .. W10)")
    g.add_argument("--ohem", type=float, default=None, metavar="THRESH",
                   help="mmseg OHEMPixelSampler: count only pixels whose true-class probability < THRESH (0.7 in "
                        "mmseg), and at least --ohem-min-kept per image")
    g.add_argument("--ohem-min-kept", type=int, default=100000, help="per image, as mmseg (default 100000)")
    g.add_argument("--loss", nargs="+", default=["ce:1"], metavar="NAME:W",
                   help=f"decode-head loss, a weighted sum of {', '.join(LOSSES)} (e.g. ce:1 lovasz:0.5); the "
                        "auxiliary head keeps CE")
    g.add_argument("--rare-class-sampling", type=float, default=0.0, metavar="T",
                   help="DAFormer RCS: draw a class with P ∝ exp((1 − f_c)/T) (T = 0.01 in DAFormer), then an image "
                        "holding it; 0 = off (shuffled epochs)")
    g.add_argument("--balance", action="store_true",
                   help="the README's recommended combination for rare classes (--rare-class-sampling 0.01 --loss "
                        "ce:1 lovasz:0.5); options given explicitly win")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """--balance fills each imbalance option still at its default, so args.json records what ran; then the options
    are checked: a bad one is a one-line error, exit 2, before any data is read."""
    if getattr(args, "balance", False):
        for k, v in BALANCE.items():
            if getattr(args, k) == _DEFAULTS[k]:
                setattr(args, k, v)
    try:
        validate(args)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return args


def parse_class_weight(spec: Sequence[str], num_classes: int) -> Optional[str | list[float]]:
    """None, 'auto', or a list of num_classes floats; ValueError with a one-line reason."""
    spec = [s.lower() for s in spec]
    if spec in (["none"], []):
        return None
    if spec == ["auto"]:
        return "auto"
    try:
        w = [float(s) for s in spec]
    except ValueError:
        raise ValueError(f"--class-weight {' '.join(spec)}: expected none, auto or {num_classes} numbers") from None
    if len(w) != num_classes:
        raise ValueError(f"--class-weight: {len(w)} weights for {num_classes} classes")
    if any(not np.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ValueError("--class-weight: weights must be finite, >= 0, not all 0")
    return w


def validate(args: argparse.Namespace) -> None:
    """Raise ValueError for a bad imbalance flag (before any data is read)."""
    parse_loss_spec(args.loss)
    parse_class_weight(args.class_weight, args.num_classes)
    if args.ohem is not None and not 0.0 < args.ohem <= 1.0:
        raise ValueError(f"--ohem {args.ohem}: the threshold is a probability in (0, 1]")
    if args.ohem_min_kept < 0:
        raise ValueError("--ohem-min-kept must be >= 0")
    if args.rare_class_sampling < 0:
        raise ValueError("--rare-class-sampling T must be > 0 (0 = off)")


def build_criterion(args: argparse.Namespace, train_set, log=print) -> SegCriterion:
    cw = parse_class_weight(args.class_weight, args.num_classes)
    weight = None
    if cw == "auto":
        counts = cached_class_pixel_counts(train_set, args.num_classes, log).sum(0)  # (C,)
        weight = enet_class_weights(counts)
    elif cw is not None:
        weight = torch.tensor(cw, dtype=torch.float32)
    crit = SegCriterion(parse_loss_spec(args.loss), weight, args.ohem, args.ohem_min_kept)
    if not crit.plain:
        log("loss: " + crit.describe())
    return crit


def sample_weights(args: argparse.Namespace, train_set, log=print) -> Optional[np.ndarray]:
    if not args.rare_class_sampling:
        return None
    counts = cached_class_pixel_counts(train_set, args.num_classes, log)  # (N, C)
    pc = rcs_class_probs(counts.sum(0), args.rare_class_sampling)
    log(f"rare-class sampling T={args.rare_class_sampling:g}: P(class) " +
        " ".join(f"{_name(c)} {pc[c]:.3f}" for c in np.argsort(-pc) if pc[c] >= 5e-4))
    return rcs_image_weights(counts, args.rare_class_sampling, class_probs=pc)


def _name(c: int) -> str:
    return CLASSES[c] if c < len(CLASSES) else str(c)


def iou_line(iou: Sequence[Optional[float]], gt_pixels: Sequence[float]) -> str:
    """'Battery 0.000 (0.14%) | Clothing ...': per-class IoU, rarest class (by validation pixels) first."""
    total = float(sum(gt_pixels)) or 1.0
    return " | ".join(f"{_name(c)} {'n/a' if iou[c] is None else format(iou[c], '.3f')} "
                      f"({100 * gt_pixels[c] / total:.2f}%)" for c in rare_first(iou, gt_pixels))
