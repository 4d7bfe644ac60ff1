"""The run folder and its resume rules: claiming or restarting --out, the settings a run records and keeps,
loading a resume state, and the one function that writes a checkpoint.

    run = Run(args, info, log)
    settle_precision(args, info)        # --amp resolved once per run, kept on resume
    claim(run)                          # a new folder, a restart of this run's own files, or exit 2
    state = load_resume(run)            # weights, optimiser, scaler, position; None on a fresh start
    restore_rng(run, state)             # every RNG, once the data loader exists
    save(run, "last.pt", it)            # collective: every rank calls it, rank 0 writes atomically
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch

import models
from engine import checkpoint as ckpt
from engine import dist as D
from engine.evaluate import run_precision
from engine.log import MetricsLog, atomic_write_text


# Settings that do not change what is trained (where output goes, how often it is written, how it is shown).
_RUN_ONLY = {"amp_request", "resume", "resume_auto", "overwrite", "out", "workers", "no_progress", "log_interval", "eval_interval",
             "ckpt_interval", "keep_ckpts", "stop_after", "device", "skip_invalid"}


def changed_settings(saved: dict, now: dict) -> list[str]:
    """'name old → new' for every training setting that differs from the checkpoint's recorded arguments."""
    return [f"{k} {saved[k]!r} → {now[k]!r}" for k in sorted(now)
            if k in saved and k not in _RUN_ONLY and saved[k] != now[k]]



@dataclass
class Run:
    """What the steps below share: the settings, the process group, data, model, optimiser and the run's position."""
    args: argparse.Namespace
    info: D.DistInfo
    log: Callable
    train_set: Any = None
    val_set: Any = None
    transform: Any = None
    raw: torch.nn.Module = None  # the unwrapped model: what is saved, and its normalize()
    model: torch.nn.Module = None  # raw, or DDP(raw)
    fwd: torch.nn.Module = None  # model, or torch.compile(model)
    opt: torch.optim.Optimizer = None
    scaler: torch.amp.GradScaler = None
    metrics: MetricsLog = None
    start_iter: int = 0
    start_sample: int = 0  # global samples consumed before start_iter
    best: float = -1.0
    miou: float = math.nan
    val_mode: dict = None  # engine.predict's mode_kwargs for validation (--val-mode whole|slide)
    criterion: Any = None  # engine.imbalance's loss: .main (decode head) and .aux
    pool_set: Any = None  # semi-supervised (engine.semi): the second pool, its transform, batches and EMA teacher
    pool_transform: Any = None
    pool_iter: Any = None
    teacher: Any = None
    aug_knobs: Any = None

    @property
    def global_batch(self) -> int:
        return self.args.batch_size * self.info.world_size



def settle_precision(args: argparse.Namespace, info: D.DistInfo) -> str | None:
    """Resolve --amp once per run into args.amp (training) and args.val_amp (validation), which args.json and every
    checkpoint record. Under --amp auto a resumed or restarted run keeps the precision it recorded, since a restart
    on a machine with another CPU must not change the run's precision silently; rank 0's resolution holds on every
    rank, since nodes may have different CPUs. Returns the note to log when the recorded precision was kept."""
    train_amp, val_amp = run_precision(args.amp_request, info.device)
    note = None
    if args.amp_request == "auto" and info.is_main:
        rec = _recorded_args(args) or {}
        kept = (rec.get("amp"), rec.get("val_amp"))
        if rec.get("amp_request") == "auto" and set(kept) <= {"bf16", "fp16", "none"} \
                and kept != (train_amp, val_amp):
            note = (f"--amp auto: keeping the run's recorded precision (training {kept[0]}, validation {kept[1]}); "
                    f"on this machine a new run would use training {train_amp}, validation {val_amp}")
            train_amp, val_amp = kept
    args.amp, args.val_amp = D.from_main((train_amp, val_amp))
    return note


def _recorded_args(args: argparse.Namespace) -> dict | None:
    """The settings recorded by the run this command continues: the --resume checkpoint's (read without loading
    its tensors), or OUT/args.json for a bare restart of a run killed before its first checkpoint; None for a new
    run or an unreadable record (load_resume reports an unreadable checkpoint)."""
    if args.overwrite:
        return None
    try:
        if args.resume:
            rec = torch.load(args.resume, map_location="cpu", weights_only=True, mmap=True).get("args")
        elif args.resume_auto:
            with open(os.path.join(args.out, "args.json")) as f:
                rec = json.load(f)
        else:
            return None
    except Exception:  # missing, truncated or not a zip checkpoint: nothing to keep
        return None
    return rec if isinstance(rec, dict) else None



