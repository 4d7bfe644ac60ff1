"""Atomic torch.save and the RNG snapshot that makes --resume bitwise exact."""
from __future__ import annotations

import glob
import os
import random
import re
import shutil
import tempfile
from typing import Any

import numpy as np
import torch

from data.io import publish
from engine import chaos


def atomic_save(obj: Any, path: str | list[str]) -> None:
    """Serialise `obj` once to a temp file in the same folder, fsync, then publish it under each path in order
    (hard links, a copy where the filesystem has none) and fsync the folder: a kill mid-save leaves the previous
    files intact, and a published name survives a power loss once this returns. One write for several names keeps
    the stop path within one write (README "Grace period")."""
    paths = [path] if isinstance(path, str) else list(path)
    folder = os.path.dirname(os.path.abspath(paths[0]))
    os.makedirs(folder, exist_ok=True)
    chaos.point("saving")  # fault injection: a write has begun (and "saved" below: it is durable)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    extra = []
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        chaos.point("save")  # fault injection (off unless TRASHSEG_CHAOS_DIR): a kill here leaves only the temp file
        for i, p in enumerate(paths[:-1]):
            twin = f"{tmp[:-3]}_{i}.pt"  # matches .tmp_*.pt, so a kill here leaves only what remove_stale_temp takes
            extra.append(twin)
            try:
                os.link(tmp, twin)
            except OSError:  # no hard links (some network and FUSE filesystems): a copy, made durable
                shutil.copyfile(tmp, twin)
                with open(twin, "rb+") as f:
                    os.fsync(f.fileno())
            publish(twin, p)
        publish(tmp, paths[-1])
        fsync_dir(folder)
        chaos.point("saved")
    except BaseException:
        for t in [tmp] + extra:
            if os.path.exists(t):
                os.unlink(t)
        raise


def fsync_dir(folder: str) -> None:
    """Make the renames in `folder` durable: until its directory entry is on disk, a power loss or node crash can
    bring back the previous file, or none."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # filesystems that cannot fsync a directory (some network mounts) make renames durable themselves
        pass
    finally:
        os.close(fd)


def rng_state() -> dict:
    """Every RNG as tensors and plain Python values, so a checkpoint loads with weights_only=True."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Load a training checkpoint with weights_only=True (it holds only tensors and plain values)."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt or truncated file: say which
        raise SystemExit(f"error: checkpoint {path}: cannot be read ({type(e).__name__}: {e})") from None


def peek_iter(path: str) -> int:
    """The iteration a checkpoint was saved at, read without loading its tensors (mmap); raises if unreadable."""
    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return int(state["iter"])


def newest_readable(out_dir: str) -> tuple[str | None, list[str]]:
    """The checkpoint in out_dir saved at the highest iteration among those that read (last.pt, then the kept
    iter_N.pt; last.pt first on a tie), or None; and one note per file that does not read. A truncated or corrupt
    last.pt (a disk fault, a copy cut short) then costs the steps since the newest iter_N.pt, not the run. best.pt
    is not a resume point: one ahead of last.pt (killed between the two at the end) would leave no last.pt."""
    names = ["last.pt"] + sorted((os.path.basename(p) for p in glob.glob(os.path.join(out_dir, "iter_*.pt"))),
                                 key=lambda n: -int(re.findall(r"\d+", n)[0]))
    best, best_it, bad = None, -1, []
    if chaos.BREAK == "older":
        names = names[::-1]
    for n in names:
        p = os.path.join(out_dir, n)
        if not os.path.isfile(p):
            continue
        try:
            it = peek_iter(p)
        except Exception as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            bad.append(f"{p} cannot be read ({type(e).__name__}: {msg})")
            continue
        if it > best_it or (chaos.BREAK == "older" and best is None):
            best, best_it = p, it
        if chaos.BREAK == "older" and best is not None:
            break
    return best, bad


RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "args.json")


def remove_stale_temp(out_dir: str) -> list[str]:
    """Delete the temp files that writes killed mid-way (SIGKILL, node loss) left in out_dir; their names."""
    stale = glob.glob(os.path.join(out_dir, ".tmp_*.pt")) + glob.glob(os.path.join(out_dir, ".*.tmp"))
    for p in stale:
        try:
            os.unlink(p)
        except OSError:  # another writer's rename won the race: nothing to remove
            pass
    return stale


def run_files(out_dir: str) -> list[str]:
    """The files a train.py run leaves in its folder (checkpoints, log, curves, args), args.json last: a cleanup
    deletes in this order, so one killed mid-way leaves the args.json that lets the same command restart."""
    found = [os.path.join(out_dir, f) for f in RUN_FILES if os.path.isfile(os.path.join(out_dir, f))]
    return sorted(found + glob.glob(os.path.join(out_dir, "iter_*.pt")),
                  key=lambda p: (os.path.basename(p) == "args.json", p))


def prune_periodic(out_dir: str, keep: int) -> None:
    """Keep only the newest `keep` iter_N.pt files (last.pt and best.pt are never pruned)."""
    files = sorted(glob.glob(os.path.join(out_dir, "iter_*.pt")),
                   key=lambda p: int(re.findall(r"iter_(\d+)\.pt$", p)[0]))
    for p in files[:-keep] if keep > 0 else files:
        os.unlink(p)


def host_copy(obj):
    """obj with every tensor copied to host memory: what the step after this one changes in place stays as saved."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: host_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(host_copy(v) for v in obj)
    return obj


def save_and_prune(state: dict, paths: list[str], out_dir: str, keep: int, job: dict | None = None) -> None:
    """atomic_save, then prune_periodic when one of `paths` is an iter_N.pt. For a background write (`job`, from
    engine.run.save) an error is kept in job["error"] for the next wait to raise, not lost in the thread."""
    try:
        atomic_save(state, paths)
        if any(os.path.basename(p).startswith("iter_") for p in paths):
            prune_periodic(out_dir, keep)
    except BaseException as e:
        if job is None:
            raise
        job["error"] = e
