"""Train a UperNet segmentor on a COCO data root; one process or DDP under torchrun, resumable bit for bit.

    make train                                   # demo data, small model, 2-core CPU, prints val mIoU
    python train.py --model upernet_convnext_tiny --data-root /data --init convnext_t.pt --out runs/cnx_t
    torchrun --nproc_per_node 8 train.py --model upernet_swin_large_w12 --data-root /data --amp bf16 --out runs/swl
    torchrun --nnodes 2 --node_rank 0 --master_addr HOST --nproc_per_node 8 train.py ...   # multi-node
    python train.py ... --resume                  # continue runs/x/last.pt exactly
    python train.py ... --train-json train.json runs/pl1/pseudo.json       # train + pseudo-labels
    python train.py ... --balance                 # rare classes (README "Rare classes"; --class-weight, --ohem, --loss)

Defaults are SPEC §4's recipe for the chosen backbone (models.recipe); every augmentation knob is an --aug-* flag.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import signal
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

import models
from data import IGNORE_INDEX, NUM_CLASSES
from data.coco import CocoSegDataset, DataError
from data.loader import build_eval_loader, build_train_loader
from data.transforms import TRAIN_DEFAULTS, build_transform
from engine import checkpoint as ckpt
from engine import dist as D
from engine import imbalance
from engine.evaluate import autocast, evaluate
from engine.log import MetricsLog, atomic_write_text, plot_curves
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
    g.add_argument("--init", default=None, help="converted checkpoint (python -m models.convert) to start from")
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
    g.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "none"], help="auto: bf16 on CUDA")
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true")
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
    g.add_argument("--ckpt-interval", type=int, default=2000)
    g.add_argument("--keep-ckpts", type=int, default=3, help="periodic iter_N.pt files kept")
    g.add_argument("--log-interval", type=int, default=10)
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs every --log-interval instead)")
    g = p.add_argument_group("augmentation (train preset)")
    for k, v in TRAIN_DEFAULTS.items():
        flag = "--aug-" + k.replace("_", "-")
        if isinstance(v, bool):
            g.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=v, metavar="BOOL")
        elif isinstance(v, (tuple, list)):
            g.add_argument(flag, type=type(v[0]) if v else float, nargs=len(v) or "*", default=v)
        elif v is None:
            g.add_argument(flag, type=float, default=None)
        else:
            g.add_argument(flag, type=type(v), default=v)
    imbalance.add_args(p)
    return p


def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """Fill recipe defaults, fold files and JSON paths, so args.json records what actually ran."""
    rec = models.recipe(args.model)
    if args.warmup_iters is None and args.iters < rec["warmup_iters"] * 5:
        args.warmup_iters = max(args.iters // 10, 1)  # a short run must not spend itself in the recipe's warmup
    for k in ("lr", "weight_decay", "layer_decay", "warmup_iters"):
        if getattr(args, k) is None:
            setattr(args, k, rec[k])
    if args.drop_path is None:
        args.drop_path = rec.get("drop_path_rate", 0.0)
    if args.amp == "auto":
        # startswith: "--device cuda:1" is CUDA too (was left at fp32)
        args.amp = "bf16" if ((args.device == "auto" or args.device.startswith("cuda")) and torch.cuda.is_available()) \
            else "none"
    if args.fold is not None:
        # The fold's files replace the defaults only: given --train-json files are extra sources (a k-fold run with
        # pseudo-labels), and --val-json '' still turns validation off. (They were dropped without a word.)
        folds = args.folds_dir or os.path.join(args.data_root, "folds")
        args.train_json = [os.path.join(folds, f"train_fold{args.fold}.json")] + (args.train_json or [])
        if args.val_json is None:
            args.val_json = os.path.join(folds, f"val_fold{args.fold}.json")
    args.train_json = args.train_json or ["train.json"]
    args.val_json = "val.json" if args.val_json is None else args.val_json

    def where(j: str) -> str:
        return j if (os.path.isabs(j) or os.path.exists(j)) else os.path.join(args.data_root, j)
    args.train_json = [where(j) for j in args.train_json]
    args.val_json = where(args.val_json) if args.val_json else ""
    imbalance.resolve(args)  # --balance fills the imbalance options it names; a bad one exits 2
    if args.resume == "auto":
        last = os.path.join(args.out, "last.pt")
        args.resume = last if os.path.isfile(last) else None  # nothing saved yet: this is the first start
    return args


def seg_loss(logits: torch.Tensor, target: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the `kept` (non-ignored, clamped to >= 1) pixels: 0 when there are none.

    F.cross_entropy's mean is 0/0 = NaN for a batch whose every pixel is 255 (crops of pseudo-labelled images the
    teacher was unsure about, padding), which stopped the run as a "non-finite loss"; mmseg's loss is 0 there.
    Same value as the mean otherwise, and no host sync.
    """
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum") / kept