def claim(run: Run) -> None:
    """A new run in a folder that holds one would truncate its log, leave its best.pt standing until the first
    validation and let pruning keep its iter_N.pt while deleting the new run's: continue it, or replace it on
    purpose. Rank 0 looks; every rank stops together."""
    args, info = run.args, run.info
    old = ckpt.run_files(args.out) if (info.is_main and not args.resume) else []
    # A bare --resume with nothing saved yet, in a folder that holds only this run's own files (args.json of the
    # same settings; its log; a best.pt written just before the first last.pt): the job was killed before its first
    # checkpoint. It restarts from scratch, so that one command serves a pre-emptible job's first start and every
    # restart.
    diff = _run_differences(args) if (old and args.resume_auto) else None
    own = diff == []
    if D.any_flag(bool(old) and not args.overwrite and not own, info):
        if info.is_main:
            files = ', '.join(os.path.basename(f) for f in old[:6]) + (', ...' if len(old) > 6 else '')
            if args.resume_auto:  # "continue it with --resume" would send the user round in a circle
                why = ("its args.json records other settings: " + "; ".join(diff) if diff
                       else "no readable args.json says it is this run")
                print(f"error: --resume: {args.out} holds no checkpoint, only files of a run ({files}), and {why}. "
                      f"Restart it with the settings it was started with, replace it with --overwrite (make: "
                      f"ARGS=--overwrite), or choose another --out (make: EXP=...).", file=sys.stderr)
            else:
                print(f"error: {args.out} already holds a run ({files}). Continue it with --resume, replace it with "
                      f"--overwrite (make: ARGS=--overwrite), or choose another --out (make: EXP=...).",
                      file=sys.stderr)
        D.cleanup(info)
        sys.exit(2)
    if old:
        for f in old:
            os.unlink(f)
        run.log(f"--resume: {args.out} holds no checkpoint yet; restarting this run from scratch"
                if own else f"--overwrite: removed the previous run's {len(old)} file(s) from {args.out}")
    if info.is_main:
        ckpt.remove_stale_temp(args.out)


