"""Which pseudo-label pixels to keep: one global confidence threshold, or class-balanced thresholds (CBST).

    sel = ClassBalancedSelector(num_classes=11, keep=0.5)
    for labels, maxp in teacher_outputs: sel.add(labels, maxp); store (labels, sel.quantise(maxp))
    sel.merge(other_ranks_histograms)                   # DDP: every rank's counts, before thresholds
    thr = sel.thresholds()                              # (C,) quantised confidence threshold per class
    labels[q < thr[labels]] = 255

CBST (Zou et al. 2018; SPEC §4): for each class c, among the pixels the teacher predicts as c over the whole labelled
set, the threshold is the confidence at the top-P quantile, so every class keeps the same share P of its pixels (the
ceil(P · n_c) most confident, more on ties) and a rare class whose confidences are all low is not dropped, as one
global threshold drops it. Confidences are quantised to 16 bits (1/65535) so a set of any size needs one
(C, 65536) histogram, and a 512² image is held as 3 bytes per pixel until the thresholds are known.
"""
from __future__ import annotations

import math

import torch

LEVELS = 65536


def quantise(maxp: torch.Tensor) -> torch.Tensor:
    """Confidence in [0, 1] → int32 level 0..65535 (floor, so a level's pixels are ≥ its lower edge)."""
    return (maxp.float().clamp(0, 1) * (LEVELS - 1)).floor().to(torch.int32)


class ClassBalancedSelector:
    def __init__(self, num_classes: int, keep: float):
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"--keep must be in (0, 1], got {keep}")
        self.C, self.keep = num_classes, float(keep)
        self.hist = torch.zeros(num_classes, LEVELS, dtype=torch.int64)  # (C, L) pixels per class and level

    def add(self, labels: torch.Tensor, q: torch.Tensor) -> None:
        """labels (...) int class ids, q (...) quantised confidences of the same pixels."""
        flat = labels.reshape(-1).long() * LEVELS + q.reshape(-1).long()  # (N,)
        self.hist += torch.bincount(flat, minlength=self.C * LEVELS).view(self.C, LEVELS)

    def merge(self, hists) -> None:
        """Replace the counts by the sum of several (e.g. every rank's) histograms."""
        self.hist = sum(h for h in hists)

    def thresholds(self) -> torch.Tensor:
        """(C,) int64 level per class: keep a pixel predicted as c when its level ≥ thresholds[c].

        thresholds[c] is the level of the ceil(keep · n_c)-th most confident pixel of class c; a class with no
        pixels gets LEVELS (nothing to keep)."""
        n = self.hist.sum(1)  # (C,)
        from_top = self.hist.flip(1).cumsum(1)  # (C, L): pixels at level ≥ L-1-j
        thr = torch.full((self.C,), LEVELS, dtype=torch.int64)
        for c in range(self.C):
            if n[c] == 0:
                continue
            k = max(1, math.ceil(self.keep * int(n[c]) - 1e-9))  # the float product of 0.3 · 10 is 3.0000000000000004
            j = int(torch.searchsorted(from_top[c], torch.tensor(k)))  # first j with from_top ≥ k
            thr[c] = LEVELS - 1 - j
        return thr

    @staticmethod
    def low(labels: torch.Tensor, q: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
        """bool mask of the pixels to ignore: confidence level below their predicted class's threshold."""
        return q.long() < thr[labels.long()]


def stability(final: torch.Tensor, earlier: list[torch.Tensor], num_classes: int) -> float:
    """ST++'s image stability (Yang et al. 2022): the mean, over the teacher's earlier checkpoints, of the mIoU
    between that checkpoint's label map and the final teacher's (classes present in either map). An image whose
    prediction no longer changes late in training is reliable to label first; 1.0 for one that never changed."""
    scores = []
    for e in earlier:
        cm = torch.bincount(final.reshape(-1).long() * num_classes + e.reshape(-1).long(),
                            minlength=num_classes * num_classes).view(num_classes, num_classes).double()
        inter, union = cm.diag(), cm.sum(0) + cm.sum(1) - cm.diag()
        scores.append(float((inter[union > 0] / union[union > 0]).mean()) if bool((union > 0).any()) else 1.0)
    return sum(scores) / len(scores) if scores else 1.0


def stable_subset(scores: dict, share: float) -> set:
    """The keys of the ceil(share · n) most stable images (ties broken by key, so every rank agrees)."""
    ranked = sorted(scores, key=lambda k: (-scores[k], k))
    return set(ranked[:math.ceil(share * len(ranked) - 1e-9)])


def alignment_weights(prior_pixels, prob_sum) -> torch.Tensor:
    """Distribution alignment (ReMixMatch, Berthelot et al. 2020), per class: (C,) float64 weights
    w_c = (labelled share of c) / (teacher's mean probability of c over the images being labelled).

    A teacher trained on few labels under-predicts the classes it has seen least: on the imbalanced label-scarce demo
    its mean probability of Clothing and Metal over the pool is a quarter of their labelled share, so their objects'
    pixels go to common classes and no selection rule (threshold, CBST, hybrid) can give them back. Scaling each
    class's probability by w and renormalising (align) moves the teacher's class distribution over the pool to the
    labelled one, which the pool is assumed to share. A class with no labelled pixels, or none predicted, keeps
    weight 1: absent from 30 labelled images is not absent from the world.
    prior_pixels: (C,) labelled pixels per class; prob_sum: (C,) sum over the pool's pixels of the mean probability."""
    n = torch.as_tensor(prior_pixels, dtype=torch.float64)
    s = torch.as_tensor(prob_sum, dtype=torch.float64)
    if n.shape != s.shape or n.dim() != 1:
        raise ValueError(f"prior {tuple(n.shape)} and probability sums {tuple(s.shape)} must both be (C,)")
    if n.sum() <= 0 or s.sum() <= 0:
        raise ValueError("distribution alignment needs labelled pixels and predicted probabilities")
    prior, model = n / n.sum(), s / s.sum()
    ok = (prior > 0) & (model > 0)
    return torch.where(ok, prior / model.clamp_min(1e-300), torch.ones_like(prior))


def align(probs: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels (B, H, W) int64, max probability (B, H, W) float32) of probs (B, C, H, W) scaled per class by weights
    (C,) and renormalised over the classes."""
    q = probs.float() * weights.to(probs.device, torch.float32).view(1, -1, 1, 1)  # (B, C, H, W)
    q = q / q.sum(1, keepdim=True).clamp_min(1e-30)
    maxp, labels = q.max(1)
    return labels, maxp
