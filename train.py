"""Train a UperNet segmentor on a COCO data root; one process or DDP under torchrun, resumable bit for bit.

    make train                                   # demo data, small model, 2-core CPU, prints val mIoU
    python train.py --model upernet_convnext_tiny --data-root /data --init convnext_t.pt --out runs/cnx_t
    torchrun --nproc_per_node 8 train.py --model upernet_swin_large_w12 --data-root /data --amp bf16 --out runs/swl
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 train.py ...   # multi-node
    python train.py ... --resume                  # continue runs/x/last.pt exactly
    python train.py ... --train-json train.json runs/pl1/pseudo.json       # train + pseudo-labels
    python train.py ... --balance                 # rare classes (README "Rare classes"; --class-weight, --ohem, --loss)
    python train.py ... --unlabelled-json extra.json    # semi-supervised (README "Semi-supervised training")

Defaults are SPEC §4's recipe for the chosen backbone (models.recipe); every augmentation knob is an --aug-* flag.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from typing import Iterator

from engine.stop import install as install_sigterm, requested as stop_requested  # before the slow imports

if __name__ == "__main__":
    install_sigterm()  # engine/stop.py: SIGTERM recorded from here on, acted on after the step it lands in

import torch

import models
from models import fetch
from data import NUM_CLASSES
from data.coco import DataError, train_val_sets
from data.loader import build_eval_loader, build_train_loader
from data.transforms import TRAIN_DEFAULTS, add_aug_args, build_transform
from engine import chaos
from engine import dist as D
from engine import imbalance
from engine import run as R
from engine import semi
from engine.cli import cli_errors
from engine.evaluate import autocast, evaluate
from engine.predict import Predictor, add_mode_args, mode_kwargs
from engine.log import StepMeter, plot_curves
from engine.schedule import lr_factor
from engine.syncbn import convert_sync_batchnorm


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("trashseg train", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("data")
    g.add_argument("--data-root", default="demo_data")
    g.add_argument("--train-json", nargs="+", default=None,
                   help="one or more COCO files (relative to --data-root unless they exist as given; default "
                        "train.json); with --fold, extra sources added to the fold's (e.g. pseudo-labels)")
    g.add_argument("--val-json", default=None, help="default val.json (with --fold, the fold's); '' skips validation")
    g.add_argument("--fold", type=int, default=None,
                   help="train on FOLDS_DIR/train_fold{K}.json (+ any --train-json), validate on val_fold{K}.json")
    g.add_argument("--folds-dir", default=None, help="where data.split wrote the folds (default DATA_ROOT/folds)")
    g.add_argument("--skip-invalid", action="store_true", help="skip (count and list) bad images/annotations")
    g.add_argument("--workers", type=int, default=4)
    g.add_argument("--crop-size", type=int, default=512)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="upernet_convnext_tiny", choices=models.MODELS)
    g.add_argument("--num-classes", type=int, default=NUM_CLASSES)
    g.add_argument("--init", default=None, help="converted checkpoint (python -m models.convert) to start from, or "
                   "a published name, downloaded and converted once (python -m models.fetch --list)")
    g.add_argument("--drop-path", type=float, default=None, help="default: the recipe's")
    g.add_argument("--dropout", type=float, default=None, help="heads' Dropout2d p (default: the model's 0.1)")
    g = p.add_argument_group("schedule (defaults: models.recipe(MODEL))")
    g.add_argument("--iters", type=int, default=20000)
    g.add_argument("--batch-size", type=int, default=2, help="per process")
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=None)
    g.add_argument("--layer-decay", type=float, default=None)
    g.add_argument("--warmup-iters", type=int, default=None)
    g.add_argument("--schedule", default="poly", choices=["poly", "linear", "cosine"])
    g.add_argument("--clip-grad", type=float, default=0.0, help="max grad norm; 0 = off")
    g.add_argument("--aux-weight", type=float, default=0.4)
    g = p.add_argument_group("speed")
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"],
                   help="auto: bf16 (training and validation) on CUDA and on a CPU with native bf16 (avx512_bf16, "
                        "AMX), fp32 elsewhere; resolved once, recorded in args.json, kept on --resume")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (validation: with the fused metric)")
    g.add_argument("--grad-checkpointing", action="store_true", help="trade compute for memory (large backbones)")
    g.add_argument("--device", default="auto")
    g = p.add_argument_group("run")
    g.add_argument("--out", default="runs/exp")
    g.add_argument("--resume", nargs="?", const="auto", default=None,
                   help="a checkpoint, or OUT/last.pt if bare (bare and no OUT/last.pt yet: start the run, so one "
                        "command serves the first start and every restart of a pre-emptible job)")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds a previous run, deleting its checkpoints and log")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--stop-after", type=int, default=0,
                   help="save and exit after this many iterations of this invocation (time-sliced jobs)")
    g.add_argument("--eval-interval", type=int, default=2000)
    add_mode_args(g, prefix="val-")  # validation's test mode: --val-mode slide --val-crop-size --val-stride
    g.add_argument("--ckpt-interval", type=int, default=2000)
    g.add_argument("--keep-ckpts", type=int, default=3, help="periodic iter_N.pt files kept")
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs every --log-interval instead)")
    add_aug_args(p)  # --aug-*: every knob of the train preset
    imbalance.add_args(p)
    semi.add_args(p)
    return p


resolve_args = R.resolve_args  # tests and tools call train.resolve_args


def set_up(args: argparse.Namespace) -> R.Run:
    """Resolve the settings, join the process group, and make sure --out may be written."""
    args = R.resolve_args(args)
    info = D.init(args.device)
    run = R.Run(args, info, print if info.is_main else (lambda *a, **k: None))
    for note in R.pick_resume(run):
        run.log(f"--resume: {note}")
    kept = R.settle_precision(args, info, run.resume_src)
    if kept:
        run.log(kept)
    try:
        run.val_mode = mode_kwargs(args, "val-")
    except ValueError as e:
        sys.exit(f"error: {e}")
    if args.batch_size * info.world_size < 2:
        # The PPM's 1×1 pooling branch leaves one value per channel for its BatchNorm, which then cannot train
        # (torch's "Expected more than 1 value per channel"); SyncBN over several processes counts them all.
        sys.exit("error: --batch-size 1 in a single process: the UperNet head's BatchNorm (PPM 1x1 pooling) needs "
                 "at least 2 images per step; use --batch-size >= 2 (and --grad-accum for memory), or torchrun")
    R.claim(run)
    return run


def build_data(run: R.Run) -> None:
    """The training and validation sets (bad input: one line, exit 2) and the training transform."""
    args = run.args
    try:
        run.train_set, run.val_set = train_val_sets(args.data_root, args.train_json, args.val_json,
                                                    args.skip_invalid, run.log)
        if semi.enabled(args):  # the second pool: pseudo-labelled or unlabelled images (README "Semi-supervised")
            semi.build_pool(run)
    except DataError as e:
        sys.exit(f"error: {e}")
    # Loss terms, class weights, OHEM and rare-class sampling (README "Rare classes"): plain CE by default.
    run.criterion = imbalance.build_criterion(args, run.train_set, run.log).to(run.info.device)
    run.transform = build_transform("train", crop_size=args.crop_size,
                                    **{k: getattr(args, "aug_" + k) for k in TRAIN_DEFAULTS})


def build_model_and_optimizer(run: R.Run) -> None:
    """Model (optionally --init), SyncBN and DDP when distributed, AdamW over the layer-decay groups, GradScaler."""
    args, info, dev = run.args, run.info, run.info.device
    torch.manual_seed(args.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    model = models.build_model(args.model, args.num_classes, drop_path_rate=args.drop_path).to(dev)
    if args.dropout is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.p = args.dropout
    if args.init:  # a checkpoint path, or a published name (models.fetch): bad input exits 2 with one line
        path = fetch.resolve_init(args.init, args.model, args.num_classes)
        n = models.load_init(model, path, args.init, args.num_classes)
        run.log(f"init: loaded {n} tensors from {path}")
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if info.enabled:
        model = convert_sync_batchnorm(model, dev)  # heads' BN sees the global batch
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = models.param_groups(model, weight_decay=args.weight_decay, layer_decay=args.layer_decay)
    # fused: one kernel over all parameters, on CUDA and on the CPU (demo model: 2.0 ms per step against 8.1 ms for
    # the default per-parameter loop, 4% of a make-train step); deterministic, so resume stays bitwise exact.
    run.opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), fused=True)
    run.scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")
    run.raw = model
    run.teacher = semi.EMATeacher(model, args.ema_momentum) if args.unlabelled_json else None
    if info.enabled:
        model = D.wrap_ddp(model, dev)
    run.model = model
    run.fwd = torch.compile(model) if args.compile else model


def build_loader_and_seed(run: R.Run, state: dict | None) -> Iterator[dict]:
    """The training batches from the run's data position; then every RNG from the checkpoint (or the seed)."""
    args, info = run.args, run.info
    # The data stream is a function of (seed, sample position): resume re-enters it at the next unseen sample.
    batch, start, pool_start = semi.batch_and_start(run)  # with a pool, a share of each batch is its
    data_iter = build_train_loader(run.train_set, run.transform, batch_size=batch, seed=args.seed,
                                   workers=args.workers, rank=info.rank, world_size=info.world_size,
                                   start_sample=start,
                                   sample_weights=imbalance.sample_weights(args, run.train_set, run.log))
    run.pool_iter = semi.pool_loader(run, build_train_loader, pool_start)
    R.restore_rng(run, state)
    return data_iter