def _run_differences(args: argparse.Namespace) -> list[str] | None:
    """How this command's training settings differ from those OUT/args.json records ([]: the same run), or None
    when there is no readable args.json to tell whose files these are (read by rank 0)."""
    try:
        with open(os.path.join(args.out, "args.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict):
        return None
    now = json.loads(json.dumps(vars(args)))  # tuples → lists, as saved
    model = [] if saved.get("model") == args.model else [f"model {saved.get('model')!r} → {args.model!r}"]
    return model + changed_settings(saved, now)



def load_resume(run: Run) -> dict | None:
    """Load --resume's weights, optimiser and scaler state and the run's position; the checkpoint (for its RNG
    state, restored once the data loader exists) or None on a fresh start."""
    args = run.args
    if not args.resume:
        return None
    state = ckpt.load(args.resume)
    if state.get("model_name") != args.model:
        sys.exit(f"error: {args.resume} holds {state.get('model_name')}, not --model {args.model}")
    if state.get("num_classes", args.num_classes) != args.num_classes:  # one line, not load_state_dict's traceback
        sys.exit(f"error: {args.resume} has {state['num_classes']} classes, not --num-classes {args.num_classes}")
    run.raw.load_state_dict(state["model"])
    load_optimizer_state(run, state)
    if run.teacher is not None:  # semi-supervised online: the EMA teacher continues where it was
        if state.get("teacher"):
            run.teacher.load_state_dict(state["teacher"])
        else:
            run.teacher.model.load_state_dict(run.raw.state_dict())
            run.log(f"note: {args.resume} holds no EMA teacher; it starts from the resumed weights")
    run.start_iter, run.best = state["iter"], state.get("best_miou", -1.0)
    # The data position is the samples the run has consumed, as recorded: recomputing it from this invocation's
    # batch size / process count / --grad-accum skipped or replayed data when any of them changed on resume.
    run.start_sample = int(state.get("samples_seen", run.start_iter * run.global_batch * args.grad_accum))
    run.log(f"resumed {args.resume} at iteration {run.start_iter}")
    changed = changed_settings(state.get("args") or {}, vars(args))
    if changed:  # allowed (a longer schedule, a lower LR), but the run is then not the one that was started
        run.log("note: resumed with changed settings: " + ", ".join(changed))
    return state


def load_optimizer_state(run: Run, state: dict) -> None:
    """AdamW's moments and step counts from the checkpoint, with this invocation's weight decay and layer decay;
    the GradScaler's state only where both runs use fp16.

    Optimizer.load_state_dict restores each group's saved hyper-parameters too, which would keep the old
    --weight-decay / --layer-decay under a changed one. The groups' parameter layout does not depend on those
    values, so their weight_decay and lr_scale are re-applied from a fresh grouping."""
    args = run.args
    try:
        run.opt.load_state_dict(state["optimizer"])
    except ValueError as e:  # another grouping of parameters (another model variant, frozen parts)
        sys.exit(f"error: {args.resume}: its optimizer state does not fit this model's parameter groups ({e}); "
                 f"start a new run with --init {args.resume} instead")
    fresh = models.param_groups(run.raw, weight_decay=args.weight_decay, layer_decay=args.layer_decay)
    if [(g["name"], len(g["params"])) for g in fresh] != \
            [(g.get("name"), len(g["params"])) for g in run.opt.param_groups]:
        sys.exit(f"error: {args.resume}: its optimizer groups differ from this model's; start a new run with "
                 f"--init {args.resume} instead")
    for g, f in zip(run.opt.param_groups, fresh):
        g["weight_decay"], g["lr_scale"] = f["weight_decay"], f["lr_scale"]
    saved = state.get("scaler") or {}
    if run.scaler.is_enabled() and saved:
        run.scaler.load_state_dict(saved)
    elif run.scaler.is_enabled():
        # A bf16 / fp32 run saves a disabled scaler's empty state, which load_state_dict refuses: --amp fp16 from
        # here starts the loss scale afresh (as any fp16 run does).
        run.log(f"note: {args.resume} has no fp16 loss-scaler state (--amp was not fp16); starting a fresh one")



def restore_rng(run: Run, state: dict | None) -> None:
    """Every RNG (drop path, dropout, augmentation in the main process) from the checkpoint, or from the seed on a
    fresh start; called once the data loader exists, so creating its workers cannot shift it."""
    args, info = run.args, run.info
    if state is None:
        torch.manual_seed(args.seed + info.rank)
        return
    rng = state["rng"]
    if isinstance(rng, list) and len(rng) == info.world_size:
        ckpt.set_rng_state(rng[info.rank])
    elif isinstance(rng, dict):
        ckpt.set_rng_state(rng)
    else:
        # Saved by a different number of processes (a torchrun run resumed in one process, or on fewer GPUs): there
        # is no per-rank state to restore. Weights, optimiser and data position are restored; dropout / drop-path
        # draws restart from the seed.
        run.log(f"note: {args.resume} was saved by {len(rng)} process(es), this run has {info.world_size}: "
                f"random state reseeded (resume is not bitwise exact)")
        torch.manual_seed(args.seed + info.rank + 1000003 * run.start_iter)


def save(run: Run, name: str, it: int) -> None:
    """Every checkpoint of the run goes through here: OUT/name (last.pt, best.pt, iter_N.pt) after iteration `it`,
    with the unwrapped weights, optimiser, scaler, every rank's RNG state, the data position and the settings.
    Collective (the RNG states are gathered from every rank); rank 0 writes atomically, then prunes iter_N.pt files
    to --keep-ckpts."""
    args, info = run.args, run.info
    rng_all = [ckpt.rng_state()]
    if info.enabled:
        rng_all = [None] * info.world_size
        torch.distributed.all_gather_object(rng_all, ckpt.rng_state())
    if info.is_main:
        seen = run.start_sample + (it - run.start_iter) * run.global_batch * args.grad_accum
        ckpt.atomic_save({"model": run.raw.state_dict(), "model_name": args.model, "num_classes": args.num_classes,
                          "optimizer": run.opt.state_dict(), "scaler": run.scaler.state_dict(), "rng": rng_all,
                          "iter": it, "best_miou": run.best, "args": vars(args), "samples_seen": seen,
                          "teacher": run.teacher.state_dict() if run.teacher is not None else None},
                         os.path.join(args.out, name))
        if name.startswith("iter_"):
            ckpt.prune_periodic(args.out, args.keep_ckpts)


def write_args(run: Run) -> None:
    """OUT/args.json: the resolved settings of the run (rank 0)."""
    if run.info.is_main:
        os.makedirs(run.args.out, exist_ok=True)
        atomic_write_text(os.path.join(run.args.out, "args.json"), json.dumps(vars(run.args), indent=2) + "\n")
