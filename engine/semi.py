"""Semi-supervised training: a second pool in every batch, offline (pseudo-labelled images, targets from
pseudo_label.py) or online (unlabelled images labelled on the fly by an EMA teacher).

    python train.py ... --pseudo-json runs/pl1/pseudo.json --semi-share 0.5        # offline, strong views
    python train.py ... --unlabelled-json extra.json --semi-share 0.5              # online: EMA teacher

Every batch holds exactly round(batch × share) pool images and the rest labelled ones (two samplers, not a weighted
draw from the union: FixMatch / UniMatch draw equal labelled and unlabelled batches, ST++ repeats the labelled list to
about 1:1). The pool's images are the strong views of their crops (data/semi.py); online, the teacher labels the
weak view of the same crop and pixels below --semi-threshold are ignored (FixMatch / UniMatch: 0.95), or, with
--semi-confidence weight, every pixel keeps the teacher's label and each image's loss is weighted by its share of
pixels above the threshold (DAFormer's quality estimate: a rare class the teacher is unsure of is down-weighted
with its image, not erased pixel by pixel). The teacher is
an exponential moving average of the student (mean teacher), identical on every rank because the students are, and
saved in every checkpoint with the pool's data position, so resume stays exact.
"""
from __future__ import annotations

import argparse
import copy

import torch

from data.classes import IGNORE_INDEX
from data.coco import CocoSegDataset
from data.transforms import TRAIN_DEFAULTS, build_transform
from data.semi import STRONG_DEFAULTS, PoolSet, StrongAug, cutmix_batch


def add_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("semi-supervised (README \"Semi-supervised training\")")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--pseudo-json", nargs="+", default=None,
                     help="offline pool: pseudo-labelled COCO files (pseudo_label.py's pseudo.json), drawn as strong "
                          "views; train.json here makes the fair labels-only control with the same augmentation")
    src.add_argument("--unlabelled-json", nargs="+", default=None,
                     help="online pool: unlabelled COCO image lists, labelled on the fly by an EMA teacher")
    src.add_argument("--labelled-pool", action="store_true",
                     help="the pool is the labelled training set itself (its labels, strong views): the labels-only "
                          "control of a semi-supervised run, with the same augmentation and batch mix")
    g.add_argument("--semi-share", type=float, default=0.5, help="share of every batch drawn from the pool")
    g.add_argument("--semi-weight", type=float, default=1.0, help="weight of the pool's loss")
    g.add_argument("--semi-threshold", type=float, default=0.95,
                   help="online: the teacher's pixels below this confidence are ignored")
    g.add_argument("--semi-confidence", choices=["drop", "weight"], default="drop",
                   help="online: drop the teacher's pixels below --semi-threshold (FixMatch / UniMatch), or keep every "
                        "pixel and weight each image's cross-entropy by its share of pixels above it (DAFormer)")
    g.add_argument("--ema-momentum", type=float, default=0.99,
                   help="online: teacher = m * teacher + (1 - m) * student after every step (ramped up from 0)")
    for k, v in STRONG_DEFAULTS.items():
        g.add_argument(f"--aug-strong-{k}", type=float, default=v, metavar="P",
                       help=f"probability of the pool's strong {k} step (0: off)")


def enabled(args: argparse.Namespace) -> bool:
    return bool(args.pseudo_json or args.unlabelled_json or args.labelled_pool)


def split_batch(args: argparse.Namespace) -> tuple[int, int]:
    """(labelled, pool) images per rank and micro-batch; a bad share exits 2 with one line."""
    if not enabled(args):
        return args.batch_size, 0
    pool = round(args.batch_size * args.semi_share)
    if not 0 < pool < args.batch_size:
        raise SystemExit(f"error: --semi-share {args.semi_share} of --batch-size {args.batch_size} leaves "
                         f"{pool} pool and {args.batch_size - pool} labelled images per batch; each needs at least 1")
    if not 0.0 <= args.ema_momentum < 1.0 or not 0.0 <= args.semi_threshold <= 1.0:
        raise SystemExit("error: --ema-momentum must be in [0, 1) and --semi-threshold in [0, 1]")
    return args.batch_size - pool, pool