def validate(run: R.Run, it: int) -> float:
    """mIoU on the validation set, logged by rank 0 (metrics, curves, per-class IoU); NaN without validation."""
    args, info = run.args, run.info
    if run.val_set is None:
        return math.nan
    vl = build_eval_loader(run.val_set, batch_size=1, workers=min(args.workers, 2), rank=info.rank,
                           world_size=info.world_size)
    if chaos.DIR:
        vl = _marked(vl)
    # Predictor: whole or slide (--val-mode), and val images of any size (small ones padded for the backbone).
    # It wraps the unwrapped model (weights are equal on every rank): DDP's first forward after a training step
    # broadcasts buffers, a collective that a rank with no validation images (fewer images than processes) would
    # never join.
    # --compile: forward + fused confusion matrix as one graph, in whole mode (the slide loop stays eager).
    res = evaluate(Predictor(run.raw, **run.val_mode), vl, args.num_classes, info.device, info,
                   amp=args.val_amp, channels_last=args.channels_last,
                   normalize=run.raw.normalize, compile=args.compile and run.val_mode["mode"] == "whole")
    rec = {"iter": it, "miou": res["miou"], "acc": res["acc"], "macc": res["macc"],
           "iou": [None if math.isnan(v) else round(v, 5) for v in res["iou"].tolist()],
           "gt_pixels": res["cm"].sum(1).tolist()}  # class frequency: the report sorts rare classes first
    if info.is_main:
        run.metrics.write(rec)
        plot_curves(run.metrics.read(), os.path.join(args.out, "curves.png"))
        per = " ".join(f"{v:.3f}" if v is not None else "n/a" for v in rec["iou"])
        run.log(f"\n[val @ {it}] mIoU {res['miou']:.4f}  acc {res['acc']:.4f}  macc {res['macc']:.4f}  IoU: {per}")
        run.log("  IoU, rarest class first (share of val pixels): " + imbalance.iou_line(rec["iou"], rec["gt_pixels"]))
    return res["miou"]