# Settings that do not change what is trained (where output goes, how often it is written, how it is shown).
_RUN_ONLY = {"resume", "overwrite", "out", "workers", "no_progress", "log_interval", "eval_interval", "ckpt_interval",
             "keep_ckpts", "stop_after", "device", "skip_invalid"}


def changed_settings(saved: dict, now: dict) -> list[str]:
    """'name old → new' for every training setting that differs from the checkpoint's recorded arguments."""
    return [f"{k} {saved[k]!r} → {now[k]!r}" for k in sorted(now)
            if k in saved and k not in _RUN_ONLY and saved[k] != now[k]]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "module", model)  # DDP
    return getattr(model, "_orig_mod", model)  # torch.compile


def main(args: argparse.Namespace) -> float:
    args = resolve_args(args)
    info = D.init(args.device)
    dev = info.device
    log = print if info.is_main else (lambda *a, **k: None)
    if args.batch_size * info.world_size < 2:
        # The PPM's 1×1 pooling branch leaves one value per channel for its BatchNorm, which then cannot train
        # (torch's "Expected more than 1 value per channel"); SyncBN over several processes counts them all.
        sys.exit("error: --batch-size 1 in a single process: the UperNet head's BatchNorm (PPM 1x1 pooling) needs "
                 "at least 2 images per step; use --batch-size >= 2 (and --grad-accum for memory), or torchrun")

    # A new run in a folder that holds one would truncate its log, leave its best.pt standing until the first
    # validation and let pruning keep its iter_N.pt while deleting the new run's: continue it, or replace it on
    # purpose. Rank 0 looks; every rank stops together.
    old = ckpt.run_files(args.out) if (info.is_main and not args.resume) else []
    if D.any_flag(bool(old) and not args.overwrite, info):
        if info.is_main:
            print(f"error: {args.out} already holds a run ({', '.join(os.path.basename(f) for f in old[:6])}"
                  f"{', ...' if len(old) > 6 else ''}). Continue it with --resume, replace it with --overwrite "
                  f"(make: ARGS=--overwrite), or choose another --out (make: EXP=...).", file=sys.stderr)
        D.cleanup(info)
        sys.exit(2)
    if old:
        for f in old:
            os.unlink(f)
        log(f"--overwrite: removed the previous run's {len(old)} file(s) from {args.out}")

    # ---- data ---------------------------------------------------------------------------------------------------
    try:
        train_set = CocoSegDataset(args.data_root, args.train_json, skip_invalid=args.skip_invalid)
        val_set = CocoSegDataset(args.data_root, args.val_json, skip_invalid=args.skip_invalid) \
            if args.val_json else None
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if not train_set.has_labels:
        sys.exit(f"error: {args.train_json}: training needs annotations (or mask_file) on every image")
    if val_set is not None and not val_set.has_labels:
        sys.exit(f"error: {args.val_json}: validation needs annotations")
    if val_set is not None:
        seen = set(train_set.image_paths())
        both = [p for p in val_set.image_paths() if p in seen]
        if both:  # legitimate for a final run on all data, but then the score is not a held-out one: say so
            log(f"warning: {len(both)} of {len(val_set)} validation images are also training images (e.g. {both[0]}): "
                f"the validation mIoU is not a held-out score")
    # Loss terms, class weights, OHEM and rare-class sampling (README "Rare classes"): plain CE by default.
    criterion = imbalance.build_criterion(args, train_set, log).to(dev)
    aug = {k: getattr(args, "aug_" + k) for k in TRAIN_DEFAULTS}
    transform = build_transform("train", crop_size=args.crop_size, **aug)
    global_batch = args.batch_size * info.world_size

    # ---- model and optimiser ------------------------------------------------------------------------------------
    torch.manual_seed(args.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    model = models.build_model(args.model, args.num_classes, drop_path_rate=args.drop_path).to(dev)
    if args.dropout is not None:
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout2d):
                m.p = args.dropout
    if args.init:
        src = torch.load(args.init, map_location="cpu", weights_only=True)
        state = models._strip_prefixes(src.get("model", src))
        try:
            models.check_state_dict(model, state, what=f"--init {args.init}")
        except ValueError as e:
            sys.exit(f"error: {e}\n(convert foreign or other-class-count checkpoints with python -m models.convert "
                     f"SRC DST --model {args.model} --num-classes {args.num_classes})")
        model.load_state_dict(state)
        log(f"init: loaded {len(state)} tensors from {args.init}")
    if args.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if info.enabled:
        model = convert_sync_batchnorm(model, dev)  # heads' BN sees the global batch
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    groups = models.param_groups(model, weight_decay=args.weight_decay, layer_decay=args.layer_decay)
    # fused: one kernel over all parameters, on CUDA and on the CPU (demo model: 2.0 ms per step against 8.1 ms for
    # the default per-parameter loop, 4% of a make-train step); deterministic, so resume stays bitwise exact.
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), fused=True)
    scaler = torch.amp.GradScaler(dev.type, enabled=args.amp == "fp16")
    raw = model
    if info.enabled:
        model = DDP(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    fwd = torch.compile(model) if args.compile else model

    start_iter, best, start_sample = 0, -1.0, 0
    if args.resume:
        state = ckpt.load(args.resume)
        if state.get("model_name") != args.model:
            sys.exit(f"error: {args.resume} holds {state.get('model_name')}, not --model {args.model}")
        if state.get("num_classes", args.num_classes) != args.num_classes:  # was a load_state_dict traceback
            sys.exit(f"error: {args.resume} has {state['num_classes']} classes, not --num-classes {args.num_classes}")
        raw.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start_iter, best = state["iter"], state.get("best_miou", -1.0)
        # The data position is the samples the run has consumed, as recorded: recomputing it from this invocation's
        # batch size / process count / --grad-accum skipped or replayed data when any of them changed on resume.
        start_sample = int(state.get("samples_seen", start_iter * global_batch * args.grad_accum))
        log(f"resumed {args.resume} at iteration {start_iter}")
        changed = changed_settings(state.get("args") or {}, vars(args))
        if changed:  # allowed (a longer schedule, a lower LR), but the run is then not the one that was started
            log("note: resumed with changed settings: " + ", ".join(changed))

    # The data stream is a function of (seed, sample position): resume re-enters it at the next unseen sample.
    loader = build_train_loader(train_set, transform, batch_size=args.batch_size, seed=args.seed,
                                workers=args.workers, rank=info.rank, world_size=info.world_size,
                                start_sample=start_sample,
                                sample_weights=imbalance.sample_weights(args, train_set, log))
    data_iter = iter(loader)
    # RNG (drop path, dropout) is set after the loader exists, so creating workers cannot shift it.
    if args.resume:
        rng = state["rng"]
        if isinstance(rng, list) and len(rng) == info.world_size:
            ckpt.set_rng_state(rng[info.rank])
        elif isinstance(rng, dict):
            ckpt.set_rng_state(rng)
        else:
            # Saved by a different number of processes (a torchrun run resumed in one process, or on fewer GPUs):
            # there is no per-rank state to restore, and passing the list on crashed with a TypeError. Weights,
            # optimiser and data position are restored; dropout / drop-path draws restart from the seed.
            log(f"note: {args.resume} was saved by {len(rng)} process(es), this run has {info.world_size}: "
                f"random state reseeded (resume is not bitwise exact)")
            torch.manual_seed(args.seed + info.rank + 1000003 * start_iter)
    else:
        torch.manual_seed(args.seed + info.rank)

    if info.is_main:
        os.makedirs(args.out, exist_ok=True)
        atomic_write_text(os.path.join(args.out, "args.json"), json.dumps(vars(args), indent=2) + "\n")
    metrics = MetricsLog(os.path.join(args.out, "metrics.jsonl"), resume_iter=start_iter)
    nparam = sum(p.numel() for p in raw.parameters())
    log(f"{args.model}: {nparam / 1e6:.1f} M params | {len(train_set)} train, "
        f"{len(val_set) if val_set else 0} val images | {info.world_size} process(es) on {dev} | "
        f"global batch {global_batch * args.grad_accum} | amp {args.amp} | {args.iters} iters")
    for name in ("train", "val"):
        s = train_set if name == "train" else val_set
        if s is not None and s.skipped:
            log(f"{name}: skipped {len(s.skipped)} invalid item(s) (--skip-invalid); first: {s.skipped[0]}")

    def save(path: str, it: int) -> None:
        rng_all = [ckpt.rng_state()]
        if info.enabled:
            rng_all = [None] * info.world_size
            torch.distributed.all_gather_object(rng_all, ckpt.rng_state())
        if info.is_main:
            ckpt.atomic_save({"model": raw.state_dict(), "model_name": args.model, "num_classes": args.num_classes,
                              "optimizer": opt.state_dict(), "scaler": scaler.state_dict(), "rng": rng_all,
                              "iter": it, "best_miou": best, "args": vars(args),
                              "samples_seen": start_sample + (it - start_iter) * global_batch * args.grad_accum},
                             path)

    def validate(it: int) -> float:
        nonlocal best
        if val_set is None:
            return math.nan
        vl = build_eval_loader(val_set, batch_size=1, workers=min(args.workers, 2), rank=info.rank,
                               world_size=info.world_size)
        res = evaluate(fwd, vl, args.num_classes, dev, info, amp=args.amp, channels_last=args.channels_last,
                       normalize=raw.normalize)
        rec = {"iter": it, "miou": res["miou"], "acc": res["acc"], "macc": res["macc"],
               "iou": [None if math.isnan(v) else round(v, 5) for v in res["iou"].tolist()],
               "gt_pixels": res["cm"].sum(1).tolist()}  # class frequency: the report sorts rare classes first
        if info.is_main:
            metrics.write(rec)
            plot_curves(metrics.read(), os.path.join(args.out, "curves.png"))
            per = " ".join(f"{v:.3f}" if v is not None else "n/a" for v in rec["iou"])
            log(f"\n[val @ {it}] mIoU {res['miou']:.4f}  acc {res['acc']:.4f}  macc {res['macc']:.4f}  IoU: {per}")
            log("  IoU, rarest class first (share of val pixels): " + imbalance.iou_line(rec["iou"], rec["gt_pixels"]))
        if res["miou"] > best:
            best = res["miou"]
            save(os.path.join(args.out, "best.pt"), it)
        return res["miou"]

    # SIGTERM (pre-emption, scancel, torchrun shutdown): finish the step, save, exit 0.
    stop = {"flag": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__("flag", True))

    bar = None
    if info.is_main and not args.no_progress:
        from tqdm import tqdm
        bar = tqdm(total=args.iters, initial=start_iter, dynamic_ncols=True, desc="train", file=sys.stdout)
    fwd.train()
    t_last, wait_acc, loss_acc, aux_acc, n_acc = time.perf_counter(), 0.0, 0.0, 0.0, 0
    miou = math.nan
    for it in range(start_iter, args.iters):
        f = lr_factor(it, args.iters, args.warmup_iters, args.schedule)
        for g in opt.param_groups:
            g["lr"] = args.lr * f * g.get("lr_scale", 1.0)
        loss_sum = aux_sum = 0.0
        for micro in range(args.grad_accum):
            t0 = time.perf_counter()
            batch = next(data_iter)
            wait_acc += time.perf_counter() - t0
            img = batch["image"].to(dev, non_blocking=True)  # (B, 3, H, W) uint8
            target = batch["mask"].to(dev, non_blocking=True).long()  # (B, H, W)
            x = raw.normalize(img)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            sync_ctx = model.no_sync() if (info.enabled and micro < args.grad_accum - 1) else _null()
            with sync_ctx:
                with autocast(dev, args.amp):
                    logits, aux = fwd(x)  # (B, C, H, W) each, at input size
                    kept = (target != IGNORE_INDEX).sum().clamp(min=1)  # one count for both heads
                    loss_main = criterion.main(logits.float(), target, kept)
                    loss_aux = criterion.aux(aux.float(), target, kept)
                    loss = (loss_main + args.aux_weight * loss_aux) / args.grad_accum
                scaler.scale(loss).backward()
            loss_sum += loss_main.item() / args.grad_accum
            aux_sum += loss_aux.item() / args.grad_accum
        bad = not (math.isfinite(loss_sum) and math.isfinite(aux_sum))
        if D.any_flag(bad, info):
            msg = (f"error: non-finite loss ({loss_sum}) at iteration {it}; stopped without saving, "
                   f"last good checkpoint: {os.path.join(args.out, 'last.pt')}")
            if bar:
                bar.close()
            print(msg, file=sys.stderr)
            D.cleanup(info)
            sys.exit(3)
        if args.clip_grad > 0:
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(raw.parameters(), args.clip_grad)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)

        done = it + 1
        loss_acc, aux_acc, n_acc = loss_acc + loss_sum, aux_acc + aux_sum, n_acc + 1
        if bar:
            bar.update(1)
        if done % args.log_interval == 0 or done == args.iters:
            dt = time.perf_counter() - t_last
            sps = n_acc * global_batch * args.grad_accum / dt
            mem = (torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda"
                   else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
            rec = {"iter": done, "loss": loss_acc / n_acc, "loss_aux": aux_acc / n_acc,
                   "lr": args.lr * f, "samples_per_s": round(sps, 2), "data_wait_s": round(wait_acc / n_acc, 4),
                   "mem_gb": round(mem, 3)}
            if info.is_main:
                metrics.write(rec)
                if bar:
                    bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}", sps=f"{sps:.1f}")
                else:
                    log(f"iter {done}/{args.iters} loss {rec['loss']:.4f} lr {rec['lr']:.2e} {sps:.1f} samples/s")
            t_last, wait_acc, loss_acc, aux_acc, n_acc = time.perf_counter(), 0.0, 0.0, 0.0, 0
        if done % args.eval_interval == 0 or done == args.iters:
            miou = validate(done)
            fwd.train()
        if done % args.ckpt_interval == 0 or done == args.iters:
            save(os.path.join(args.out, "last.pt"), done)
            if done % args.ckpt_interval == 0 and args.keep_ckpts > 0 and done != args.iters:
                save(os.path.join(args.out, f"iter_{done}.pt"), done)  # collective: every rank calls it
                if info.is_main:
                    ckpt.prune_periodic(args.out, args.keep_ckpts)
        sliced = args.stop_after > 0 and done - start_iter >= args.stop_after and done < args.iters
        if D.any_flag(stop["flag"] or sliced, info):
            if done % args.ckpt_interval != 0:
                save(os.path.join(args.out, "last.pt"), done)
            if bar:
                bar.close()
            why = "SIGTERM" if stop["flag"] else f"--stop-after {args.stop_after}"
            log(f"{why}: saved {os.path.join(args.out, 'last.pt')} at iteration {done}; continue with --resume")
            D.cleanup(info)
            sys.exit(0)
    if bar:
        bar.close()
    if val_set is None and start_iter < args.iters:
        # Without validation nothing is "best": the final model is, so that best.pt — what make submit, pseudo and
        # ensemble read — exists (it was never written, e.g. for a final run on train_all.json with --val-json '').
        save(os.path.join(args.out, "best.pt"), args.iters)
    if val_set is not None:
        log(f"final val mIoU: {miou:.4f} (best {best:.4f}) | checkpoints in {args.out}")
    D.cleanup(info)
    return miou


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


if __name__ == "__main__":
    main(get_args_parser().parse_args())
