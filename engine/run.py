"""The run folder and its resume rules: claiming or restarting --out, the settings a run records and keeps,
loading a resume state, and the one function that writes a checkpoint.

    run = Run(args, info, log)
    pick_resume(run)                    # collective: the newest checkpoint any rank reads, or a fresh start
    settle_precision(args, info, run.resume_src)  # --amp resolved once per run, kept on resume
    claim(run)                          # the lease on --out; a new folder, a restart of this run's files, or exit 2
    state = load_resume(run)            # weights, optimiser, scaler, position; None on a fresh start
    restore_rng(run, state)             # every RNG, once the data loader exists
    save(run, ["last.pt"], it)          # collective: every rank calls it, rank 0 writes once, atomically

Exit codes of train.py: 0 the run is complete; 143 (128 + SIGTERM) stopped by SIGTERM after saving last.pt;
75 (EX_TEMPFAIL) stopped by --stop-after after saving last.pt; 2 a usage or folder error (another live job holds
--out, a folder of another run, an unreadable --resume PATH); 3 a non-finite loss (nothing saved).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import torch

import models
from engine import chaos
from engine import checkpoint as ckpt
from engine import dist as D
from data.io import resolve_json
from engine import imbalance
from engine.evaluate import run_precision
from engine.lease import Lease
from engine.log import MetricsLog, atomic_write_text


EXIT_STOPPED = 128 + signal.SIGTERM  # what a process killed by SIGTERM reports: schedulers count it as pre-empted
EXIT_SLICED = 75  # EX_TEMPFAIL (sysexits.h): --stop-after's planned pause, to be continued with --resume

# Settings that do not change what is trained (where output goes, how often it is written, how it is shown).
_RUN_ONLY = {"amp_request", "resume", "resume_auto", "overwrite", "out", "workers", "no_progress", "log_interval",
             "eval_interval", "ckpt_interval", "keep_ckpts", "stop_after", "device", "skip_invalid"}
# Run settings that still change the trained bits: each validation's DataLoader draws its base seed from the global
# RNG, which drop path and dropout then continue from, so validating at other iterations shifts what follows.
_SHIFTS_RNG = {"eval_interval"}


def changed_settings(saved: dict, now: dict, also: set[str] = frozenset()) -> list[str]:
    """'name old → new' for every training setting (and each run setting in `also`) that differs from the
    checkpoint's recorded arguments."""
    return [f"{k} {saved[k]!r} → {now[k]!r}" for k in sorted(now)
            if k in saved and (k not in _RUN_ONLY or k in also) and saved[k] != now[k]]


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
    resume_src: int | None = None  # the rank whose checkpoint every rank resumes (None: each reads its own)
    writer: bool = False  # this rank writes checkpoints: rank 0, and each node's first rank when --out is node-local
    node_copies: bool = False  # some rank writes a node-local copy: save() sends rank 0's metrics log along
    resume_metrics: list | None = None  # the resumed checkpoint's metrics log, for a rank 0 whose folder has none
    pending_val: bool = False  # a stop skipped the validation due at start_iter: it runs before the next step
    lease: "Lease" = None  # rank 0's hold on --out
    write_job: dict | None = None  # the background checkpoint write in flight (save(background=True))

    @property
    def global_batch(self) -> int:
        return self.args.batch_size * self.info.world_size