def _marked(loader):
    """Validation batches with the fault-injection mark after the first one (engine/chaos.py)."""
    for i, batch in enumerate(loader):
        yield batch
        if i == 0:
            chaos.point("val")


def train_step(run: R.Run, it: int, data_iter: Iterator[dict]) -> tuple[float, float, float]:
    """One optimiser step over --grad-accum micro-batches; (main loss, aux loss, time spent waiting for data).
    A non-finite loss on any rank stops every rank (exit 3) without saving."""
    args, info, dev, model, scaler, opt = run.args, run.info, run.info.device, run.model, run.scaler, run.opt
    f = lr_factor(it, args.iters, args.warmup_iters, args.schedule)
    for g in opt.param_groups:
        g["lr"] = args.lr * f * g.get("lr_scale", 1.0)
    loss_sum = aux_sum = wait = 0.0
    for micro in range(args.grad_accum):
        t0 = time.perf_counter()
        batch = next(data_iter)
        pool = next(run.pool_iter) if run.pool_iter is not None else None
        wait += time.perf_counter() - t0
        img = batch["image"].to(dev, non_blocking=True)  # (B, 3, H, W) uint8
        target = batch["mask"].to(dev, non_blocking=True).long()  # (B, H, W)
        x = run.raw.normalize(img)
        if pool is not None:  # strong views after the labelled images; targets: pseudo-labels or the teacher's
            pool = {k: v.to(dev, non_blocking=True) for k, v in pool.items() if k != "sizes"}
            xs, pool_t, count, _, w = semi.pool_batch(pool, run.teacher, run.raw.normalize, args.semi_threshold,
                                                      args.semi_confidence)
            x, pool = torch.cat([x, xs]), (pool_t, count, w)  # (B, 3, H, W)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        sync_ctx = model.no_sync() if (info.enabled and micro < args.grad_accum - 1) else contextlib.nullcontext()
        with sync_ctx:
            with autocast(dev, args.amp):
                logits, aux = run.fwd(x)  # (B, C, H, W) each, at input size
                loss_main, loss_aux = semi.losses(run.criterion, logits, aux, target, pool, args.semi_weight)
                loss = (loss_main + args.aux_weight * loss_aux) / args.grad_accum
            scaler.scale(loss).backward()
        loss_sum += loss_main.item() / args.grad_accum
        aux_sum += loss_aux.item() / args.grad_accum
    bad = not (math.isfinite(loss_sum) and math.isfinite(aux_sum))
    if D.any_flag(bad, info):
        print(f"error: non-finite loss ({loss_sum}) at iteration {it}; stopped without saving, "
              f"last good checkpoint: {os.path.join(args.out, 'last.pt')}", file=sys.stderr)
        D.cleanup(info)
        sys.exit(3)
    if args.clip_grad > 0:
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(run.raw.parameters(), args.clip_grad)
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=not info.enabled)  # under DDP the gradients are its buckets (D.wrap_ddp)
    if run.teacher is not None:
        run.teacher.update(run.raw)
    return loss_sum, aux_sum, wait


