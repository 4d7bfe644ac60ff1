"""Atomic torch.save and the RNG snapshot that makes --resume bitwise exact."""
from __future__ import annotations

import glob
import os
import random
import re
import tempfile
from typing import Any

import numpy as np
import torch

from data.io import publish
from engine import chaos


def atomic_save(obj: Any, path: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename: a kill mid-save leaves the old file intact."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        chaos.point("save")  # fault injection (off unless TRASHSEG_CHAOS_DIR): a kill here leaves only the temp file
        publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    """The files a train.py run leaves in its folder (checkpoints, log, curves, args), sorted; [] for a new folder."""
    found = [os.path.join(out_dir, f) for f in RUN_FILES if os.path.isfile(os.path.join(out_dir, f))]
    return sorted(found + glob.glob(os.path.join(out_dir, "iter_*.pt")))


def prune_periodic(out_dir: str, keep: int) -> None:
    """Keep only the newest `keep` iter_N.pt files (last.pt and best.pt are never pruned)."""
    files = sorted(glob.glob(os.path.join(out_dir, "iter_*.pt")),
                   key=lambda p: int(re.findall(r"iter_(\d+)\.pt$", p)[0]))
    for p in files[:-keep] if keep > 0 else files:
        os.unlink(p)