class EMATeacher:
    """A frozen copy of the student in eval mode (running BatchNorm statistics, no drop path), updated after every
    optimiser step: parameters and float buffers as m_t * teacher + (1 - m_t) * student, m_t = min(m, (t+1)/(t+10))
    so that the early teacher follows the fast-changing student (Tarvainen & Valpola 2017)."""

    def __init__(self, student: torch.nn.Module, momentum: float):
        self.model = copy.deepcopy(student).eval().requires_grad_(False)
        self.momentum, self.step = momentum, 0

    @torch.no_grad()
    def update(self, student: torch.nn.Module) -> None:
        m = min(self.momentum, (self.step + 1) / (self.step + 10))
        for t, s in zip(self.model.state_dict().values(), student.state_dict().values()):
            if t.dtype.is_floating_point:
                t.mul_(m).add_(s.detach(), alpha=1 - m)
            else:
                t.copy_(s)
        self.step += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.step = int(state["step"])


@torch.no_grad()
def teacher_targets(teacher: torch.nn.Module, weak: torch.Tensor, ignore: torch.Tensor, threshold: float,
                    mode: str = "drop"):
    """The teacher's labels for the weak views (B, 3, H, W), normalised: its argmax, 255 where `ignore` (B, H, W:
    padding, CutOut) and, in "drop" mode, where its softmax confidence is below `threshold`; the share of pixels with
    a label; and each image's quality (B,): the share of its non-ignored pixels whose confidence reaches it."""
    out = teacher(weak)
    logits = out[0] if isinstance(out, tuple) else out  # (B, C, H, W): the decode head's
    conf, label = logits.float().softmax(1).max(1)  # (B, H, W) each
    sure = (conf >= threshold) & ~ignore  # (B, H, W)
    quality = sure.flatten(1).sum(1) / (~ignore).flatten(1).sum(1).clamp(min=1)  # (B,)
    drop = ~sure | ignore if mode == "drop" else ignore
    return label.masked_fill(drop, IGNORE_INDEX), float((~drop).float().mean()), quality


def pool_batch(batch: dict, teacher: EMATeacher | None, normalize, threshold: float, mode: str = "drop"):
    """The pool part of a step: (student input (B, 3, H, W) normalised, targets (B, H, W) int64, the loss's pixel
    count, the share of pixels with a target, per-pixel loss weights (B, H, W) or None). Offline the targets are
    the pseudo-labels and the count is theirs, as for labels; online they are the teacher's labels of the weak
    view (confident ones only in "drop" mode), and the count is every pixel of the images (not padding, not
    CutOut), so that a step with few confident pixels weighs little (UniMatch). In "weight" mode each pixel's
    weight is its image's quality (teacher_targets). CutMix then pastes each sample's box from its neighbour in the
    batch: image, target and weight alike."""
    strong = normalize(batch["strong"])  # (B, 3, H, W) float
    target = batch["mask"]  # (B, H, W) int64: pseudo-labels, or 0 / 255 (valid / ignored) online
    valid = target != IGNORE_INDEX  # (B, H, W)
    weight = None
    if teacher is not None:
        target, _, quality = teacher_targets(teacher.model, normalize(batch["image"]), ~valid, threshold, mode)
        if mode == "weight":
            weight = quality[:, None, None].expand_as(valid).contiguous()  # (B, H, W)
    if weight is None:
        strong, target, valid = cutmix_batch(batch["cutmix"], strong, target, valid)
    else:
        strong, target, valid, weight = cutmix_batch(batch["cutmix"], strong, target, valid, weight)
    count = (valid if teacher is not None else target != IGNORE_INDEX).sum().clamp(min=1)
    return strong, target, count, float((target != IGNORE_INDEX).float().mean()), weight


POOL_SEED = 7919  # the pool's streams (order, augmentation) differ from the labelled images' even for one file


