"""Segmentation losses for imbalanced classes: cross-entropy, focal, Dice, Lovász-softmax, class weights, OHEM.

    crit = SegCriterion(terms=[("ce", 1.0), ("lovasz", 0.5)], class_weight=enet_class_weights(pixels),
                        ohem_thresh=0.7, ohem_min_kept=100000)
    loss = crit.main(logits, target, kept) + 0.4 * crit.aux(aux_logits, target, kept)

Semantics (SPEC §4 "Class imbalance"; the formulas are the papers', the code is ours):
- every pixel-wise term (ce, focal) is a sum over the pixels kept by OHEM (all non-ignored pixels without it) divided
  by ``kept``, the number of non-ignored pixels: mmseg's ``avg_non_ignore=True`` mean, and 0 (not NaN) on a batch of
  ignored pixels;
- class weights multiply each pixel's term by its ground-truth class's weight (mmseg ``CrossEntropyLoss(class_weight)``,
  which divides by the pixel count, not by the sum of weights); focal uses them as its alpha;
- OHEM (mmseg ``OHEMPixelSampler(thresh, min_kept)``): a pixel is kept when its ground-truth-class probability is
  below max(thresh, the (min_kept × batch)-th smallest such probability); chosen without gradient;
- Dice and Lovász are set-level losses over all non-ignored pixels of the batch (no OHEM, no class weights);
- the auxiliary head keeps cross-entropy (with the class weights, as mmseg configs set them on both heads), no OHEM.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from data.classes import IGNORE_INDEX

FOCAL_GAMMA = 2.0  # Lin et al. 2017's recommended value
DICE_SMOOTH = 1.0


def parse_loss_spec(items: Sequence[str]) -> list[tuple[str, float]]:
    """['ce:1', 'lovasz:0.5'] → [('ce', 1.0), ('lovasz', 0.5)]; a bare name weighs 1. ValueError names the item."""
    terms: list[tuple[str, float]] = []
    for item in items:
        name, _, w = item.partition(":")
        name = name.strip().lower()
        if name not in LOSSES:
            raise ValueError(f"--loss {item!r}: unknown loss {name!r} (choose from {', '.join(LOSSES)})")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise ValueError(f"--loss {item!r}: weight {w!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"--loss {item!r}: weight must be finite and >= 0")
        if any(n == name for n, _ in terms):
            raise ValueError(f"--loss {item!r}: {name} given twice")
        terms.append((name, weight))
    if not terms or all(w == 0 for _, w in terms):
        raise ValueError("--loss: needs at least one term with a weight > 0")
    return terms


def enet_class_weights(pixel_counts: Sequence[float], c: float = 1.02) -> torch.Tensor:
    """w_k = 1 / ln(c + f_k), f_k = class k's share of the labelled pixels (ENet, Paszke et al. 2016, c = 1.02).

    Bounded (at most 1 / ln 1.02 ≈ 50 for a class that is nearly absent), unlike median-frequency weights whose ratio
    follows the pixel ratio (hundreds here). Scaled so the mean weight per labelled pixel, Σ f_k w_k, is 1: the loss
    keeps plain CE's scale, so the learning rate needs no retuning. Classes with no pixels get the largest weight."""
    n = torch.as_tensor(pixel_counts, dtype=torch.float64)  # (C,)
    if n.sum() <= 0:
        raise ValueError("class weights: the training set has no labelled pixels")
    f = n / n.sum()
    w = 1.0 / torch.log(c + f)
    return (w / (f * w).sum()).float()


