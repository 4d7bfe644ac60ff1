"""Fault-injection hooks for the chaos harness (bench/chaos.py): inert unless TRASHSEG_CHAOS_DIR is set.

With TRASHSEG_CHAOS_DIR=DIR, each process touches DIR/KIND.PID.N when it reaches a point of interest, so the harness
can send its signal at a known moment rather than a guessed one:

    step   a training step has finished (train.py, every rank)
    val    inside validation, after the first batch (train.py, every rank; eval DataLoader workers alive)
    save   inside a checkpoint write: the temp file is written and fsync'ed, not yet renamed (engine.checkpoint)
    saving, saved   a checkpoint write begins / is durable (renamed, folder fsync'ed): more of the first than of
           the second at a fault means a write was in flight
    cleanup  a bare restart of a run killed before its first checkpoint is deleting that run's files: one is gone
           (engine.run.claim; args.json goes last)

    exit   the process is about to exit with a code (train.py: DIR/exit.CODE.PID.N), so every rank's code is seen

At `val`, `save` and `cleanup` the process then sleeps TRASHSEG_CHAOS_PAUSE seconds (default 0), which widens those windows
enough for a signal to land inside them. Nothing else changes: no RNG is drawn, so runs stay bitwise comparable.
"""
from __future__ import annotations

import itertools
import os
import time

DIR = os.environ.get("TRASHSEG_CHAOS_DIR", "")
# A resume broken on purpose, to show that the harness reports it (tests only; needs TRASHSEG_CHAOS_DIR too):
#   data   the data position restored one global batch back (the weights then differ)
#   older  a bare --resume takes the oldest readable checkpoint, not the newest (lost work, bitwise still equal)
BREAK = os.environ.get("TRASHSEG_CHAOS_BREAK", "") if DIR else ""
PAUSE = float(os.environ.get("TRASHSEG_CHAOS_PAUSE", "0") or 0)
_seq = itertools.count()
HOLD = ("val", "save", "cleanup")  # the points held open PAUSE seconds


def point(kind: str) -> None:
    """Mark that this process reached `kind`; hold there PAUSE seconds at val, save and cleanup."""
    if not DIR:
        return
    with open(os.path.join(DIR, f"{kind}.{os.getpid()}.{next(_seq)}"), "w"):
        pass
    if kind in HOLD and PAUSE > 0:
        time.sleep(PAUSE)


def exit_code(code: int) -> None:
    """Record the code this process is about to exit with (inert without TRASHSEG_CHAOS_DIR)."""
    if DIR:
        with open(os.path.join(DIR, f"exit.{code}.{os.getpid()}.{next(_seq)}"), "w"):
            pass