def resolve_args(args: argparse.Namespace) -> argparse.Namespace:
    """train.py's settings resolved: recipe defaults, fold files and JSON paths (so args.json records what
    actually ran), --balance's options, and a bare --resume left for pick_resume."""
    rec = models.recipe(args.model)
    if args.warmup_iters is None and args.iters < rec["warmup_iters"] * 5:
        args.warmup_iters = max(args.iters // 10, 1)  # a short run must not spend itself in the recipe's warmup
    for k in ("lr", "weight_decay", "layer_decay", "warmup_iters"):
        if getattr(args, k) is None:
            setattr(args, k, rec[k])
    if args.drop_path is None:
        args.drop_path = rec.get("drop_path_rate", 0.0)
    # --amp as given; set_up resolves it (args.amp: training, args.val_amp: validation) once the device is known
    args.amp_request = args.amp
    if args.fold is not None:
        # The fold's files replace the defaults only: given --train-json files are extra sources (a k-fold run with
        # pseudo-labels), and --val-json '' still turns validation off.
        folds = args.folds_dir or os.path.join(args.data_root, "folds")
        args.train_json = [os.path.join(folds, f"train_fold{args.fold}.json")] + (args.train_json or [])
        if args.val_json is None:
            args.val_json = os.path.join(folds, f"val_fold{args.fold}.json")
    args.train_json = args.train_json or ["train.json"]
    args.val_json = "val.json" if args.val_json is None else args.val_json
    args.train_json = [resolve_json(j, args.data_root) for j in args.train_json]
    args.val_json = resolve_json(args.val_json, args.data_root) if args.val_json else ""
    for k in ("pseudo_json", "unlabelled_json"):
        setattr(args, k, [resolve_json(j, args.data_root) for j in getattr(args, k)] if getattr(args, k) else None)
    args.resume_auto = args.resume == "auto"
    imbalance.resolve(args)  # --balance fills the imbalance options it names; a bad one exits 2
    if args.resume == "auto":
        args.resume = None  # set_up picks the newest readable checkpoint in --out (R.pick_resume)
    return args


def settle_precision(args: argparse.Namespace, info: D.DistInfo, src: int | None = None) -> str | None:
    """Resolve --amp once per run into args.amp (training) and args.val_amp (validation), which args.json and every
    checkpoint record. Under --amp auto a resumed or restarted run keeps the precision it recorded, since a restart
    on a machine with another CPU must not change the run's precision silently; rank 0's resolution holds on every
    rank, since nodes may have different CPUs. The record is read by `src`, the rank whose checkpoint the run resumes
    (pick_resume's run.resume_src; None: every rank's own, rank 0 reads), so a fresh rank-0 node keeps it too.
    Returns the note to log when the recorded precision was kept."""
    train_amp, val_amp = run_precision(args.amp_request, info.device)
    note = None
    src = 0 if src is None else src
    rec = _recorded_args(args) if (args.amp_request == "auto" and info.rank == src) else None
    if src != 0:
        rec = D.broadcast(rec, src, info)
    if args.amp_request == "auto" and info.is_main:
        rec = rec or {}
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



def pick_resume(run: Run) -> list[str]:
    """Which checkpoint the run resumes, agreed by every rank. Each rank looks on its own filesystem: a bare --resume
    for the newest readable checkpoint in --out (last.pt, else an iter_N.pt), --resume PATH for that file. The
    newest any rank can read wins, so a fresh node as rank 0 or node-local --out folders resume the run's latest
    state; when some rank lacks it, run.resume_src names the rank whose copy load_resume sends to all. None on every
    rank: a fresh start. Returns the notes for the log (unreadable files passed over, where the state comes from)."""
    args, info = run.args, run.info
    notes, path, it = [], None, -1
    if args.resume_auto:
        path, notes = ckpt.newest_readable(args.out)
    elif args.resume:
        path = args.resume
        if not info.enabled:
            return []  # one process: load_resume reads it or says why not
    if path:
        try:
            it = ckpt.peek_iter(path)
        except Exception as e:
            notes.append(f"{path} cannot be read ({type(e).__name__})")
            path = None
    found = D.gather((it, socket.gethostname(), path), info)
    top = max(f[0] for f in found)
    if top < 0:
        if args.resume and not args.resume_auto:
            print(f"error: --resume {args.resume}: no process can read it "
                  f"(hosts {', '.join(sorted({f[1] for f in found}))})", file=sys.stderr)
            sys.exit(2)
        args.resume = None
        if notes:
            notes.append("no readable checkpoint: starting afresh")
        return notes
    run.resume_src = next(r for r, f in enumerate(found) if f[0] == top)
    if all(f[0] == top for f in found):
        run.resume_src = None  # every rank reads its own copy
    args.resume = path if it == top else found[run.resume_src][2]
    if run.resume_src is not None:
        behind = [f"rank {r} on {f[1]} (iteration {f[0]})" if f[0] >= 0 else f"rank {r} on {f[1]} (none)"
                  for r, f in enumerate(found) if f[0] != top]
        notes.append(f"resuming iteration {top} from rank {run.resume_src}'s {found[run.resume_src][2]} on "
                     f"{found[run.resume_src][1]}, sent to " + ", ".join(behind))
    elif notes:
        notes.append(f"resuming from {args.resume}")
    return notes


def claim(run: Run) -> None:
    """A new run in a folder that holds one would truncate its log, leave its best.pt standing until the first
    validation and let pruning keep its iter_N.pt while deleting the new run's: continue it, or replace it on
    purpose. Rank 0 looks; every rank stops together."""
    args, info = run.args, run.info
    holder = None
    if info.is_main:
        run.lease = Lease(args.out)
        holder = run.lease.acquire()
    if D.any_flag(holder is not None, info):
        if info.is_main:
            print(f"error: {args.out} is in use by a live job on {holder} ({run.lease.path} renewed within "
                  f"{run.lease.ttl:.0f} s); stop it first, or choose another --out", file=sys.stderr)
        D.cleanup(info)
        sys.exit(2)
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
            chaos.point("cleanup")
        run.log(f"--resume: {args.out} holds no checkpoint yet; restarting this run from scratch"
                if own else f"--overwrite: removed the previous run's {len(old)} file(s) from {args.out}")
    if info.is_main:
        ckpt.remove_stale_temp(args.out)
    # A node whose --out is not rank 0's folder (node-local disks) keeps its own copy of every checkpoint, so that
    # losing any one node, rank 0's included, loses no saved state: its first rank writes, when its folder does not
    # show rank 0's lease.
    token = D.broadcast(run.lease.me["token"] if info.is_main else None, 0, info)
    if info.enabled and info.local_rank == 0 and not info.is_main:
        try:
            with open(os.path.join(args.out, ".lease")) as f:
                run.writer = json.load(f).get("token") != token
        except (OSError, ValueError):
            run.writer = True
        if run.writer:
            os.makedirs(args.out, exist_ok=True)
            ckpt.remove_stale_temp(args.out)
    run.node_copies = D.any_flag(run.writer, info)


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
    info = run.info
    if run.resume_src is None:
        state = ckpt.load(args.resume)
    else:  # some rank cannot see the file: the state travels through the process group
        state = D.broadcast(ckpt.load(args.resume) if info.rank == run.resume_src else None, run.resume_src, info)
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
    run.resume_metrics = state.get("metrics")
    run.pending_val = bool(state.get("pending_val"))
    # The data position is the samples the run has consumed, as recorded: recomputing it from this invocation's
    # batch size / process count / --grad-accum skipped or replayed data when any of them changed on resume.
    run.start_sample = int(state.get("samples_seen", run.start_iter * run.global_batch * args.grad_accum))
    if chaos.BREAK == "data":
        run.start_sample -= run.global_batch * args.grad_accum
    agree_on_state(run)
    run.log(f"resumed {args.resume} at iteration {run.start_iter}"
            + (" (its validation, skipped by the stop, runs first)" if run.pending_val else ""))
    changed = changed_settings(state.get("args") or {}, vars(args), also=_SHIFTS_RNG)
    if changed:  # allowed (a longer schedule, a lower LR), but the run is then not the one that was started
        run.log("note: resumed with changed settings: " + ", ".join(changed)
                + (" (validating at other iterations shifts the random state: not bitwise the uninterrupted run)"
                   if any(c.startswith("eval_interval ") for c in changed) else ""))
    return state


def agree_on_state(run: Run) -> None:
    """Every rank holds the same iteration, data position, weights and optimiser state, or the run stops (exit 2)
    naming the hosts that differ: ranks that each read their own copy of one iteration (node-local --out) would
    otherwise train different replicas, and DDP's all-reduce does not notice."""
    info = run.info
    if not info.enabled:
        return
    tensors = list(run.raw.state_dict().values()) + [v for s in run.opt.state_dict()["state"].values()
                                                     for v in s.values() if torch.is_tensor(v)]
    crc = 0
    for v in tensors:  # the bytes, not a float sum: reductions may round differently on another CPU
        crc = zlib.crc32(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes(), crc)
    mine = (run.start_iter, run.start_sample, crc)
    every = D.gather((mine, socket.gethostname()), info)
    if any(e[0] != every[0][0] for e in every):
        groups = {}
        for r, (m, host) in enumerate(every):
            groups.setdefault(m, []).append(f"rank {r} on {host}")
        print("error: --resume: the ranks loaded different states ("
              + "; ".join(f"{', '.join(v)}: iteration {k[0]}" for k, v in groups.items())
              + "); their checkpoints of one iteration differ: keep the right one on every node (or use one shared "
                "--out) and resume again", file=sys.stderr)
        D.cleanup(info)
        sys.exit(2)


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


def save(run: Run, names: str | list[str], it: int, pending_val: bool = False, background: bool = False) -> None:
    """Every checkpoint of the run goes through here: OUT/name for each of `names` (last.pt, best.pt, iter_N.pt),
    written once (engine.checkpoint.atomic_save), after iteration `it`, with the unwrapped weights, optimiser,
    scaler, every rank's RNG state, the data position, the settings and whether the validation due at `it` is still
    to run. Collective (the RNG states are gathered from every rank); rank 0 writes (and each node-local copy's
    writer), then prunes iter_N.pt files to --keep-ckpts. One write at a time: a write still in flight is waited
    for first. background: the state is copied to host memory and written by a thread while training goes on (a
    periodic checkpoint of a large model takes tens of seconds to write; the copy, a fraction of one)."""
    args, info = run.args, run.info
    names = [names] if isinstance(names, str) else names
    rng_all = [ckpt.rng_state()]
    if info.enabled:
        rng_all = [None] * info.world_size
        torch.distributed.all_gather_object(rng_all, ckpt.rng_state())
    # The metrics log up to `it` travels in the checkpoint, to every node-local copy too: a rank-0 node that
    # replaces a lost one resumes with the whole log, not one that starts at the resumed iteration.
    rows = run.metrics.read() if (info.is_main and run.metrics is not None) else None
    if run.node_copies:
        rows = D.broadcast(rows, 0, info)
    if info.is_main or run.writer:
        wait_saves(run)
        seen = run.start_sample + (it - run.start_iter) * run.global_batch * args.grad_accum
        state = {"model": run.raw.state_dict(), "model_name": args.model, "num_classes": args.num_classes,
                 "optimizer": run.opt.state_dict(), "scaler": run.scaler.state_dict(), "rng": rng_all,
                 "iter": it, "best_miou": run.best, "args": dict(vars(args)), "samples_seen": seen,
                 "teacher": run.teacher.state_dict() if run.teacher is not None else None, "metrics": rows}
        if pending_val:
            state["pending_val"] = True
        paths = [os.path.join(args.out, n) for n in names]
        if not background:
            ckpt.save_and_prune(state, paths, args.out, args.keep_ckpts)
            return
        run.write_job = {"error": None}
        run.write_job["thread"] = threading.Thread(
            target=ckpt.save_and_prune, args=(ckpt.host_copy(state), paths, args.out, args.keep_ckpts, run.write_job),
            name="checkpoint", daemon=False)
        run.write_job["thread"].start()


def wait_saves(run: Run) -> None:
    """Wait for a background checkpoint write to be durable; its failure is raised here."""
    job, run.write_job = run.write_job, None
    if job is not None:
        job["thread"].join()
        if job["error"] is not None:
            raise job["error"]


def write_args(run: Run) -> None:
    """OUT/args.json: the resolved settings of the run (rank 0)."""
    if run.info.is_main:
        os.makedirs(run.args.out, exist_ok=True)
        atomic_write_text(os.path.join(run.args.out, "args.json"), json.dumps(vars(run.args), indent=2) + "\n")


def start_log(run: Run) -> None:
    """args.json, the metrics log (cut back to the resumed iteration) and the run's one-line summary."""
    args, info = run.args, run.info
    write_args(run)
    run.metrics = MetricsLog(os.path.join(args.out, "metrics.jsonl"), resume_iter=run.start_iter,
                             restore=run.resume_metrics if info.is_main else None)
    nparam = sum(p.numel() for p in run.raw.parameters())
    train_set, val_set = run.train_set, run.val_set
    run.log(f"{args.model}: {nparam / 1e6:.1f} M params | {len(train_set)} train, "
            f"{len(val_set) if val_set else 0} val images | {info.world_size} process(es) on {info.device} | "
            f"global batch {run.global_batch * args.grad_accum} | amp {args.amp} (validation {args.val_amp}) | "
            f"{args.iters} iters")
    for name in ("train", "val"):
        s = train_set if name == "train" else val_set
        if s is not None and s.skipped:
            run.log(f"{name}: skipped {len(s.skipped)} invalid item(s) (--skip-invalid); first: {s.skipped[0]}")