def validate_and_save(run: R.Run, done: int, due: bool | None = None) -> bool:
    """After iteration `done`: validate on --eval-interval (or when `due` says so: a validation a stop skipped),
    then write in one go every checkpoint due (best.pt for a new best, last.pt and a kept iter_N.pt on
    --ckpt-interval; best.pt and last.pt at the end of the schedule). Whether last.pt was written."""
    args = run.args
    names = []
    if due if due is not None else (done % args.eval_interval == 0 or done == args.iters):
        run.miou = validate(run, done)
        if run.miou > run.best:
            run.best = run.miou
            names.append("best.pt")
        run.fwd.train()
    if done == args.iters and run.val_set is None:
        # Without validation nothing is "best": the final model is, so that best.pt (what make submit, pseudo and
        # ensemble read) exists. Published before last.pt: a kill between the two resumes from the previous
        # last.pt and writes both again, while a run found complete (last.pt at --iters) already has its best.pt.
        names.append("best.pt")
    if due is None and (done % args.ckpt_interval == 0 or done == args.iters):
        names.append("last.pt")
        if done % args.ckpt_interval == 0 and args.keep_ckpts > 0 and done != args.iters:
            names.append(f"iter_{done}.pt")
    if names:
        # A periodic write goes on in the background while training continues; best.pt and the end's are written
        # before the loop goes on (what make submit and a run found complete read).
        R.save(run, names, done, background=done != args.iters and "best.pt" not in names)
    return "last.pt" in names


def stop_code(run: R.Run, done: int) -> int:
    """Whether every rank goes on (0) or stops after iteration `done`, agreed in one all-reduce: 1 --stop-after,
    2 SIGTERM (on any rank), 3 rank 0's lease on --out was taken over by another job."""
    args = run.args
    sliced = args.stop_after > 0 and done - run.start_iter >= args.stop_after
    lost = run.lease is not None and run.lease.lost is not None
    return D.max_int(3 if lost else 2 if stop_requested() else 1 if sliced else 0, run.info)