def build_pool(run) -> None:
    """run.pool_set and run.pool_transform from --pseudo-json / --unlabelled-json (bad input: one line, exit 2).
    An unlabelled image that is also a validation image is refused: the teacher would label the very images the
    run is scored on."""
    args = run.args
    files = args.pseudo_json or args.unlabelled_json or args.train_json
    run.pool_set = run.train_set if args.labelled_pool else \
        CocoSegDataset(args.data_root, files, skip_invalid=args.skip_invalid)
    if args.pseudo_json and not run.pool_set.has_labels:
        raise SystemExit(f"error: {', '.join(files)}: --pseudo-json needs labels (pseudo_label.py's pseudo.json); "
                         f"unlabelled images go to --unlabelled-json")
    if run.val_set is not None and not args.labelled_pool:  # train.py warns about labelled overlap itself
        both = sorted(set(run.pool_set.image_paths()) & set(run.val_set.image_paths()))
        if both:
            raise SystemExit(f"error: {', '.join(files)}: {len(both)} image(s) are also validation images "
                             f"({args.val_json}), e.g. {both[0]}; leave them out of the pool")
    knobs = {k: getattr(args, "aug_" + k) for k in TRAIN_DEFAULTS}
    run.pool_transform = build_transform("train", crop_size=args.crop_size, **{**knobs, "copy_paste_p": 0.0})
    nl, npool = split_batch(args)
    kind = "pseudo-labelled" if args.pseudo_json else "unlabelled" if args.unlabelled_json else "labelled"
    run.log(f"semi-supervised: {len(run.pool_set)} {kind} "
            f"images, {npool} of every {args.batch_size} per rank from them (strong views"
            + (f"; EMA teacher m={args.ema_momentum}, threshold {args.semi_threshold}"
               f"{', images weighted by confidence' if args.semi_confidence == 'weight' else ''})"
               if args.unlabelled_json
               else ")"))


def batch_and_start(run) -> tuple[int, int, int]:
    """(labelled batch per rank, the labelled stream's start, the pool stream's start): each stream's global
    position is the global batches consumed times its share of a global batch."""
    args, world = run.args, run.info.world_size
    nl, npool = split_batch(args)
    if not npool:
        return nl, run.start_sample, 0
    steps = run.start_sample // (args.batch_size * world)
    return nl, steps * nl * world, steps * npool * world


def pool_loader(run, build_loader, start: int):
    """The pool's endless batches from its data position (None without a pool)."""
    args, info = run.args, run.info
    if not enabled(args):
        return None
    strong = StrongAug(**{k: getattr(args, "aug_strong_" + k) for k in STRONG_DEFAULTS})
    pool = PoolSet(run.pool_set, run.pool_transform, seed=args.seed + POOL_SEED, strong=strong)
    return build_loader(pool, None, batch_size=split_batch(args)[1], seed=args.seed + POOL_SEED,
                        workers=args.workers, rank=info.rank, world_size=info.world_size, start_sample=start)


def weighted_ce(logits: torch.Tensor, target: torch.Tensor, pixel_weight: torch.Tensor,
                count: torch.Tensor) -> torch.Tensor:
    """sum(pixel_weight x cross-entropy) / count over the pixels whose target is not 255 (DAFormer's weighted loss;
    the class weights and loss terms of --loss apply to the labelled images only)."""
    ce = torch.nn.functional.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")  # (B, H, W)
    return (ce * pixel_weight).sum() / count


def losses(criterion, logits: torch.Tensor, aux: torch.Tensor, target: torch.Tensor, pool=None,
           weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(decode head, auxiliary head) losses of a batch whose first target.shape[0] samples are labelled and the rest,
    if `pool` = (targets, pixel count, per-pixel weights or None) is given, the pool's, weighted by `weight`."""
    n = target.shape[0]
    kept = (target != IGNORE_INDEX).sum().clamp(min=1)  # one count for both heads
    if pool is None:
        return criterion.main(logits.float(), target, kept), criterion.aux(aux.float(), target, kept)
    pt, count, pixel_weight = pool
    if pixel_weight is None:
        pool_main = criterion.main(logits[n:].float(), pt, count)
        pool_aux = criterion.aux(aux[n:].float(), pt, count)
    else:
        pool_main = weighted_ce(logits[n:].float(), pt, pixel_weight, count)
        pool_aux = weighted_ce(aux[n:].float(), pt, pixel_weight, count)
    main = criterion.main(logits[:n].float(), target, kept) + weight * pool_main
    aux_loss = criterion.aux(aux[:n].float(), target, kept) + weight * pool_aux
    return main, aux_loss