def ohem_keep(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int,
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """mmseg OHEMPixelSampler (thresh mode): bool (B, H, W) of the pixels the loss counts.

    Among non-ignored pixels, p = softmax probability of the ground-truth class; threshold = max(thresh, p_sorted[k])
    with k = min(min_kept × B, n_valid − 1) (0-based, ascending); kept = p < threshold. So every pixel the model is
    unsure of is kept, and at least the min_kept × B hardest are (more on ties)."""
    with torch.no_grad():
        valid = target != ignore_index  # (B, H, W)
        keep = torch.zeros_like(valid)
        n = int(valid.sum())
        if n == 0:
            return keep
        prob = logits.softmax(1)  # (B, C, H, W)
        p = prob.gather(1, target.clamp(max=logits.shape[1] - 1).masked_fill(~valid, 0)[:, None])[:, 0]  # (B, H, W)
        pv = p[valid]  # (n,)
        k = min(min_kept * target.shape[0], n - 1)
        kth = torch.kthvalue(pv, k + 1).values  # the (k+1)-th smallest = sorted[k]
        threshold = torch.clamp(kth, min=thresh)
        keep[valid] = pv < threshold
        return keep


def _pixel_ce(logits: torch.Tensor, target: torch.Tensor, weight: Optional[torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, kept: torch.Tensor,
                  weight: Optional[torch.Tensor] = None, pixel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ over counted pixels of w_y · (−log p_y), divided by ``kept`` (non-ignored pixels, clamped ≥ 1)."""
    if weight is None and pixel_mask is None:  # plain CE: a sum / kept, 0 (not NaN) when all is ignored
        return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") / kept
    loss = _pixel_ce(logits, target, weight)  # (B, H, W), 0 at ignored pixels
    if pixel_mask is not None:
        loss = loss * pixel_mask
    return loss.sum() / kept


def focal_loss(logits: torch.Tensor, target: torch.Tensor, kept: torch.Tensor, gamma: float = FOCAL_GAMMA,
               weight: Optional[torch.Tensor] = None, pixel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Σ over counted pixels of α_y · (1 − p_y)^γ · (−log p_y) / ``kept`` (Lin et al. 2017); α = class weights."""
    ce = _pixel_ce(logits, target, None)  # (B, H, W) −log p_y, 0 at ignored pixels
    pt = torch.exp(-ce)
    loss = (1 - pt).pow(gamma) * ce
    if weight is not None:
        loss = loss * weight[target.clamp(max=weight.numel() - 1)] * (target != IGNORE_INDEX)
    if pixel_mask is not None:
        loss = loss * pixel_mask
    return loss.sum() / kept


def _flat_probs(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (N, C) and labels (N,) of the non-ignored pixels of the batch."""
    C = logits.shape[1]
    valid = target != IGNORE_INDEX  # (B, H, W)
    p = logits.softmax(1).permute(0, 2, 3, 1)[valid]  # (N, C); train.py passes float32 logits
    y = target[valid]  # (N,)
    return p, F.one_hot(y, C).to(p.dtype)  # (N, C), (N, C)


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """1 − mean over classes of (2 Σ p·g + s) / (Σ p + Σ g + s), soft Dice over the batch's non-ignored pixels."""
    p, g = _flat_probs(logits, target)  # (N, C) each
    if p.shape[0] == 0:
        return logits.sum() * 0.0
    inter = (p * g).sum(0)  # (C,)
    dice = (2 * inter + smooth) / (p.sum(0) + g.sum(0) + smooth)  # (C,)
    return 1 - dice.mean()


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax (Berman et al. 2018), batch flattened, averaged over the classes present in the target.

    Per class c: errors e_i = |[y_i = c] − p_ic|, sorted descending; the loss is Σ_i e_(i) · g_i, where g is the
    discrete gradient of the Jaccard loss along that order (the Lovász extension of 1 − IoU_c). With hard (one-hot)
    probabilities it equals 1 − IoU_c exactly."""
    p, g = _flat_probs(logits, target)  # (N, C) each
    if p.shape[0] == 0:
        return logits.sum() * 0.0
    err = (g - p).abs()  # (N, C)
    err_s, order = err.sort(0, descending=True)  # (N, C) each, one sort for all classes
    g_s = g.gather(0, order)  # (N, C) ground truth in error order
    gts = g_s.sum(0)  # (C,)
    inter = gts - g_s.cumsum(0)  # (N, C)
    union = gts + (1 - g_s).cumsum(0)  # (N, C), ≥ 1 everywhere
    jac = 1 - inter / union  # (N, C) Jaccard loss of the first i+1 errors
    grad = torch.cat([jac[:1], jac[1:] - jac[:-1]], 0)  # (N, C)
    per_class = (err_s * grad).sum(0)  # (C,)
    present = gts > 0
    return per_class[present].mean()


# The decode head's loss terms: name → term(logits, target, kept, class_weight, pixel_mask). Pixel-wise terms use the
# class weights and the OHEM mask; set-level terms (Dice, Lovász) use neither (module docstring). A new loss is one
# entry here: --loss, parse_loss_spec and SegCriterion read this table, and a name missing from it is an error.
LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "ce": lambda logits, target, kept, weight, mask: cross_entropy(logits, target, kept, weight, mask),
    "focal": lambda logits, target, kept, weight, mask: focal_loss(logits, target, kept, weight=weight,
                                                                   pixel_mask=mask),
    "dice": lambda logits, target, kept, weight, mask: dice_loss(logits, target),
    "lovasz": lambda logits, target, kept, weight, mask: lovasz_softmax(logits, target),
}


class SegCriterion:
    """The decode head's weighted sum of losses (with OHEM and class weights) and the auxiliary head's CE."""

    def __init__(self, terms: Sequence[tuple[str, float]] = (("ce", 1.0),),
                 class_weight: Optional[torch.Tensor] = None, ohem_thresh: Optional[float] = None,
                 ohem_min_kept: int = 100000):
        unknown = [n for n, _ in terms if n not in LOSSES]
        if unknown:
            raise ValueError(f"unknown loss(es) {unknown} (choose from {', '.join(LOSSES)})")
        self.terms = [(n, float(w)) for n, w in terms if w > 0]
        self.class_weight = class_weight
        self.ohem_thresh, self.ohem_min_kept = ohem_thresh, int(ohem_min_kept)

    def to(self, device) -> "SegCriterion":
        if self.class_weight is not None:
            self.class_weight = self.class_weight.to(device)
        return self

    @property
    def plain(self) -> bool:
        return self.terms == [("ce", 1.0)] and self.class_weight is None and self.ohem_thresh is None

    def main(self, logits: torch.Tensor, target: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """logits (B, C, H, W) float, target (B, H, W) int64 with 255 ignored, kept = non-ignored pixel count."""
        if self.plain:  # the default: bit for bit the CE train.py always computed
            return cross_entropy(logits, target, kept)
        mask = None
        if self.ohem_thresh is not None:
            mask = ohem_keep(logits, target, self.ohem_thresh, self.ohem_min_kept).to(logits.dtype)  # (B, H, W)
        total = logits.new_zeros(())
        for name, w in self.terms:
            v = LOSSES[name](logits, target, kept, self.class_weight, mask)
            total = total + (v if w == 1.0 else w * v)
        return total

    def aux(self, logits: torch.Tensor, target: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, kept, self.class_weight)

    def describe(self) -> str:
        parts = [" + ".join(f"{w:g}·{n}" for n, w in self.terms)]
        if self.class_weight is not None:
            parts.append("class weights " + " ".join(f"{v:.2f}" for v in self.class_weight.tolist()))
        if self.ohem_thresh is not None:
            parts.append(f"OHEM thresh {self.ohem_thresh:g} min_kept {self.ohem_min_kept}/image")
        return "; ".join(parts)