def stop(run: R.Run, done: int, code: int, write: bool, pending_val: bool = False) -> None:
    """Leave the loop after iteration `done` on every rank: one last.pt write (unless it already holds `done`),
    nothing else, so the stop fits a scheduler's grace period; then exit 143 (SIGTERM) or 75 (--stop-after), or 2
    without saving when another job holds --out."""
    args, info = run.args, run.info
    last = os.path.join(args.out, "last.pt")
    if code == 3:
        if info.is_main:
            print(f"error: {args.out}: its lease was taken over by {run.lease.lost}; stopped without saving so that "
                  f"one job writes the folder (last checkpoint: {last})", file=sys.stderr)
        D.cleanup(info)
        sys.exit(2)
    if write:
        R.save(run, "last.pt", done, pending_val=pending_val)  # after a background write in flight, if any
    R.wait_saves(run)
    why = f"--stop-after {args.stop_after}" if code == 1 else "SIGTERM"
    run.log(f"{why}: saved {last} at iteration {done}" + (" (its validation runs first on resume)" if pending_val
                                                          else "") + "; continue with --resume")
    if run.lease is not None:
        run.lease.release()
    D.cleanup(info)
    code = R.EXIT_SLICED if code == 1 else R.EXIT_STOPPED
    chaos.exit_code(code)
    sys.exit(code)


def train(run: R.Run, data_iter: Iterator[dict]) -> None:
    """The loop: steps from the resumed iteration to --iters, logging, validating and saving on their intervals.
    A stop (SIGTERM on any rank, --stop-after) is all-reduced after every step, so all ranks stop after the same
    one; it skips that step's validation (recorded as pending in last.pt, run first on resume) and its periodic
    writes, writes last.pt once and exits non-zero (stop()). A stop seen after the last step just ends the run."""
    args, info = run.args, run.info
    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.iters, initial=run.start_iter, dynamic_ncols=True, desc="train", file=sys.stdout)

    def leave(done: int, code: int, write: bool, pending_val: bool = False) -> None:
        if bar:
            bar.close()
        stop(run, done, code, write, pending_val)

    if run.pending_val:
        # The validation a stop skipped, with the RNG state it would have met, so the run stays bitwise exact;
        # its record replaces any the stopped run wrote for this iteration.
        if info.is_main:
            run.metrics.drop_validation(run.start_iter)
        validate_and_save(run, run.start_iter, due=True)
        code = stop_code(run, run.start_iter)
        if code:
            leave(run.start_iter, code, write=False)  # last.pt still holds this iteration, validation pending
    run.fwd.train()
    meter = StepMeter()
    for it in range(run.start_iter, args.iters):
        try:
            loss_sum, aux_sum, wait = train_step(run, it, data_iter)
        except SystemExit:
            if bar:
                bar.close()
            raise
        done = it + 1
        meter.add(loss_sum, aux_sum, wait)
        if bar:
            bar.update(1)
        if done % args.log_interval == 0 or done == args.iters:
            rec = meter.record(done, run.global_batch * args.grad_accum,
                               args.lr * lr_factor(it, args.iters, args.warmup_iters, args.schedule), info.device)
            if info.is_main:
                run.metrics.write(rec)
                if bar:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", sps=f"{rec['samples_per_s']:.1f}")
                else:
                    run.log(f"iter {done}/{args.iters} loss {rec['loss']:.4f} lr {rec['lr']:.2e} "
                            f"{rec['samples_per_s']:.1f} samples/s")
        chaos.point("step")
        if done == args.iters:
            validate_and_save(run, done)  # a stop request on the last step: the run is complete and ends normally
            break
        code = stop_code(run, done)
        if code:
            leave(done, code, write=True, pending_val=run.val_set is not None and done % args.eval_interval == 0)
        val_due = run.val_set is not None and done % args.eval_interval == 0
        wrote_last = validate_and_save(run, done)
        if val_due or wrote_last:  # a signal during that validation or write: stop now, not one step later
            code = stop_code(run, done)
            if code:
                leave(done, code, write=not wrote_last)
    if bar:
        bar.close()
    R.wait_saves(run)
    if run.lease is not None:
        run.lease.release()


def main(args: argparse.Namespace) -> float:
    run = set_up(args)
    build_data(run)
    build_model_and_optimizer(run)
    state = R.load_resume(run)
    data_iter = build_loader_and_seed(run, state)
    del state
    R.start_log(run)
    train(run, data_iter)
    args = run.args
    if run.val_set is not None:
        run.log(f"final val mIoU: {run.miou:.4f} (best {run.best:.4f}) | checkpoints in {args.out}")
    D.cleanup(run.info)
    chaos.exit_code(0)
    return run.miou


if __name__ == "__main__":
    with cli_errors():
        main(get_args_parser().parse_args())
